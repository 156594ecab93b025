"""KV Inversion's tuning stage (paper 000, Algorithm 1, stage 2): per-step keys and values that make
guided DDIM sampling of the source prompt retrace the DDIM-inversion trajectory.

For t = T..1: from the current latent z~_t, learn psi_t (pipeline.control.cp_attention) so that one
guided DDIM step with CP-attention lands on the supervision latent z*_{t-1} (equation 3, the squared
error, taken as a mean so that null-text's tolerances apply), then advance with the learned psi_t
(equation 4). Everything that is differentiated runs in fp32.

Choices the paper leaves open (it gives neither initialisation nor stopping rule nor learning rate):

- Initial point: lambda 0, gamma 1 and K-hat, V-hat the source's own keys and values at that step
  (full form) or a zero delta (low-rank form), so the first iterate is the plain guided step and, in
  an edit, plain mutual self-attention. Every step starts there afresh (keys change with t).
- Schedule: null-text inversion's, whose setting (per-step tensors, guidance 7.5, one DDIM step to
  the inversion latent) is the same: Adam, learning rate r * (1 - i/100), at most `inner_steps`
  updates, early stop once the loss is below 1e-5 + i * 2e-5 (scaled to the step count as there).
  Only the first rate r departs from null-text's 1e-2, on measurement: the caller passes it
  (pipeline.methods.kv_inversion.LEARNING_RATES).
- Every iterate's loss is measured before it is updated, and the step keeps the best iterate seen
  (the initial point included), so a tuned step is never worse than the plain step from the same
  latent; null-text keeps its last update, whose loss nobody measured.
- The learned keys and values are rounded to the stored precision (fp16) before the step advances
  with them, so the stored tensors retrace exactly the trajectory the tuning reached.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from pipeline.control.cp_attention import CPAttention, FixedKV, StoredKV, TunableKV
from pipeline.events import Stage
from pipeline.inversion.null_text import reference_schedule
from pipeline.run import RunContext
from pipeline.sampling import DDIMSchedule, guided_noise

STORED_DTYPE = torch.float16


class KVTuningResult(NamedTuple):
    """The learned psi as named tensors (pipeline.control.cp_attention.StoredKV) and the latents
    z~_T..z~_0 that sampling with them reaches."""

    tensors: dict[str, torch.Tensor]
    latents: torch.Tensor  # [steps + 1, C, h, w], from z_T down
    losses: list[float]  # each step's loss at its best iterate (before the fp16 rounding of its psi)


def kv_tune(
    ctx: RunContext,
    schedule: DDIMSchedule,
    trajectory: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    *,
    layers: str,
    form: str,
    rank: int,
    guidance: float,
    inner_steps: int,
    early_stop: bool = True,
    learning_rate: float = 1e-2,
    stage: str = Stage.KV_TUNING,
) -> KVTuningResult:
    """Learn psi_t for every step (fp32).

    trajectory: the supervision z*_0..z*_T as [steps + 1, C, h, w]; cond, uncond: [1, 77, D].
    """
    steps = schedule.steps
    z = trajectory[-1:].float()
    reached, learned, losses = [z], [], []
    for step in ctx.steps(schedule.timesteps, stage):
        i, t = step.index, step.timestep
        rate, tolerance = reference_schedule(i, steps, learning_rate)
        target = trajectory[steps - i - 1 : steps - i].float()
        psi = TunableKV(layers, form, rank, i)
        controller = [CPAttention(psi)]
        best, best_loss = {}, math.inf
        optimiser = None
        for update in range(inner_steps + 1):
            ctx.cancel.check()
            last = update == inner_steps
            with torch.set_grad_enabled(not last):
                eps = guided_noise(ctx, z, step, cond, uncond, guidance, controller, precise=True)
                loss = F.mse_loss(schedule.step(eps, t, z), target)
            value = loss.item()
            if value < best_loss:
                best, best_loss = psi.snapshot(STORED_DTYPE), value
            if last or (early_stop and value < tolerance):
                break
            if optimiser is None:
                optimiser = torch.optim.Adam(psi.parameters(), lr=rate)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            eps = guided_noise(ctx, z, step, cond, uncond, guidance, [CPAttention(FixedKV(i, best))], precise=True)
            if step.wants_preview:
                step.preview(schedule.predict_x0(eps, t, z))
            z = schedule.step(eps, t, z)
        reached.append(z)
        learned.append({layer: psi.to("cpu") for layer, psi in best.items()})  # (gigabytes in the full form)
        losses.append(best_loss)
    return KVTuningResult(StoredKV.stack(learned), torch.cat(reached), losses)
