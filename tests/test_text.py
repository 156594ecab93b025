"""Words, token positions and Prompt-to-Prompt token maps, against Stable Diffusion's real tokenizer."""

from __future__ import annotations

import random

import pytest
import torch

from pipeline.errors import ParamError, PromptError
from pipeline.text import (
    Word,
    WordBeyondWindow,
    check_change_within_window,
    pair_word_masks,
    prompt_overflow,
    prompt_words,
    _align,
    refine_mapper,
    replace_mapper,
    word_mask,
    word_token_indices,
    word_weights,
)

L = 77
HIPPO = [28398, 45825, 718]  # hippo potam us</w>
WOMBAT = [1087, 6575]  # wom bat</w>


def _ids(tok, prompt):
    return tok(prompt, padding="max_length", max_length=L, truncation=True).input_ids


def reference_align(x: list[int], y: list[int]) -> list[int]:
    """The reference's alignment procedure (google/prompt-to-prompt seq_aligner.global_align and
    get_aligned_sequences), restated independently of pipeline.text: the decision at each cell is
    recorded during the forward pass in the reference's order of preference (gap in the source, i.e.
    a new target token; then gap in the target; then the diagonal), and the trace back follows the
    recorded decisions from the ends. Returns, per target token, its source index or -1."""
    LEFT, UP, DIAGONAL = 1, 2, 3
    score = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    decision = [[UP] * (len(y) + 1) for _ in range(len(x) + 1)]
    decision[0] = [None] + [LEFT] * len(y)
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            left, up = score[i][j - 1], score[i - 1][j]
            diagonal = score[i - 1][j - 1] + (1 if x[i - 1] == y[j - 1] else -1)
            score[i][j] = best = max(left, up, diagonal)
            decision[i][j] = LEFT if best == left else UP if best == up else DIAGONAL
    out, i, j = [], len(x), len(y)
    while decision[i][j] is not None:
        if decision[i][j] == DIAGONAL:
            i, j = i - 1, j - 1
            out.append(i)
        elif decision[i][j] == LEFT:
            j -= 1
            out.append(-1)
        else:
            i -= 1
    return out[::-1]


def reference_get_mapper(x: list[int], y: list[int], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's get_mapper on token ids: aligned positions, then padding j -> len(y) + (j - len(y))."""
    mapper = torch.zeros(length, dtype=torch.int64)
    mapper[: len(y)] = torch.tensor(reference_align(x, y), dtype=torch.int64)
    mapper[len(y):] = len(y) + torch.arange(length - len(y))
    alphas = torch.ones(length)
    alphas[: len(y)] = mapper[: len(y)].ne(-1).float()
    return mapper, alphas


def _attention(seed=0):
    """A softmax-normalised cross-attention map [batch, heads, queries, L]."""
    return torch.randn(2, 3, 5, L, generator=torch.Generator().manual_seed(seed)).softmax(-1)


# -- words and token positions ------------------------------------------------------------------------


def test_words_are_pre_tokens_with_exact_positions(clip_tokenizer):
    words = prompt_words(clip_tokenizer, "A Hippopotamus, swimming")
    assert words == [
        Word("a", (1,)),
        Word("hippopotamus", (2, 3, 4)),
        Word(",", (5,)),
        Word("swimming", (6,)),
    ]
    assert [_ids(clip_tokenizer, "A Hippopotamus, swimming")[i] for i in (2, 3, 4)] == HIPPO


def test_multi_token_word(clip_tokenizer):
    prompt = "a wombat on a hippopotamus"
    assert word_token_indices(clip_tokenizer, prompt, "wombat") == [2, 3]
    assert word_token_indices(clip_tokenizer, prompt, "hippopotamus") == [6, 7, 8]
    ids = _ids(clip_tokenizer, prompt)
    assert ids[2:4] == WOMBAT and ids[6:9] == HIPPO


def test_punctuation_is_its_own_word(clip_tokenizer):
    prompt = "a house, chinese style"
    assert [w.text for w in prompt_words(clip_tokenizer, prompt)] == ["a", "house", ",", "chinese", "style"]
    assert word_token_indices(clip_tokenizer, prompt, "house") == [2]
    assert word_token_indices(clip_tokenizer, prompt, ",") == [3]
    assert word_token_indices(clip_tokenizer, prompt, "style") == [5]
    assert word_token_indices(clip_tokenizer, prompt, "house,") == [2, 3]


def test_hyphenated_word(clip_tokenizer):
    prompt = "a boy on a jumping-board"
    assert [w.text for w in prompt_words(clip_tokenizer, prompt)][-3:] == ["jumping", "-", "board"]
    assert word_token_indices(clip_tokenizer, prompt, "board") == [7]
    assert word_token_indices(clip_tokenizer, prompt, "jumping-board") == [5, 6, 7]


def test_contraction_and_digits(clip_tokenizer):
    words = prompt_words(clip_tokenizer, "don't 42")
    assert [w.text for w in words] == ["don", "'t", "4", "2"]
    assert [w.token_indices for w in words] == [(1,), (2,), (3,), (4,)]


def test_repeated_words_and_phrases(clip_tokenizer):
    prompt = "a cat and a cat, chinese style"
    assert word_token_indices(clip_tokenizer, prompt, "cat") == [2, 5]
    assert word_token_indices(clip_tokenizer, prompt, "a cat") == [1, 2, 4, 5]
    assert word_token_indices(clip_tokenizer, prompt, "chinese style") == [7, 8]
    with pytest.raises(PromptError):
        word_token_indices(clip_tokenizer, prompt, "style chinese")


def test_matching_ignores_case_spacing_and_composition(clip_tokenizer):
    prompt = "A CAT in a Cafe\u0301"  # decomposed é
    assert word_token_indices(clip_tokenizer, prompt, "cat") == [2]
    assert word_token_indices(clip_tokenizer, prompt, "  a   Cat ") == [1, 2]
    assert word_token_indices(clip_tokenizer, prompt, "CAF\u00c9") == [5]


def test_absent_word_names_word_and_prompt(clip_tokenizer):
    with pytest.raises(PromptError) as error:
        word_token_indices(clip_tokenizer, "a cat sitting", "tiger")
    assert str(error.value) == "'tiger' is not a word of the prompt \"a cat sitting\" (its words: a, cat, sitting)."
    with pytest.raises(PromptError, match="cats"):
        word_token_indices(clip_tokenizer, "a cat sitting", "cats")  # a different word, not a prefix match
    with pytest.raises(PromptError):
        word_token_indices(clip_tokenizer, "a cat sitting", " ")


def test_words_beyond_the_token_limit(clip_tokenizer):
    at_limit = "cat " * 74 + "dog"  # dog is token 75, the last one the encoder keeps
    assert word_token_indices(clip_tokenizer, at_limit, "dog") == [75]
    assert len(prompt_words(clip_tokenizer, at_limit)) == 75

    beyond = "cat " * 75 + "dog"
    assert len(prompt_words(clip_tokenizer, beyond)) == 75
    with pytest.raises(PromptError, match="'dog' lies beyond"):
        word_token_indices(clip_tokenizer, beyond, "dog")

    straddling = "cat " * 73 + "hippopotamus"  # tokens 74, 75 kept, 76 cut off
    assert [w.text for w in prompt_words(clip_tokenizer, straddling)] == ["cat"] * 73
    with pytest.raises(PromptError, match="beyond"):
        word_token_indices(clip_tokenizer, straddling, "hippopotamus")


# -- word swap ----------------------------------------------------------------------------------------


def test_replace_mapper_identity_for_equal_prompts(clip_tokenizer):
    mapper = replace_mapper(clip_tokenizer, "a house, chinese style", "A house,  Chinese style")
    assert mapper.shape == (L, L) and mapper.dtype == torch.float32
    assert torch.equal(mapper, torch.eye(L))


def test_replace_mapper_one_token_swap_maps_swapped_word(clip_tokenizer):
    # same token counts: the swapped word's column takes the source word's map, nothing moves
    mapper = replace_mapper(clip_tokenizer, "a cat sitting, on a mat", "a dog sitting, on a mat")
    assert torch.equal(mapper, torch.eye(L))
    attn = _attention()
    assert torch.equal((attn @ mapper)[..., 2], attn[..., 2])


def test_replace_mapper_one_to_two_tokens(clip_tokenizer):
    mapper = replace_mapper(clip_tokenizer, "a cat sitting", "a wombat sitting")
    expected = torch.zeros(L, L)
    expected[0, 0] = expected[1, 1] = 1
    expected[2, 2] = expected[2, 3] = 0.5  # cat shares its map between wom and bat
    expected[3, 4] = 1  # sitting moved one position right
    for i in range(4, L):  # EOS and padding follow, the last source one folds into the last position
        expected[i, min(i + 1, L - 1)] += 1
    assert torch.equal(mapper, expected)
    assert torch.equal(mapper.sum(1), torch.ones(L))

    attn = _attention()
    out = attn @ mapper
    assert torch.allclose(out[..., 2], attn[..., 2] / 2) and torch.allclose(out[..., 3], attn[..., 2] / 2)
    assert torch.equal(out[..., 4], attn[..., 3])
    assert torch.equal(out[..., 5], attn[..., 4])  # target EOS reads source EOS
    assert torch.allclose(out[..., 76], attn[..., 75] + attn[..., 76])
    assert torch.allclose(out.sum(-1), torch.ones(2, 3, 5))


def test_replace_mapper_three_to_one_tokens(clip_tokenizer):
    mapper = replace_mapper(clip_tokenizer, "a hippopotamus sitting", "a cat sitting")
    attn = _attention(1)
    out = attn @ mapper
    assert torch.allclose(out[..., 2], attn[..., 2:5].sum(-1))
    assert torch.equal(out[..., 3], attn[..., 5])  # sitting
    assert torch.equal(out[..., 4], attn[..., 6])  # EOS
    assert torch.equal(out[..., 76], torch.zeros(2, 3, 5))  # no source position is left for it
    assert torch.allclose(out.sum(-1), torch.ones(2, 3, 5))


def test_replace_mapper_changed_word_of_equal_token_count_is_shared(clip_tokenizer):
    # wom bat -> meer kat: BPE pieces of different words do not correspond, so each is shared evenly
    mapper = replace_mapper(clip_tokenizer, "a wombat sitting", "a meerkat sitting")
    assert torch.equal(mapper[2:4, 2:4], torch.full((2, 2), 0.5))
    assert torch.equal(mapper[4:, 4:], torch.eye(L - 4)) and torch.equal(mapper[:2, :2], torch.eye(2))
    # the same word keeps its pieces one to one, even where it moved
    mapper = replace_mapper(clip_tokenizer, "a cat near a wombat", "a hippopotamus near a wombat")
    assert mapper[5, 7] == 1 and mapper[6, 8] == 1 and mapper[5, 8] == 0


def test_replace_mapper_unequal_word_counts(clip_tokenizer):
    with pytest.raises(PromptError) as error:
        replace_mapper(clip_tokenizer, "a cat, sitting", "a dog sitting")
    message = str(error.value)
    assert '"a cat, sitting" has 4 (a, cat, ",", sitting)' in message
    assert '"a dog sitting" has 3 (a, dog, sitting)' in message


# -- refinement ---------------------------------------------------------------------------------------


def test_refine_mapper_inserted_word(clip_tokenizer):
    mapper, alphas = refine_mapper(clip_tokenizer, "a cat", "a fluffy cat")
    assert mapper.dtype == torch.int64 and alphas.dtype == torch.float32
    assert mapper.tolist() == [0, 1, -1, 2, 3] + list(range(5, L))
    assert alphas.tolist() == [1, 1, 0, 1, 1] + [1] * (L - 5)

    source, own = _attention(2), _attention(3)
    out = source[..., mapper] * alphas + own * (1 - alphas)
    assert torch.equal(out[..., 3], source[..., 2])  # cat keeps its map
    assert torch.equal(out[..., 2], own[..., 2])  # fluffy is the target's own
    assert torch.equal(out[..., 4], source[..., 3])  # EOS


def test_refine_mapper_identity_for_equal_prompts(clip_tokenizer):
    mapper, alphas = refine_mapper(clip_tokenizer, "a house, chinese style", "a house, chinese style")
    assert torch.equal(mapper, torch.arange(L)) and torch.equal(alphas, torch.ones(L))


def test_refine_mapper_removed_words_and_ties(clip_tokenizer):
    mapper, alphas = refine_mapper(clip_tokenizer, "a photo of a cat", "a cat")
    # ties go as in the reference: the target's "a" pairs with the source's first "a"; target padding
    # position j reads source position j (here "of", "a", "cat", EOS: the source is the longer one)
    assert mapper.tolist() == [0, 1, 5, 6] + list(range(4, L))
    assert torch.equal(alphas, torch.ones(L))


def test_refine_mapper_swapped_words_keep_the_first(clip_tokenizer):
    # ties add a new target token before dropping a source one or matching: "dog" is kept
    mapper, alphas = refine_mapper(clip_tokenizer, "a cat dog", "a dog cat")
    assert mapper.tolist()[:5] == [0, 1, 3, -1, 4]
    assert alphas.tolist()[:5] == [1, 1, 1, 0, 1]


def test_refine_mapper_multi_token_word_is_new(clip_tokenizer):
    mapper, alphas = refine_mapper(clip_tokenizer, "a cat", "a hippopotamus")
    assert mapper.tolist()[:7] == [0, 1, -1, -1, -1, 3, 6]  # EOS, then padding 6 -> 6
    assert alphas.tolist()[:7] == [1, 1, 0, 0, 0, 1, 1]


def test_refine_mapper_long_source_short_target(clip_tokenizer):
    mapper, alphas = refine_mapper(clip_tokenizer, "cat " * 80, "a cat")
    assert mapper.tolist()[:4] == [0, -1, 1, 76]  # BOS, a (new), the first cat (the reference's tie), EOS
    assert mapper.tolist()[4:] == list(range(4, L))
    assert int(mapper.min()) >= -1 and int(mapper.max()) <= L - 1


@pytest.mark.parametrize(("source", "target"), [
    ("a cat sitting on a bench", "a silver cat sculpture sitting on a bench"),  # target longer
    ("a silver cat sculpture sitting on a bench", "a cat sitting on a bench"),  # source longer
])
def test_refine_mapper_padding_reads_the_same_source_position(clip_tokenizer, source, target):
    """The reference's get_mapper: `mapper[len(y):] = len(y) + arange(L - len(y))`, position j -> j."""
    mapper, alphas = refine_mapper(clip_tokenizer, source, target)
    n = len(clip_tokenizer(target).input_ids)
    assert len(clip_tokenizer(source).input_ids) != n
    assert mapper[n:].tolist() == list(range(n, L))
    assert alphas[n:].tolist() == [1.0] * (L - n)


def test_refine_mapper_matches_a_transcription_of_the_reference(clip_tokenizer):
    """Every alignment, ties included, and the padding rule, against the reference's own algorithm
    (google/prompt-to-prompt seq_aligner.py, transcribed in tests/reference_seq_aligner.py)."""
    pairs = [("a photo of a cat", "a cat"), ("a cat dog", "a dog cat"), ("a cat", "a fluffy cat"),
             ("cat " * 80, "a cat"), ("a dog and a cat and a dog", "a cat and a dog"),
             ("the red the red house", "a red house the red")]
    for source, target in pairs:
        mapper, alphas = refine_mapper(clip_tokenizer, source, target)
        ref_mapper, ref_alphas = reference_get_mapper(
            clip_tokenizer(source, truncation=True, max_length=L).input_ids,
            clip_tokenizer(target, truncation=True, max_length=L).input_ids, L)
        assert mapper.tolist() == ref_mapper.tolist(), (source, target)
        assert alphas.tolist() == ref_alphas.tolist(), (source, target)
    rng = random.Random(0)
    for _ in range(2000):  # short random sequences over a few symbols: ties everywhere
        x = [rng.randrange(4) for _ in range(rng.randrange(0, 9))]
        y = [rng.randrange(4) for _ in range(rng.randrange(0, 9))]
        assert _align(x, y) == reference_align(x, y), (x, y)


# -- weights and masks --------------------------------------------------------------------------------


def test_word_weights(clip_tokenizer):
    weights = word_weights(clip_tokenizer, "a wombat and a cat", {"Wombat": 2.0, "cat": -0.5})
    expected = torch.ones(L)
    expected[[2, 3]] = 2.0
    expected[6] = -0.5
    assert torch.equal(weights, expected)
    with pytest.raises(PromptError, match="'dog'"):
        word_weights(clip_tokenizer, "a wombat and a cat", {"dog": 2.0})
    with pytest.raises(PromptError, match="different"):
        word_weights(clip_tokenizer, "a cat", {"cat": 2.0, "a cat": 3.0})
    with pytest.raises(ParamError):
        word_weights(clip_tokenizer, "a cat", {"cat": float("nan")})


def test_word_mask(clip_tokenizer):
    mask = word_mask(clip_tokenizer, "a hippopotamus in a river, at dusk", ["hippopotamus", "at dusk"])
    expected = torch.zeros(L)
    expected[[2, 3, 4, 9, 10]] = 1.0
    assert torch.equal(mask, expected)
    assert torch.equal(word_mask(clip_tokenizer, "a cat", []), torch.zeros(L))
    with pytest.raises(PromptError, match="'dog'"):
        word_mask(clip_tokenizer, "a cat", ["dog"])
    with pytest.raises(TypeError):
        word_mask(clip_tokenizer, "a cat", "cat")


# -- the encoder's 77-token window ------------------------------------------------------------------


def test_prompt_overflow_names_the_words_cut_off(clip_tokenizer):
    assert prompt_overflow(clip_tokenizer, "a house in a meadow") == ()
    assert prompt_overflow(clip_tokenizer, "cat " * 74 + "dog") == ()  # dog is token 75, the last kept
    assert prompt_overflow(clip_tokenizer, "cat " * 75 + "dog") == ("dog",)
    assert prompt_overflow(clip_tokenizer, "cat " * 73 + "hippopotamus") == ("hippopotamus",)  # straddles
    assert prompt_overflow(clip_tokenizer, "cat " * 80 + "in snow") == ("cat",) * 5 + ("in", "snow")


def test_a_change_only_beyond_the_window_is_refused(clip_tokenizer):
    long = "a house in a meadow, " + "very " * 80
    with pytest.raises(PromptError, match="differ only after the first 75 tokens, beyond the text encoder's "
                                          "77-token window, so the edit would change nothing"):
        check_change_within_window(clip_tokenizer, long + "summer", long + "winter")
    check_change_within_window(clip_tokenizer, "a house" + long, "a castle" + long)  # inside: fine
    check_change_within_window(clip_tokenizer, "a house", "a house")  # no change at all is not this check's
    check_change_within_window(clip_tokenizer, "cat " * 74 + "dog", "cat " * 74 + "wolf")  # at the last kept token


def test_word_lookups_beyond_the_window_say_so(clip_tokenizer):
    beyond = "cat " * 75 + "dog"
    with pytest.raises(WordBeyondWindow) as error:
        word_mask(clip_tokenizer, beyond, ["dog"])
    message = str(error.value)
    assert message.startswith("'dog' lies beyond the 77-token window of the prompt \"cat cat")
    assert "not a word" not in message and "…" in message and len(message) < 400


def test_pair_word_masks_for_blend_words(clip_tokenizer):
    rows = pair_word_masks(clip_tokenizer, "a cat sitting", "a dog sitting", ["cat", "dog", "sitting"])
    assert rows.shape == (2, L)
    assert rows[0].nonzero().flatten().tolist() == [2, 3] and rows[1].nonzero().flatten().tolist() == [2, 3]
    with pytest.raises(PromptError, match="Blend word 'zebra' is in neither prompt"):
        pair_word_masks(clip_tokenizer, "a cat", "a dog", ["zebra"])
    with pytest.raises(WordBeyondWindow, match="'snow' lies beyond the 77-token window"):
        pair_word_masks(clip_tokenizer, "a cat", "a cat " + "very " * 80 + "snow", ["snow"])
