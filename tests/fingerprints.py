"""Fingerprints of the eager path: a hash of every tensor each method returns, stage by stage, on the
tiny demo model on the CPU, for tests/test_eager_identity.py.

The fast path (pipeline.fast) shares its code with the eager path and may only add to it; with the
fast path off, which it always is on the CPU, every method must give the very bits it gave before.
The recorded fingerprints pin those bits. They depend on the CPU's arithmetic too (which kernels
PyTorch picks), so a canary is recorded with them: one plain UNet and VAE call that uses no Retake
code. Where the canary differs, this machine computes other bits anyway and the comparison means
nothing there; where it matches, every fingerprint must.

Record them from the tree whose numbers are the reference (here, or a checkout of another commit:
the module uses only the methods' public interface):

    python -m tests.fingerprints --write tests/data/eager-fingerprints.json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from pipeline.events import CancelToken
from pipeline.images import load_image, to_tensor
from pipeline.methods.base import Inputs, Prompts
from pipeline.methods.kv_inversion import KVInversion, KVInversionParams
from pipeline.methods.masactrl import MasaCtrl, MasaCtrlParams
from pipeline.methods.p2p import P2PParams, PromptToPrompt
from pipeline.methods.specref import SpecRef, SpecRefParams
from pipeline.methods.stylediffusion import StyleDiffusion, StyleDiffusionParams
from pipeline.methods.toli import Toli, ToliParams
from pipeline.models import ModelBundle, load_model
from pipeline.parts import IMAGE_ENCODER, with_parts
from pipeline.paths import RESOURCES
from pipeline.run import RunContext, RunOptions

RECORDED = Path(__file__).resolve().parent / "data" / "eager-fingerprints.json"
SIZE = 64
MAPS_SIZE = 128
"""The cases whose controllers threshold attention maps run at 128 px: at 64 px the maps they threshold
are 2x2 and their regions come out whole whatever the maps hold."""
STEPS = 6
PROMPTS = Prompts("a house in a meadow under a blue sky", "a castle in a meadow under a blue sky")
ACTION = Prompts("a house in a meadow under a blue sky", "a house in a meadow under a stormy sky")


def digest(tensors: dict[str, Any]) -> str:
    """sha256 over the names, shapes, dtypes and bytes of the tensors (None counts as absent)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        if tensor is None:
            continue
        tensor = tensor.detach().cpu().contiguous()
        h.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        h.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Fingerprints with one CPU thread: some kernels' results depend on how work is split."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def canary(bundle: ModelBundle) -> str:
    """One UNet call without control (diffusers' own SDPA path) and one VAE decode: no Retake code."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, SIZE // 8, SIZE // 8, generator=g)
    emb = torch.randn(2, 77, bundle.unet.config.cross_attention_dim, generator=g)
    with torch.no_grad(), one_thread():
        eps = bundle.unet(z, 500, encoder_hidden_states=emb, return_dict=False)[0]
        image = bundle.vae.decode(z, return_dict=False)[0]
    return digest({"eps": eps, "image": image})


def _stages(run: Callable[[], dict[str, dict[str, Any]]]) -> dict[str, str]:
    with one_thread():
        return {stage: digest(tensors) for stage, tensors in run().items()}


def _output(out: Any) -> dict[str, Any]:
    return {"target": out.target, "reconstruction": out.reconstruction, "region": out.region}


def method_fingerprints(bundle: ModelBundle, options: RunOptions | None = None) -> dict[str, dict[str, str]]:
    """Per method and stage (invert, tune, edit), the digest of what the stage returned, on settings that
    run every controller: local blend, refine, null-text, direct inversion, mask-guided MasaCtrl from
    words and from masks, SpecRef's word region, TOLI's switch, P2Plus, both KV Inversion forms."""
    options = options or RunOptions(seed=0)
    ctx = RunContext(bundle, CancelToken(), lambda event: None, options)
    photo = load_image(RESOURCES / "demo" / "house.png")
    latents = {size: ctx.encode_image(to_tensor(photo, (size, size))) for size in (SIZE, MAPS_SIZE)}
    side = SIZE // 8
    subject = torch.zeros(1, 1, side, side)
    subject[..., 2:6, 1:5] = 1
    big_subject = torch.nn.functional.interpolate(subject, scale_factor=MAPS_SIZE // SIZE)
    none = Inputs()
    results: dict[str, dict[str, str]] = {}

    def whole(method: Any, prompts: Prompts, params: Any, inputs: Inputs = none,
              tune_inputs: Inputs | None = None, size: int = SIZE) -> Callable[[], dict[str, dict[str, Any]]]:
        def run() -> dict[str, dict[str, Any]]:
            latent = latents[size]
            stages = {"invert": method.invert(ctx, latent, prompts, params, inputs)}
            tensors = dict(stages["invert"])
            if hasattr(method, "tune"):
                stages["tune"] = method.tune(ctx, tensors, prompts, params, tune_inputs or inputs)
                tensors.update(stages["tune"])
            stages["edit"] = _output(method.edit(ctx, tensors, prompts, params, inputs))
            return stages
        return run

    p2p = PromptToPrompt()
    results["p2p null-text, local blend"] = _stages(whole(p2p, PROMPTS, P2PParams(
        steps=STEPS, inner_steps=2, blend_words=("house", "castle"), blend_start=0.0, blend_threshold=0.9),
        size=MAPS_SIZE))
    results["p2p direct, refine, reweight"] = _stages(whole(p2p, Prompts(PROMPTS.source, "a red castle in a meadow"),
                                                            P2PParams(steps=STEPS, inversion="direct",
                                                                      reweight=(("red", 2.0),))))
    masactrl = MasaCtrl()
    results["masactrl"] = _stages(whole(masactrl, ACTION, MasaCtrlParams(steps=STEPS)))
    results["masactrl, word masks"] = _stages(whole(masactrl, ACTION, MasaCtrlParams(
        steps=STEPS, inversion_prompt="source", mask_words=("house",), control_start=0.0, mask_threshold=0.5),
        size=MAPS_SIZE))
    results["masactrl, subject mask"] = _stages(whole(masactrl, ACTION, MasaCtrlParams(steps=STEPS, control_start=0.0),
                                                      Inputs(masks={"subject_mask": subject})))
    reference = ctx.encode_image(to_tensor(load_image(RESOURCES / "demo_world" / "house.png"), (MAPS_SIZE,) * 2))
    results["specref"] = _stages(whole(
        SpecRef(), PROMPTS, SpecRefParams(steps=STEPS, blend_threshold=0.9), Inputs(masks={"reference_mask": big_subject}),
        Inputs(images={"reference": reference}, prompts={"reference": "a red house"}), size=MAPS_SIZE))
    results["toli"] = _stages(whole(Toli(), ACTION, ToliParams(steps=STEPS, inner_steps=2, text_steps=3)))
    results["toli direct"] = _stages(whole(Toli(), ACTION, ToliParams(steps=STEPS, inversion="direct", text_steps=2)))
    styled = RunContext(with_parts(bundle, (IMAGE_ENCODER,)), CancelToken(), lambda event: None, options)
    results["stylediffusion"] = _stages(lambda: _stylediffusion(styled, latents[MAPS_SIZE]))
    kv = KVInversion()
    for form in ("low-rank", "full"):
        results[f"kv-inversion {form}"] = _stages(whole(kv, ACTION, KVInversionParams(
            steps=STEPS, form=form, inner_steps=2, cp_start=0.3)))
    return results


def _stylediffusion(ctx: RunContext, latent: torch.Tensor) -> dict[str, dict[str, Any]]:
    method = StyleDiffusion()
    params = StyleDiffusionParams(steps=STEPS, inner_steps=3, uncond_self_replace=(0.0, 0.5),
                                  blend_words=("house", "castle"), blend_threshold=0.9)
    inversion = method.invert(ctx, latent, PROMPTS, params, Inputs())
    return {"invert": inversion, "edit": _output(method.edit(ctx, inversion, PROMPTS, params, Inputs()))}


def record(bundle: ModelBundle) -> dict[str, Any]:
    """The canary and every method's fingerprints, as the JSON file holds them."""
    return {"torch": torch.__version__, "canary": canary(bundle), "methods": method_fingerprints(bundle)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, default=None, help="write the fingerprints here (JSON)")
    args = parser.parse_args()
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # as the tests run (tests/conftest.py); read at MKL's first sum
    found = record(load_model("demo-tiny", device="cpu"))
    text = json.dumps(found, indent=2) + "\n"
    if args.write is None:
        print(text)
    else:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
