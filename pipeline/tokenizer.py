"""Stable Diffusion's CLIP tokenizer, built offline from the BPE merges file we ship.

SD 1.x uses the tokenizer of openai/clip-vit-large-patch14. Its vocab.json and merges.txt are a pure
function of OpenAI's `bpe_simple_vocab_16e6.txt.gz` (the file open_clip ships), so we rebuild them
from that file instead of downloading them: token indices in tests and in the demo model are then
exactly those of Stable Diffusion.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from transformers import CLIPTokenizer

from pipeline.paths import RESOURCES

BPE_FILE = RESOURCES / "clip" / "bpe_simple_vocab_16e6.txt.gz"
# CLIP keeps the first 49152 - 256 - 2 merges; 256 byte symbols, their '</w>' forms and the merges,
# plus the two special tokens, make the 49408-entry vocabulary.
_N_MERGES = 49152 - 256 - 2
CLIP_VOCAB_SIZE = 2 * 256 + _N_MERGES + 2
"""Tokens of SD 1.x's CLIP tokenizer: 49408."""


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes, in CLIP's order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def clip_vocab_and_merges(bpe_file: Path = BPE_FILE) -> tuple[dict[str, int], list[str]]:
    """Return CLIP's token -> id table and its merge rules, derived from the BPE merges file."""
    lines = gzip.decompress(bpe_file.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : _N_MERGES + 1]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def load_clip_tokenizer(bpe_file: Path = BPE_FILE) -> CLIPTokenizer:
    """Stable Diffusion 1.x's tokenizer (77 tokens, padded with end-of-text), with no network access."""
    vocab, merges = clip_vocab_and_merges(bpe_file)
    pairs = [tuple(m.split()) for m in merges]
    return CLIPTokenizer(vocab=vocab, merges=pairs, model_max_length=77)
