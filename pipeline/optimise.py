"""Adam on a loss, for the gradient loops (null-text's per-step embeddings, TOLI's text embedding,
StyleDiffusion's mapping networks): eagerly as the authors' code does it, or on the fast path with
`FastOptions.optimisation_graphs` (off by default: pipeline.fast says why) as one captured iteration
replayed.

Eagerly, each iteration is PyTorch's Adam after a backward pass, and an early stop reads the loss on
the host (`loss.item()`), as before the fast path. When captured, the whole iteration (the UNet
forward in fp32, the backward, the Adam update and the early-stop rule) is captured once as a CUDA
graph and replayed: the loss never goes to the host, so a run of iterations is launched without a
single wait for the GPU. The early stop is the same rule decided on the device: the iteration whose
loss is under the tolerance still applies its update, the ones after it change nothing (they run,
and their updates are masked out). The Adam update is written here in tensor operations (the same
formula as PyTorch's `capturable` Adam) so that it can be captured on any device, and the emulated
capture of pipeline.fast can check it on the CPU.

What changes between iterations or between runs of iterations (the latent, the target, the DDIM
coefficients of the step, a fresh noise) reaches a captured iteration through `LoopInputs`: plain
values eagerly, tensors updated in place on the fast path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from pipeline.events import CancelToken
from pipeline.fast import Capture, CaptureFailed

log = logging.getLogger(__name__)
Loss = Callable[[], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]
"""The loss (a scalar), or the loss and a tensor of figures to keep from each iteration (detached)."""
BETAS = (0.9, 0.999)
EPS = 1e-8


class LoopInputs:
    """Named inputs of a loss: the values as given (eagerly), or tensors a captured iteration reads,
    overwritten in place by each `set` (an int becomes an int64 tensor, a float or a tuple of floats a
    float32 one). Numbers are written with `fill_`, which launches a kernel with the number in it: no
    copy from host memory, so setting them never waits for the GPU."""

    def __init__(self, device: torch.device, static: bool) -> None:
        self._device = device
        self._static = static

    def set(self, **values: Any) -> None:
        for name, value in values.items():
            if not self._static:
                setattr(self, name, value)
                continue
            held = self.__dict__.get(name)
            if held is None:
                setattr(self, name, _as_tensor(value, self._device).clone())
            elif isinstance(value, torch.Tensor):
                held.copy_(value.detach())
            elif isinstance(value, (int, float)):
                held.fill_(value)
            else:
                for i, number in enumerate(value):
                    held[i].fill_(number)


def _as_tensor(value: Any, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device)
    if isinstance(value, int):
        return torch.tensor(value, dtype=torch.int64, device=device)
    return torch.tensor(value, dtype=torch.float32, device=device)


class Descent(NamedTuple):
    """What a run of iterations measured: each iteration's loss before its update, the figures the loss
    kept, and the index of the last iteration whose update was applied (eagerly the last one run; on
    the fast path, where every iteration runs, a tensor on the device)."""

    losses: torch.Tensor  # [iterations]
    figures: torch.Tensor | None  # [iterations, ...]
    last: int | torch.Tensor


class Minimiser:
    """Adam on `params` (leaf tensors, updated in place) against `loss`; `run` takes some iterations."""

    def __init__(self, params: Sequence[torch.Tensor], loss: Loss, cancel: CancelToken,
                 capture: Capture | None = None) -> None:
        self.params = list(params)
        self._loss = loss
        self._cancel = cancel
        self._capture = capture
        self._optimiser: torch.optim.Adam | None = None
        self._replay: Callable[[], None] | None = None
        self._warm = False
        if capture is not None:
            device = self.params[0].device
            self._moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.params]
            self._step = torch.zeros((), device=device)
            self._rate = torch.zeros((), device=device)
            self._tolerance = torch.zeros((), device=device)
            self._running = torch.ones((), dtype=torch.bool, device=device)
            self._loss_value = torch.zeros((), device=device)
            self._figures: torch.Tensor | None = None

    def restart(self, rate: float) -> None:
        """A fresh Adam (no moments, step 0) at learning rate `rate`, on the current parameters."""
        if self._capture is None:
            self._optimiser = torch.optim.Adam(self.params, lr=rate)
            return
        for m, v in self._moments:
            m.zero_()
            v.zero_()
        self._step.zero_()
        self._rate.fill_(rate)

    def run(self, iterations: int, tolerance: float | None = None,
            before: Callable[[int], None] | None = None) -> Descent:
        """`iterations` Adam steps (fewer eagerly, once the loss is under `tolerance`: the iteration that
        gets there still updates), `before(i)` setting each one's inputs."""
        losses, figures = [], []
        if self._capture is not None:
            self._tolerance.fill_(-torch.inf if tolerance is None else tolerance)
            self._running.fill_(True)
        for i in range(iterations):
            self._cancel.check()
            if before is not None:
                before(i)
            if self._capture is None:
                loss, kept = _split(self._loss())
                assert self._optimiser is not None, "restart() first"
                self._optimiser.zero_grad(set_to_none=True)
                loss.backward()
                self._optimiser.step()
                losses.append(loss.detach())
                figures.append(kept)
                if tolerance is not None and loss.item() < tolerance:
                    break
            else:
                self._captured_iteration()
                losses.append(self._loss_value.clone())
                figures.append(None if self._figures is None else self._figures.clone())
        if not losses:
            return Descent(torch.zeros(0), None, -1)
        stacked = torch.stack(losses)
        kept = None if figures[0] is None else torch.stack(figures)
        if self._capture is None:
            return Descent(stacked, kept, len(losses) - 1)
        under = stacked < self._tolerance  # the first iteration under the tolerance was the last to update
        every = torch.full((), len(losses) - 1, dtype=torch.int64, device=stacked.device)  # no copy from the host
        return Descent(stacked, kept, torch.where(under.any(), under.int().argmax(), every))

    def _captured_iteration(self) -> None:
        """The first iteration runs eagerly where the capture will run (gradients', cuBLAS's and kernels'
        set-up), the second is captured."""
        assert self._capture is not None
        if self._replay is not None:
            self._replay()
        elif not self._warm:
            self._capture.warm(self._iteration)
            self._warm = True
        else:
            try:
                self._replay, _ = self._capture(self._iteration)  # runs it once
            except CaptureFailed as error:  # the same iteration eagerly
                log.warning("an optimisation step could not be captured as a CUDA graph; it runs eagerly: %s", error)
                self._replay = self._iteration
                self._iteration()

    def _iteration(self) -> None:
        loss, kept = _split(self._loss())
        grads = torch.autograd.grad(loss, self.params)
        with torch.no_grad():
            running = self._running
            self._step.add_(running.float())
            beta1, beta2 = BETAS
            step_size = self._rate / (1 - torch.pow(beta1, self._step))
            correction2 = (1 - torch.pow(beta2, self._step)).sqrt()
            for param, grad, (m, v) in zip(self.params, grads, self._moments, strict=True):
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                update = m / (v.sqrt() / correction2 + EPS) * step_size
                param.sub_(torch.where(running, update, torch.zeros_like(update)))
            self._loss_value.copy_(loss.detach())
            if kept is not None:
                if self._figures is None:  # made at the first (eager) iteration, outside any capture
                    self._figures = torch.empty_like(kept)
                self._figures.copy_(kept)
            running.logical_and_(loss.detach() >= self._tolerance)


def _split(result: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(loss, the figures kept, detached) of what a loss function returned."""
    if isinstance(result, tuple):
        return result[0], result[1].detach()
    return result, None
