"""One run's working context: the model, the cancel token, the random generator, and the channel
events go out on.

Methods receive a RunContext instead of reaching for globals: it runs the UNet at the right
precision (sampling in the bundle's sample dtype under autocast, anything optimised in fp32),
encodes prompts and images, owns the step iterator every loop uses (cancellation before each step,
progress with an ETA after it, previews at the requested cadence), and carries a torch.Generator of
its own so that no run touches the global random state. On a GPU it takes the fast path
(pipeline.fast) when asked to: UNet calls without gradients replayed as CUDA graphs, on the copy of the
UNet whose weights are held in the sampling dtype where the bundle has one (pipeline.held_weights),
optimised calls with TF32 matrix products, or in bf16 inside a captured Adam iteration.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from pipeline.control.contract import ControlState
from pipeline.control.places import layer_places
from pipeline.events import CancelToken, Emit, Preview, Progress, Stage
from pipeline.fast import FastOptions, UNetGraphs, applies, capture_backend, optimisation_precision
from pipeline.images import from_tensor
from pipeline.models import ModelBundle
from pipeline.optimise import LoopInputs, Loss, Minimiser


@dataclass(frozen=True)
class RunOptions:
    """How a run reports itself: previews every `preview_every` steps (0: none), at most `preview_side` px.

    `preview_map` turns a predicted clean latent into a picture cheaply (pipeline.preview's linear
    map); without it each preview is a full VAE decode. `fast`: the fast path's options, taken on a
    GPU only (pipeline.fast); None (the default: the fast path has not yet been checked on a GPU, see
    docs/architecture.md) runs everything eagerly there too.
    """

    preview_every: int = 0
    preview_side: int = 256
    seed: int | None = None
    preview_map: Callable[[torch.Tensor], Image.Image] | None = None
    fast: FastOptions | None = None


@dataclass(frozen=True)
class Step:
    """One step of a loop over the schedule: its index, timestep, and how to show a preview of it."""

    index: int
    timestep: int
    total: int
    stage: Stage
    wants_preview: bool
    _show: Callable[[Step, torch.Tensor], None]

    def preview(self, x0: torch.Tensor) -> None:
        """Show the clean latent [1, C, h, w] the model predicts at this step."""
        self._show(self, x0)


class RunContext:
    """Model access, precision policy, the step iterator, progress and previews for one engine run."""

    def __init__(self, bundle: ModelBundle, cancel: CancelToken, emit: Emit, options: RunOptions = RunOptions()) -> None:
        self.bundle = bundle
        self.cancel = cancel
        self.options = options
        self.generator = torch.Generator(device="cpu")
        if options.seed is not None:
            self.generator.manual_seed(options.seed)
        self._emit = emit
        self._stage = Stage.RESOLVING
        self._total = 0
        self._started = 0.0
        self._text_cache: dict[str, torch.Tensor] = {}
        self._timesteps: dict[int, torch.Tensor] = {}  # on the device, made outside any capture
        self.fast = options.fast if applies(options.fast, bundle.device) else None
        self.graphs: UNetGraphs | None = None
        if self.fast is not None and self.fast.graphs:  # one memory pool for the UNet graphs: one runs at a time
            self.graphs = UNetGraphs(layer_places(bundle.unet), capture_backend(self.fast))
        held = self.fast is not None and self.fast.held_weights and bundle.sampling_unet is not None
        self._sampling_unet = bundle.sampling_unet if held else bundle.unet
        self._captured_precision: str | None = None  # set while a captured optimisation iteration runs

    @property
    def device(self) -> torch.device:
        return self.bundle.device

    # -- precision -----------------------------------------------------------------------------
    def _autocast(self, precise: bool) -> contextlib.AbstractContextManager:
        dtype = self.bundle.sample_dtype
        if precise and self.fast is not None:
            return optimisation_precision(self._captured_precision or self.fast.optimise, self.device)
        if precise or dtype == torch.float32:
            return contextlib.nullcontext()
        if self.fast is not None:  # no cast is cached (the weights never require grad); a graph keeps none
            return torch.autocast(self.device.type, dtype=dtype, cache_enabled=False)
        return torch.autocast(self.device.type, dtype=dtype)

    def unet_noise(
        self, z: torch.Tensor, t: int | torch.Tensor, emb: torch.Tensor, *, precise: bool = False,
        control: ControlState | None = None,
    ) -> torch.Tensor:
        """The UNet's noise prediction in fp32; `precise` runs it in fp32 (for optimisation); `control`
        reaches the attention processors through cross_attention_kwargs. Without gradients, on the
        fast path, the call may be a replay of a captured CUDA graph (pipeline.fast), of the UNet copy
        whose weights are held in the sampling dtype (the same bits: pipeline.held_weights)."""
        unet = self.bundle.unet if precise or torch.is_grad_enabled() else self._sampling_unet

        def noise(z: torch.Tensor, t: int | torch.Tensor, emb: torch.Tensor, control: ControlState | None) -> torch.Tensor:
            kwargs = {"control": control} if control is not None else None
            with self._autocast(precise):
                eps = unet(z, t, encoder_hidden_states=emb, cross_attention_kwargs=kwargs, return_dict=False)[0]
            return eps.float()

        if self.graphs is not None and not torch.is_grad_enabled():
            return self.graphs(noise, z, t, emb, control, precise)
        if self._static_loop_inputs and isinstance(t, int):  # a captured iteration cannot make it from the host
            if t not in self._timesteps:
                self._timesteps[t] = torch.tensor(t, dtype=torch.int64, device=self.device)
            t = self._timesteps[t]
        return noise(z, t, emb, control)

    # -- optimisation ---------------------------------------------------------------------------
    def minimiser(self, params: Sequence[torch.Tensor], loss: Loss, *, capture: bool = True) -> Minimiser:
        """Adam on `params` against `loss`. On the fast path, unless `capture` is False, its iterations are
        captured (pipeline.optimise), into a memory pool of the minimiser's own, released with it, and run
        in the precision `FastOptions.captured_optimise` says."""
        fast = self.fast
        if fast is None or not fast.optimisation_graphs or not capture:
            return Minimiser(params, loss, self.cancel)

        def in_precision() -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
            self._captured_precision = fast.captured_optimise
            try:
                return loss()
            finally:
                self._captured_precision = None

        return Minimiser(params, in_precision, self.cancel, capture_backend(fast))

    def loop_inputs(self) -> LoopInputs:
        """The inputs of a minimiser's loss (pipeline.optimise.LoopInputs), static on the fast path."""
        return LoopInputs(self.device, static=self._static_loop_inputs)

    @property
    def _static_loop_inputs(self) -> bool:
        """Whether optimisation loops keep their inputs in static device tensors, as a captured iteration
        needs: on the fast path with `optimisation_graphs`, for every loop (those that `minimiser` does not
        capture, the mapping training's, get the same bits either way)."""
        return self.fast is not None and self.fast.optimisation_graphs

    # -- text and images ------------------------------------------------------------------------
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """CLIP embeddings [B, 77, D] in fp32, cached per prompt for the run."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            tok = self.bundle.tokenizer
            ids = tok(missing, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids.to(self.device)
            with torch.no_grad():
                out = self.bundle.text_encoder(ids)[0].float()
            self._text_cache.update(zip(missing, out))
        return torch.stack([self._text_cache[p] for p in prompts])

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """[1,3,H,W] in [-1,1] -> the scaled VAE latent mean (the reference uses the mean, no sampling)."""
        vae = self.bundle.vae
        with torch.no_grad():
            dist = vae.encode(image.to(self.device, torch.float32)).latent_dist
        return dist.mean * vae.config.scaling_factor

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images [B,3,H,W] in [-1,1], fp32 on the CPU."""
        vae = self.bundle.vae
        with torch.no_grad(), self._autocast(False):
            image = vae.decode(latent / vae.config.scaling_factor, return_dict=False)[0]
        return image.float().clamp(-1, 1).cpu()

    # -- the step iterator ----------------------------------------------------------------------
    def steps(self, timesteps: Sequence[int], stage: Stage) -> Iterator[Step]:
        """Iterate a schedule's timesteps (in the order given): cancellation is checked before each
        step, progress reported after it; the caller may preview a step when `wants_preview`."""
        total = len(timesteps)
        every = self.options.preview_every
        self.start_stage(stage, total)
        for i, t in enumerate(timesteps):
            self.cancel.check()
            wants = every > 0 and ((i + 1) % every == 0 or i + 1 == total)
            yield Step(i, int(t), total, stage, wants, self._preview)
            self.advance(i + 1)

    # -- progress -------------------------------------------------------------------------------
    def start_stage(self, stage: Stage, total: int) -> None:
        self._stage, self._total, self._started = stage, total, time.monotonic()
        self._emit(Progress(stage, 0, total, None))

    def advance(self, step: int) -> None:
        elapsed = time.monotonic() - self._started
        eta = elapsed / step * (self._total - step) if step else None
        self._emit(Progress(self._stage, step, self._total, eta))

    def _preview(self, step: Step, x0: torch.Tensor) -> None:
        x0 = x0.detach()
        cheap = self.options.preview_map
        image = cheap(x0) if cheap is not None else from_tensor(self.decode(x0))
        image.thumbnail((self.options.preview_side, self.options.preview_side))
        latent = x0.to("cpu", torch.float16)
        self._emit(Preview(step.stage, step.index + 1, step.total, image, latent, step.timestep))
