"""A packed token table (pipeline.token_table) changes nothing a kept token says, and loads as a model.

The demo-world model ships its text encoder's token table as the rows its training captions used;
if a row were lost or misplaced, every caption with that word would encode differently and every
edit on the demo model would quietly change. So: a packed encoder encodes kept tokens exactly as
the full one, the world's captions use only kept tokens, and a damaged table is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from bench import semantic
from pipeline.demo_model import DEMO_EDIT, demo_model_dir
from pipeline.errors import ModelError
from pipeline.models import load_model
from pipeline.token_table import ROWS_FILE, WEIGHTS_FILE, is_packed, load_packed_text_encoder, pack_token_table

import world  # noqa: E402  (resources/demo_world/world.py: bench.semantic puts its folder on sys.path)

KEPT = [0, 3, 17, 250, 998, 999]


@pytest.fixture
def saved_encoder(tmp_path: Path) -> tuple[CLIPTextModel, Path]:
    """A small random CLIPTextModel saved as transformers saves one, and its folder."""
    torch.manual_seed(1)
    config = CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=16, bos_token_id=998, eos_token_id=999,
                            pad_token_id=999)
    model = CLIPTextModel(config).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0, 0.3)  # unlike the fill's 0.02: a lost row shows
    model.save_pretrained(tmp_path / "text_encoder", safe_serialization=True)
    return model, tmp_path / "text_encoder"


def encode(model: CLIPTextModel, ids: list[list[int]]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor(ids))[0]


def test_packed_encoder_encodes_kept_tokens_exactly(saved_encoder) -> None:
    full, folder = saved_encoder
    pack_token_table(folder, reversed(KEPT))
    packed = load_packed_text_encoder(folder)
    kept_only = [[998, 3, 17, 250, 0, 999, 999, 999], [998, 0, 0, 999, 999, 999, 999, 999]]
    assert torch.equal(encode(packed, kept_only), encode(full, kept_only))
    # the rows no one kept were replaced (a caption with such a word changes), by noise of the init's scale
    assert not torch.equal(encode(packed, [[998, 5, 999]]), encode(full, [[998, 5, 999]]))
    table = packed.get_input_embeddings().weight
    others = torch.ones(len(table), dtype=torch.bool)
    others[KEPT] = False
    assert table[others].std().item() == pytest.approx(full.config.initializer_range, rel=0.05)
    assert not packed.get_input_embeddings().weight.requires_grad


def test_pack_stores_the_kept_rows_and_the_rest_without_a_table(saved_encoder) -> None:
    full, folder = saved_encoder
    pack_token_table(folder, KEPT + KEPT)
    rows = safetensors.torch.load_file(folder / ROWS_FILE)
    assert rows["ids"].tolist() == KEPT
    assert torch.equal(rows["rows"], full.get_input_embeddings().weight[KEPT].detach())
    rest = safetensors.torch.load_file(folder / WEIGHTS_FILE)
    assert not any("token_embedding" in key for key in rest) and len(rest) == len(full.state_dict()) - 1
    assert is_packed(folder)


def test_a_damaged_packed_table_is_refused(saved_encoder) -> None:
    _, folder = saved_encoder
    pack_token_table(folder, KEPT)
    rows = safetensors.torch.load_file(folder / ROWS_FILE)
    safetensors.torch.save_file({"ids": rows["ids"], "rows": rows["rows"][:, :16].contiguous()}, folder / ROWS_FILE,
                                metadata={"format": "retake-token-rows/1"})
    with pytest.raises(ModelError, match="does not fit"):
        load_packed_text_encoder(folder)
    safetensors.torch.save_file(rows, folder / ROWS_FILE)  # no format
    with pytest.raises(ModelError, match="not a token table"):
        load_packed_text_encoder(folder)
    safetensors.torch.save_file(rows, folder / ROWS_FILE, metadata={"format": "retake-token-rows/1"})
    rest = safetensors.torch.load_file(folder / WEIGHTS_FILE)
    rest.pop(next(iter(rest)))
    safetensors.torch.save_file(rest, folder / WEIGHTS_FILE)
    with pytest.raises(ModelError, match="does not hold the rest"):
        load_packed_text_encoder(folder)


def test_a_packed_model_folder_loads_and_its_identity_covers_the_table(tmp_path: Path, cache_dir) -> None:
    folder = tmp_path / "tiny"
    shutil.copytree(demo_model_dir("demo-tiny"), folder)
    full = load_model(str(folder), device="cpu", cache_dir=cache_dir)
    kept = full.tokenizer(["a house in a meadow under a blue sky", ""], padding="max_length", max_length=77).input_ids
    pack_token_table(folder / "text_encoder", {i for ids in kept for i in ids})
    packed = load_model(str(folder), device="cpu", cache_dir=cache_dir)
    assert torch.equal(encode(packed.text_encoder, kept), encode(full.text_encoder, kept))
    assert packed.identity != full.identity
    rows = safetensors.torch.load_file(folder / "text_encoder" / ROWS_FILE)
    rows["rows"][0, 0] += 1
    safetensors.torch.save_file(rows, folder / "text_encoder" / ROWS_FILE, metadata={"format": "retake-token-rows/1"})
    assert load_model(str(folder), device="cpu", cache_dir=cache_dir).identity != packed.identity


def test_the_demo_model_keeps_every_token_the_world_says(clip_tokenizer) -> None:
    kept = set(safetensors.torch.load_file(demo_model_dir("demo") / "text_encoder" / ROWS_FILE)["ids"].tolist())
    rng = np.random.default_rng(8)
    captions = [world.sample_description(rng).caption for _ in range(3000)] + ["", DEMO_EDIT.source, DEMO_EDIT.target]
    for case in semantic.world_cases.make_cases(3):
        captions += [case.source.caption, case.target.caption]
        captions += [case.reference.caption] if case.reference is not None else []
    said = {i for ids in clip_tokenizer(captions, padding="max_length", max_length=77).input_ids for i in ids}
    assert said <= kept, clip_tokenizer.convert_ids_to_tokens(sorted(said - kept))
