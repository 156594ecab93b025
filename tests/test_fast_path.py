"""The fast path on the CPU, with its CUDA graphs emulated (pipeline.fast.EmulatedCapture): every method's
edit, captured once per kind of UNet call and replayed at the later steps, gives the eager edit's
very bits. The emulation freezes what a CUDA graph freezes (the Python of the call, host values, the
tensors it read) and refuses a host read of a tensor during capture, so a controller that decided
anything per step in Python, or read a per-step table by the host's step, would give other numbers
here; two planted controllers show that it does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch

from pipeline.control.contract import AttentionCall, Controller
from pipeline.control.places import LayerPlace
from pipeline.events import CancelToken
from pipeline import run
from pipeline.fast import EmulatedCapture, FastOptions
from pipeline.images import load_image, to_tensor
from pipeline.inversion.ddim import ddim_invert
from pipeline.methods.base import Inputs, Prompts
from pipeline.methods.kv_inversion import KVInversion, KVInversionParams
from pipeline.methods.masactrl import MasaCtrl, MasaCtrlParams
from pipeline.methods.p2p import P2PParams, PromptToPrompt
from pipeline.methods.specref import SpecRef, SpecRefParams
from pipeline.methods.stylediffusion import StyleDiffusion, StyleDiffusionParams
from pipeline.methods.toli import Toli, ToliParams
from pipeline.optimise import Minimiser
from pipeline.parts import IMAGE_ENCODER, with_parts
from pipeline.paths import RESOURCES
from pipeline.run import RunContext, RunOptions
from pipeline.sampling import DDIMSchedule, Sampling, denoise

STEPS = 8  # long enough that every kind of call is replayed after its capture
MAPS_SIZE = 128  # where controllers threshold maps (tests/fingerprints.py says why)
PROMPTS = Prompts("a house in a meadow under a blue sky", "a castle in a meadow under a blue sky")
ACTION = Prompts("a house in a meadow under a blue sky", "a house in a meadow under a stormy sky")
EMULATED = RunOptions(seed=0, fast=FastOptions(emulate=True, optimisation_graphs=False))  # UNet graphs alone
"""The captured optimisation iteration has tests of its own (tests/test_optimise.py)."""


def _context(bundle: Any, options: RunOptions = RunOptions(seed=0)) -> RunContext:
    return RunContext(bundle, CancelToken(), lambda event: None, options)


@pytest.fixture(scope="module")
def styled(demo_bundle):
    return with_parts(demo_bundle, (IMAGE_ENCODER,))


def _subject(size: int) -> torch.Tensor:
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 1:5] = 1
    return torch.nn.functional.interpolate(mask, size=(size // 8, size // 8))


def _cases(reference: torch.Tensor) -> dict[str, tuple[Any, Prompts, Any, Inputs, Inputs, int]]:
    """method, prompts, params, edit inputs, tuning inputs, working size."""
    none = Inputs()
    blend = {"blend_words": ("house", "castle"), "blend_threshold": 0.9}  # a region that changes with the maps
    return {
        "p2p, null-text, local blend": (PromptToPrompt(), PROMPTS, P2PParams(
            steps=STEPS, inner_steps=1, blend_start=0.0, **blend), none, none, MAPS_SIZE),
        "masactrl, word masks": (MasaCtrl(), ACTION, MasaCtrlParams(
            steps=STEPS, inversion_prompt="source", mask_words=("house",), control_start=0.1, mask_threshold=0.5),
            none, none, MAPS_SIZE),
        "masactrl, subject mask": (MasaCtrl(), ACTION, MasaCtrlParams(steps=STEPS, control_start=0.1),
                                   Inputs(masks={"subject_mask": _subject(64)}), none, 64),
        "specref": (SpecRef(), PROMPTS, SpecRefParams(steps=STEPS, blend_threshold=0.9),
                    Inputs(masks={"reference_mask": _subject(MAPS_SIZE)}),
                    Inputs(images={"reference": reference}, prompts={"reference": "a red house"}), MAPS_SIZE),
        "toli, direct": (Toli(), ACTION, ToliParams(steps=STEPS, inversion="direct", text_steps=2), none, none, 64),
        "kv-inversion": (KVInversion(), ACTION, KVInversionParams(steps=STEPS, inner_steps=1, cp_start=0.3),
                         none, none, 64),
        "stylediffusion, P2Plus": (StyleDiffusion(), PROMPTS, StyleDiffusionParams(
            steps=STEPS, inner_steps=1, uncond_self_replace=(0.0, 0.5), **blend), none, none, MAPS_SIZE),
    }


CASES = list(_cases(torch.zeros(1)))


@pytest.mark.parametrize("case", CASES)
def test_an_edit_with_emulated_graphs_is_the_eager_edit_bit_for_bit(case, styled):
    eager = _context(styled)
    photo, picture = (load_image(RESOURCES / name / "house.png") for name in ("demo", "demo_world"))
    reference = eager.encode_image(to_tensor(picture, (MAPS_SIZE, MAPS_SIZE)))
    method, prompts, params, inputs, tune_inputs, size = _cases(reference)[case]
    demo_latent = eager.encode_image(to_tensor(photo, (size, size)))
    tensors = method.invert(eager, demo_latent, prompts, params, inputs)
    if hasattr(method, "tune"):
        tensors = {**tensors, **method.tune(eager, tensors, prompts, params, tune_inputs)}
    with torch.no_grad():
        expected = method.edit(eager, tensors, prompts, params, inputs)
        fast = _context(styled, EMULATED)
        found = method.edit(fast, tensors, prompts, params, inputs)
    for name in ("target", "reconstruction", "region"):
        a, b = getattr(expected, name), getattr(found, name)
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(b, a, rtol=0, atol=0, msg=lambda m, name=name: f"{case}, {name}: {m}")
    graphs = fast.graphs
    assert graphs is not None and graphs.captures >= 1 and graphs.replays >= 1
    # one UNet call a step: each kind of call runs eagerly once, is captured once, then only replayed
    assert graphs.captures == graphs.kept and graphs.replays + 2 * graphs.captures == STEPS, vars(graphs)


def test_ddim_inversion_replays_one_graph(demo_bundle, demo_latent):
    schedule = DDIMSchedule(demo_bundle.scheduler, STEPS)
    eager, fast = _context(demo_bundle), _context(demo_bundle, EMULATED)
    cond = eager.encode_text(["a house"])
    expected = ddim_invert(eager, schedule, demo_latent, cond)
    found = ddim_invert(fast, schedule, demo_latent, cond)
    torch.testing.assert_close(found, expected, rtol=0, atol=0)
    assert (fast.graphs.captures, fast.graphs.replays) == (1, STEPS - 2)  # eager, captured, replayed


def test_the_fast_path_never_runs_on_the_cpu_unless_emulated(demo_bundle):
    assert _context(demo_bundle).graphs is None and _context(demo_bundle).fast is None
    assert _context(demo_bundle, RunOptions(fast=None)).fast is None


# -- the emulation catches what a CUDA graph would get wrong -------------------------------------------


@dataclass
class _ScalesCrossAttention(Controller):
    """Scales the cross-attention output by a per-step factor; `by_data` reads it as the contract asks."""

    factors: torch.Tensor
    by_data: bool
    graph_safe: ClassVar[bool] = True

    def active(self, place: LayerPlace, step: int) -> bool:
        return place.kind == "cross"

    def rewrite_output(self, call: AttentionCall, out: torch.Tensor) -> torch.Tensor:
        factor = call.per_step(self.factors) if self.by_data else self.factors[call.step]  # the second: a bug
        return out * factor


@dataclass
class _ReadsOnTheHost(_ScalesCrossAttention):
    def rewrite_output(self, call: AttentionCall, out: torch.Tensor) -> torch.Tensor:
        return out * 2 if bool(out.mean() > 0) else out


def _sample(bundle: Any, controller: Controller, options: RunOptions) -> torch.Tensor:
    ctx = _context(bundle, options)
    schedule = DDIMSchedule(bundle.scheduler, 6)
    cond = ctx.encode_text(["a house"])
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return denoise(ctx, schedule, z, Sampling(cond, None, 1.0, [controller]), "test")


def test_a_per_step_table_read_by_the_hosts_step_is_caught(demo_bundle):
    factors = torch.linspace(0.5, 1.5, 6)
    eager = _sample(demo_bundle, _ScalesCrossAttention(factors, by_data=True), RunOptions())
    torch.testing.assert_close(_sample(demo_bundle, _ScalesCrossAttention(factors, by_data=True), EMULATED), eager,
                               rtol=0, atol=0)
    frozen = _sample(demo_bundle, _ScalesCrossAttention(factors, by_data=False), EMULATED)
    assert not torch.allclose(frozen, eager, atol=1e-4)  # the captured step's factor, replayed at every step


def test_a_host_read_during_capture_is_refused_and_that_call_runs_eagerly(demo_bundle, caplog):
    controller = _ReadsOnTheHost(torch.ones(6), by_data=True)
    eager = _sample(demo_bundle, controller, RunOptions())
    with caplog.at_level("WARNING", logger="pipeline.fast"):
        found = _sample(demo_bundle, _ReadsOnTheHost(torch.ones(6), by_data=True), EMULATED)
    assert "read on the host during a graph capture" in caplog.text
    torch.testing.assert_close(found, eager, rtol=0, atol=0)


class _CaptureOutOfMemory(EmulatedCapture):
    """The emulated backend, whose captured work runs out of GPU memory (the warm-up call before each does
    not)."""

    def __call__(self, work):
        def out_of_memory():
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

        return super().__call__(out_of_memory)


def test_running_out_of_memory_in_a_capture_is_not_taken_for_a_call_cuda_cannot_capture(demo_bundle, monkeypatch):
    """A capture that fails for want of memory is not run eagerly on the fast path (as a call CUDA cannot
    capture is): it reaches the engine, which runs the stage again with the fast path off."""
    monkeypatch.setattr(run, "capture_backend", lambda options: _CaptureOutOfMemory())
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _sample(demo_bundle, _ScalesCrossAttention(torch.ones(6), by_data=True), EMULATED)
    x = torch.zeros(3, requires_grad=True)
    minimiser = Minimiser([x], lambda: (x - 1).square().sum(), CancelToken(), _CaptureOutOfMemory())
    minimiser.restart(0.1)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        minimiser.run(4, None)
