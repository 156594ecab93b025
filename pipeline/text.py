r"""The text side of Prompt-to-Prompt: a prompt's words, their token positions, and token maps.

Prompt-to-Prompt (Hertz et al., 2022) edits an image by editing its prompt while re-using the source
prompt's cross-attention maps, so it must know which of the text encoder's token positions belong to
which word, and which position of the source prompt each position of the target prompt stands for.

The authors' code splits prompts on spaces and pairs the pieces with decoded tokens by counting
characters. A "word" such as "house," or "jumping-board" then covers several pre-tokens: naming
"house" finds nothing, word-swap counts change, and the character counting drifts on case, accents
or punctuation, silently mapping words onto the wrong tokens. Here a prompt's words are the
tokenizer's own pre-tokens (CLIP splits the NFC-normalised, whitespace-folded, lower-cased text on
`'s|'t|...|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`): letters runs, single digits, punctuation runs and
English contractions. Their token positions come from the tokenizer's own word ids, so they are
exactly the positions the text encoder sees: "a house, chinese style" has the words
a, house, ",", chinese, style at positions 1, 2, 3, 4, 5 (BOS is at 0), and a word the BPE splits
("hippopotamus" -> hippo potam us) owns all of its positions.

Sequences have L = tokenizer.model_max_length positions (77 for Stable Diffusion 1.x): BOS, at most
L - 2 prompt tokens, then EOS and EOS padding. A word whose tokens do not all fit in the first L - 2
prompt tokens is cut off by the encoder and is not a word of the prompt here; naming it is an error
that says so (WordBeyondWindow), and `prompt_overflow` / `check_change_within_window` let a caller
warn about, or refuse, an edit whose words the encoder would silently drop.

Needs a fast (tokenizers-backed) tokenizer, which every transformers 5 CLIPTokenizer is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from pipeline.errors import ParamError, PromptError, shorten

# Prompts are echoed in messages; a 77-token prompt is a few hundred characters at most, but a
# pasted paragraph must not become a paragraph of error.
PROMPT_LIMIT = 200


class WordBeyondWindow(PromptError):
    """A word that occurs in the prompt only where the text encoder's window has cut it off."""


@dataclass(frozen=True)
class Word:
    """One word (pre-token) of a prompt: its normalised text and its positions in the token sequence."""

    text: str
    token_indices: tuple[int, ...]


def _all_words(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[Word]:
    """Every word of `prompt`, positions counted in the untruncated sequence (BOS at 0)."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("pipeline.text needs a fast (tokenizers-backed) tokenizer for its word ids.")
    encoding = tokenizer(prompt, verbose=False)
    positions: dict[int, list[int]] = {}
    for position, word_id in enumerate(encoding.word_ids()):
        if word_id is not None:
            positions.setdefault(word_id, []).append(position)
    # A pre-token's tokens decode to exactly its normalised text, plus the end-of-word space.
    words = []
    for indices in positions.values():
        ids = [encoding.input_ids[i] for i in indices]
        text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False).strip()
        words.append(Word(text, tuple(indices)))
    return words


def _last_prompt_position(tokenizer: PreTrainedTokenizerBase) -> int:
    """The last position a prompt token can have: L - 2 (BOS at 0, EOS at L - 1 at the latest)."""
    return tokenizer.model_max_length - 2


def _fits(tokenizer: PreTrainedTokenizerBase, words: Sequence[Word]) -> bool:
    return words[-1].token_indices[-1] <= _last_prompt_position(tokenizer)


def _window(tokenizer: PreTrainedTokenizerBase) -> str:
    return f"{tokenizer.model_max_length}-token window"


def _quoted(prompt: str) -> str:
    return f"\"{shorten(prompt, PROMPT_LIMIT)}\""


def _listing(words: Sequence[Word]) -> str:
    """Words for a message; punctuation words are quoted so that ',' is not read as a separator."""
    return ", ".join(w.text if any(c.isalnum() for c in w.text) else f'"{w.text}"' for w in words)


def prompt_words(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[Word]:
    """The words of `prompt` the text encoder sees, in order, each with all of its token positions."""
    return [w for w in _all_words(tokenizer, prompt) if _fits(tokenizer, [w])]


def prompt_overflow(tokenizer: PreTrainedTokenizerBase, prompt: str) -> tuple[str, ...]:
    """The words of `prompt` the encoder's window (L positions with BOS and EOS) cuts off; () if it fits.

    The encoder drops them without a word, so a caller should tell the user (a Notice) rather than
    let an edit that depends on them quietly do nothing.
    """
    return tuple(w.text for w in _all_words(tokenizer, prompt) if not _fits(tokenizer, [w]))


def check_change_within_window(tokenizer: PreTrainedTokenizerBase, source: str, target: str) -> None:
    """Raise PromptError when the prompts differ only in tokens beyond the encoder's window.

    The encoder would then see the same prompt twice and the "edit" would return the reconstruction
    after a full inversion; better to say so before any work.
    """
    length = tokenizer.model_max_length
    seen = [tokenizer(p, truncation=True, max_length=length).input_ids for p in (source, target)]
    full = [tokenizer(p, verbose=False).input_ids for p in (source, target)]
    if seen[0] == seen[1] and full[0] != full[1]:
        raise PromptError(
            f"The source and target prompts differ only after the first {length - 2} tokens, beyond the "
            f"text encoder's {_window(tokenizer)}, so the edit would change nothing; shorten the prompts "
            "or move the change forward."
        )


def word_token_indices(tokenizer: PreTrainedTokenizerBase, prompt: str, word_or_phrase: str) -> list[int]:
    """Sorted token positions of every occurrence of a word, or of a phrase (consecutive words).

    `word_or_phrase` is split into words like the prompt, so matching ignores case, accents'
    composition and spacing, and "house," is the phrase house + ",". Raises PromptError when it
    does not occur, or occurs only beyond the encoder's token limit.
    """
    query = [w.text for w in _all_words(tokenizer, word_or_phrase)]
    words = _all_words(tokenizer, prompt)
    if not query:
        raise PromptError(f"{shorten(repr(word_or_phrase))} names no word of the prompt {_quoted(prompt)}.")
    n = len(query)
    hits = [words[i : i + n] for i in range(len(words) - n + 1) if [w.text for w in words[i : i + n]] == query]
    if not hits:
        listing = f"its words: {_listing(words)}" if words else "it has no words"
        raise PromptError(
            f"{shorten(repr(word_or_phrase))} is not a word of the prompt {_quoted(prompt)} "
            f"({shorten(listing, PROMPT_LIMIT)})."
        )
    visible = sorted({i for hit in hits if _fits(tokenizer, hit) for w in hit for i in w.token_indices})
    if not visible:
        raise WordBeyondWindow(
            f"{shorten(repr(word_or_phrase))} lies beyond the {_window(tokenizer)} of the prompt "
            f"{_quoted(prompt)}: the text encoder reads only its first {_last_prompt_position(tokenizer)} "
            "tokens, so the word has no effect; shorten the prompt or move the word forward."
        )
    return visible


def replace_mapper(tokenizer: PreTrainedTokenizerBase, source: str, target: str) -> torch.Tensor:
    """Word-swap map M [L, L] (float32) from source token positions (rows) to target ones (columns).

    Applied as in the reference AttentionReplace: `target_attn = source_attn @ M`, i.e.
    `torch.einsum("bhqs,st->bhqt", source_attn, M)` on cross-attention maps [batch, heads, queries, L].
    The prompts must have the same number of words; word k of the source stands for word k of the
    target. M[0, 0] = 1 (BOS). A word that is the same in both maps its tokens one to one, wherever
    they now are. A changed word of n source tokens and m target tokens gets M[s, t] = 1/m for each
    of its source tokens s and target tokens t: every target token carries the mean of the source
    word's maps times n/m, so the word's total attention is kept. The positions after the last word
    (EOS, padding, and any tokens of a word cut off by the limit) map in order from the source's
    first such position to the target's, the source ones that run past L - 1 all going to L - 1.
    Hence every row sums to 1, and a softmax-normalised source map stays normalised. (The reference
    shares 1/m the same way, but maps a changed word of n = m tokens one to one, and maps every
    position after the last changed word to itself, which is off by m - n when the counts differ.)
    """
    length = tokenizer.model_max_length
    src, tgt = prompt_words(tokenizer, source), prompt_words(tokenizer, target)
    if len(src) != len(tgt):
        raise PromptError(
            f"A word swap needs prompts with the same number of words, but {_quoted(source)} has {len(src)} "
            f"({shorten(_listing(src), PROMPT_LIMIT)}) and {_quoted(target)} has {len(tgt)} "
            f"({shorten(_listing(tgt), PROMPT_LIMIT)})."
        )
    mapper = torch.zeros(length, length)
    mapper[0, 0] = 1.0
    for s, t in zip(src, tgt):
        if s.text == t.text:
            mapper[list(s.token_indices), list(t.token_indices)] = 1.0
        else:
            mapper[torch.tensor(s.token_indices)[:, None], torch.tensor(t.token_indices)] = 1.0 / len(t.token_indices)
    s0 = src[-1].token_indices[-1] + 1 if src else 1
    t0 = tgt[-1].token_indices[-1] + 1 if tgt else 1
    for i in range(s0, length):
        mapper[i, min(t0 + i - s0, length - 1)] += 1.0
    return mapper


def _align(source: Sequence[int], target: Sequence[int]) -> list[int]:
    """For each target token, the index of the source token globally aligned with it, or -1.

    Needleman-Wunsch exactly as the reference's seq_aligner.global_align: match +1, mismatch -1,
    gap 0, so two different tokens are never paired and the alignment is a longest common
    subsequence. Ties are broken as the reference's forward pass records them and its trace back
    follows them from the ends: a new target token first, then dropping a source token, then a
    match. "a photo of a cat" -> "a cat" therefore pairs the target's "a" with the source's FIRST
    "a", and "a cat dog" -> "a dog cat" keeps "dog" (tests/test_text.py checks this against a
    transcription of the reference on random sequences).
    """
    n, m = len(source), len(target)
    score = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diagonal = score[i - 1][j - 1] + (1 if source[i - 1] == target[j - 1] else -1)
            score[i][j] = max(diagonal, score[i - 1][j], score[i][j - 1])
    aligned = [-1] * m
    i, j = n, m
    while j > 0:
        if i == 0 or score[i][j] == score[i][j - 1]:
            j -= 1  # a new target token (the reference's "left", preferred on ties)
        elif score[i][j] == score[i - 1][j]:
            i -= 1  # a source token without a partner ("up")
        else:
            aligned[j - 1] = i - 1  # a match ("diagonal"): a mismatch never ties with a gap of 0
            i, j = i - 1, j - 1
    return aligned


def refine_mapper(tokenizer: PreTrainedTokenizerBase, source: str, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention-refinement map: (mapper [L] int64, alphas [L] float32) for target token positions.

    The reference's seq_aligner.get_mapper, executed: the two token sequences as the encoder sees
    them (BOS, prompt tokens, EOS) are aligned by `_align`. For a target position j of that
    sequence, mapper[j] is the source position of the identical token aligned with it and
    alphas[j] = 1, or mapper[j] = -1 and alphas[j] = 0 when the token is new. BOS and EOS always
    align with BOS and EOS. Every position j after the target's EOS (its padding) reads source
    position j, with alpha 1: the reference's `mapper[len(y):] = len(y) + arange(L - len(y))`. So
    when the prompts have different token counts, a target padding column takes the source's column
    at the same position, which may be one of the source's prompt tokens or its EOS when the source
    is the longer one. The edit applies it as the reference's AttentionRefine does on maps [batch,
    heads, queries, L]: `target_attn = source_attn[..., mapper] * alphas + own_target_attn * (1 - alphas)`;
    the -1 entries gather position L - 1 there, which alphas = 0 then discards.

    One departure: the reference encodes without truncation and fails on a prompt longer than L
    tokens; here both are cut to the encoder's window first, as the encoder sees them.
    """
    length = tokenizer.model_max_length
    x = tokenizer(source, truncation=True, max_length=length).input_ids
    y = tokenizer(target, truncation=True, max_length=length).input_ids
    mapper = torch.arange(length)
    mapper[: len(y)] = torch.tensor(_align(x, y))
    return mapper, (mapper >= 0).float()


def word_weights(tokenizer: PreTrainedTokenizerBase, prompt: str, weights: Mapping[str, float]) -> torch.Tensor:
    """Per-token factors [L] (float32) for attention reweighting: 1, or weights[w] at the tokens of w.

    Keys are words or phrases as for word_token_indices. Raises PromptError for a key that is not in
    the prompt or for two keys giving one token different factors, ParamError for a non-finite factor.
    """
    factors = torch.ones(tokenizer.model_max_length)
    given: dict[int, tuple[str, float]] = {}
    for word, factor in weights.items():
        if not math.isfinite(factor):
            raise ParamError(f"The weight of {shorten(repr(word))} must be a finite number, not {factor}.")
        for i in word_token_indices(tokenizer, prompt, word):
            other, other_factor = given.setdefault(i, (word, factor))
            if other_factor != factor:
                raise PromptError(
                    f"{shorten(repr(word))} and {shorten(repr(other))} share tokens of the prompt "
                    f"{_quoted(prompt)} but have different weights ({factor} and {other_factor})."
                )
            factors[i] = factor
    return factors


def word_mask(tokenizer: PreTrainedTokenizerBase, prompt: str, words: Sequence[str]) -> torch.Tensor:
    """A 0/1 mask [L] (float32) of the token positions of `words` (words or phrases) in `prompt`."""
    if isinstance(words, str):
        raise TypeError(f"word_mask takes a sequence of words, not the string {words!r}.")
    mask = torch.zeros(tokenizer.model_max_length)
    for word in words:
        mask[word_token_indices(tokenizer, prompt, word)] = 1.0
    return mask


def pair_word_masks(tokenizer: PreTrainedTokenizerBase, source: str, target: str, words: Sequence[str]) -> torch.Tensor:
    """Masks [2, L] (float32) of `words` in the source (row 0) and the target (row 1), as for local blend.

    Each word must be in at least one prompt. One found in neither raises PromptError; one found only
    beyond the encoder's window raises WordBeyondWindow, which says so instead of "in neither".
    """
    rows = torch.zeros(2, tokenizer.model_max_length)
    for word in words:
        errors: list[PromptError] = []
        for row, prompt in enumerate((source, target)):
            try:
                rows[row] = torch.maximum(rows[row], word_mask(tokenizer, prompt, [word]))
            except PromptError as error:
                errors.append(error)
        if len(errors) == 2:
            beyond = [e for e in errors if isinstance(e, WordBeyondWindow)]
            if beyond:
                raise beyond[0]
            raise PromptError(
                f"Blend word {shorten(repr(word))} is in neither prompt ({_quoted(source)}, {_quoted(target)})."
            )
    return rows
