"""A CLIP text encoder stored with only the token-embedding rows its training used.

SD 1.x's text encoder reads SD's CLIP tokenizer, so its token table has 49,408 rows whatever its
width. A demo model trained on a small world sees a few dozen of those tokens (the demo world's
captions say 46 words): every other row never receives a gradient and stays the random value it
was initialised with (weight decay only shrinks it). At the demo-world model's width that untrained
noise is 12.6 MB of its weights. So a demo model's text_encoder/ may keep the table as the rows
that were trained (ROWS_FILE: their token ids and values) next to a model.safetensors that holds
every other tensor; loading fills the remaining rows with seeded noise of the initialisation's
scale (normal, std `initializer_range`), which is what untrained rows are. A caption made of the
kept tokens encodes exactly as with the full table; any other word was meaningless to the model
before and stays so (it still gets its own distinct vector).

Only Retake's own demo models are stored this way (`pipeline.demo_model.save_demo_model`);
`pipeline.models` loads such a folder, every other text encoder with `from_pretrained`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from pipeline.errors import ModelError

ROWS_FILE = "token_rows.safetensors"
"""In a text_encoder/ folder: the token ids ("ids") and rows ("rows") of a packed token table."""
WEIGHTS_FILE = "model.safetensors"
FORMAT = "retake-token-rows/1"
FILL_SEED = 0
"""Seed of the noise that stands in for the rows no training caption used."""


def is_packed(text_encoder_dir: Path) -> bool:
    """Whether `text_encoder_dir` keeps its token table as ROWS_FILE."""
    return (text_encoder_dir / ROWS_FILE).is_file()


def pack_token_table(text_encoder_dir: Path, token_ids: Iterable[int]) -> None:
    """Rewrite a saved CLIPTextModel folder so that its token table keeps only the rows `token_ids`.

    The ids must be every token the model was trained on (the caller knows them: its training
    data); the other rows are dropped, and `load_packed_text_encoder` replaces them by noise."""
    weights = text_encoder_dir / WEIGHTS_FILE
    tensors = safetensors.torch.load_file(weights)
    key = _token_table_key(tensors, weights)
    table = tensors.pop(key)
    ids = torch.tensor(sorted(set(int(i) for i in token_ids)), dtype=torch.int64)
    if len(ids) == 0 or ids[0] < 0 or ids[-1] >= table.shape[0]:
        raise ValueError(f"token ids must be in [0, {table.shape[0]}), got {len(ids)} ids")
    safetensors.torch.save_file({"ids": ids, "rows": table[ids].contiguous()}, text_encoder_dir / ROWS_FILE,
                                metadata={"format": FORMAT})
    safetensors.torch.save_file(tensors, weights, metadata={"format": "pt"})


def load_packed_text_encoder(text_encoder_dir: Path) -> CLIPTextModel:
    """The float32 CLIPTextModel of a packed folder; ModelError if its files do not fit together."""
    config = CLIPTextConfig.from_pretrained(text_encoder_dir, local_files_only=True)
    model = CLIPTextModel(config).float().eval()
    rows_file = text_encoder_dir / ROWS_FILE
    with safetensors.safe_open(rows_file, framework="pt") as handle:
        metadata = handle.metadata() or {}
        packed = {name: handle.get_tensor(name) for name in handle.keys()}
    if metadata.get("format") != FORMAT or set(packed) != {"ids", "rows"}:
        raise ModelError(f"'{rows_file}' is not a token table Retake wrote ({FORMAT}).")
    ids, rows = packed["ids"], packed["rows"]
    width = config.hidden_size
    if (ids.ndim != 1 or rows.shape != (len(ids), width) or len(torch.unique(ids)) != len(ids)
            or ids.min() < 0 or ids.max() >= config.vocab_size):
        raise ModelError(f"'{rows_file}' does not fit the text encoder's config ({config.vocab_size} tokens x {width}).")

    tensors = safetensors.torch.load_file(text_encoder_dir / WEIGHTS_FILE)
    table_param = model.get_input_embeddings().weight
    table_key = next(name for name, param in model.named_parameters() if param is table_param)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing != [table_key] or unexpected:
        raise ModelError(f"'{text_encoder_dir / WEIGHTS_FILE}' does not hold the rest of the text encoder "
                         f"({len(missing)} tensors missing, {len(unexpected)} unknown).")
    table = torch.randn(config.vocab_size, width, generator=torch.Generator().manual_seed(FILL_SEED))
    table.mul_(config.initializer_range)
    table[ids] = rows.float()
    with torch.no_grad():
        table_param.copy_(table)
    return model.requires_grad_(False)


def _token_table_key(tensors: dict[str, torch.Tensor], where: Path) -> str:
    keys = [key for key in tensors if key.endswith("embeddings.token_embedding.weight")]
    if len(keys) != 1:
        raise ValueError(f"'{where}' holds no single token embedding")
    return keys[0]
