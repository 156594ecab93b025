"""StyleDiffusion's inversion (Li et al.): one mapping network per step, from the photo's CLIP image
features to the value input of cross-attention, trained so guided sampling retraces DDIM inversion.

For step i (timestep t, from T down) the network M_i turns the image features [1, N, D] (N tokens of
width D) into two [1, 77, D] halves a, b, and the conditional branch's cross-attention values are
computed from c * a + b (c the prompt's embedding) instead of from c; the keys keep c, the
unconditional branch keeps "". The layers, as in the authors' code (sen-mao/StyleDiffusion):
Conv1d(N -> 154, k=1), then Conv1d(154 -> 154, k=1) + BatchNorm1d(154) + LeakyReLU(0.01), then
Conv1d(154 -> 154, k=1), over the tokens as channels (N = 197 for ViT-B/16 at 224 px).

Training step i, as the authors' code does it: start from network i-1 (network 0 from PyTorch's
default initialisation; the paper's N(0, 0.01) is not what the code does), Adam with learning rate
1e-2 * (1 - i/100), ceil(inner * exp(-0.1 i)) iterations (inner = 100: 100, 91, 82, ... about 1000
at 30 steps), each a guided DDIM step at 7.5 from the current latent with the "" embedding's noise
computed once without gradients, loss = MSE to z*_{t-1} + weight * the sum over the 16x16 (at 512 px)
cross-attention layers of the down and up blocks of the MSE between the maps and those DDIM inversion
made (weight 1); stop early below 1e-5 + i * 2e-5; then advance the latent with the trained network.
Everything runs in fp32 (TF32 matrix products on the fast path; the iterations are never captured,
see train_mappings). For
step counts other than the authors' 30, i is scaled by 30 / steps in the
learning rate, the iteration count and the tolerance, so they keep their start and end values.

Departures, on purpose:
- The attention targets are paired by timestep, as the paper's loss states (the maps of the
  inversion step that produced z*_t, which ran at timestep t, for the training step at t). The
  authors' code pairs them by latent instead (the maps of the inversion step that started from
  z*_t, one timestep lower), repeating the last map for the first step, which has none.
- BatchNorm always normalises with the statistics of its input (the 768 feature values of each
  channel): the authors' networks never leave train mode, in editing as in training, so their
  running averages are never used. Here they are not kept at all (track_running_stats=False), so
  a network is exactly its parameters and round-trips through a project bit for bit.
- Network 0's initialisation is drawn from a generator seeded 0, not the global random state: the
  inversion is a function of its key alone.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.control.value_input import CrossMaps, ValueInput, value_projections
from pipeline.events import Stage
from pipeline.run import RunContext, Step
from pipeline.sampling import DDIMSchedule, guided_noise, move

REFERENCE_STEPS = 30
TOKENS = 77
PREFIX = "mapping."
"""Stored tensor names: PREFIX + parameter name, stacked over the steps ([steps, ...])."""


class MappingNetwork(nn.Module):
    """M_i: image features [1, N, D] -> (a, b), each [1, 77, D]."""

    def __init__(self, tokens_in: int, tokens_out: int = TOKENS) -> None:
        super().__init__()
        hidden = 2 * tokens_out
        self.conv_start = nn.Conv1d(tokens_in, hidden, kernel_size=1)
        self.conv_block = nn.Conv1d(hidden, hidden, kernel_size=1)
        self.norm = nn.BatchNorm1d(hidden, affine=True, track_running_stats=False)
        self.conv_end = nn.Conv1d(hidden, hidden, kernel_size=1)

    def reset(self, generator: torch.Generator) -> MappingNetwork:
        """PyTorch's default Conv1d initialisation (weights and biases uniform in +-1/sqrt(fan_in)),
        drawn from `generator`; BatchNorm starts as the identity (weight 1, bias 0)."""
        with torch.no_grad():
            for conv in (self.conv_start, self.conv_block, self.conv_end):
                bound = 1.0 / math.sqrt(conv.in_channels * conv.kernel_size[0])
                for tensor in (conv.weight, conv.bias):
                    tensor.copy_(torch.empty(tensor.shape).uniform_(-bound, bound, generator=generator))
            self.norm.reset_parameters()
        return self

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv_start(features)
        x = F.leaky_relu(self.norm(self.conv_block(x)))
        return self.conv_end(x).chunk(2, dim=1)

    def value_input(self, features: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """c * a + b for a prompt embedding c [1, 77, D]."""
        a, b = self(features)
        return embedding * a + b


def inner_iterations(inner: int, steps: int) -> list[int]:
    """Iterations per step: ceil(inner * exp(-0.1 i)), i scaled to the authors' 30 steps."""
    return [math.ceil(inner * math.exp(-0.1 * i * REFERENCE_STEPS / steps)) for i in range(steps)]


def to_tensors(networks: list[MappingNetwork]) -> dict[str, torch.Tensor]:
    """The networks' parameters stacked over the steps, as PREFIX + name -> [steps, ...]."""
    states = [network.state_dict() for network in networks]
    return {PREFIX + name: torch.stack([state[name] for state in states]).detach() for name in states[0]}


def from_tensors(tensors: dict[str, torch.Tensor], device: torch.device) -> list[MappingNetwork]:
    """The networks stored by `to_tensors` (frozen, on `device`)."""
    stacked = {name.removeprefix(PREFIX): t for name, t in tensors.items() if name.startswith(PREFIX)}
    steps, hidden, tokens_in = stacked["conv_start.weight"].shape[:3]
    networks = []
    for i in range(steps):
        network = MappingNetwork(tokens_in, hidden // 2)
        network.load_state_dict({name: t[i] for name, t in stacked.items()})
        networks.append(network.requires_grad_(False).to(device))
    return networks


class MappingResult(NamedTuple):
    """The trained networks, the latents z_T..z_0 they reached, and what training measured."""

    networks: list[MappingNetwork]
    latents: torch.Tensor  # [steps + 1, C, h, w], from z_T down
    losses: torch.Tensor  # [steps, 2, 2]: per step, (latent, attention) loss at the first and the last iteration


def train_mappings(
    ctx: RunContext,
    schedule: DDIMSchedule,
    trajectory: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    features: torch.Tensor,
    maps: dict[int, list[torch.Tensor]],
    *,
    scale: float,
    inner: int,
    early_stop: bool = True,
    attention_weight: float = 1.0,
    stage: str = Stage.VALUE_MAPPING,
) -> MappingResult:
    """Train one mapping network per step (see the module doc), in fp32.

    trajectory: z*_0..z*_T [steps + 1, C, h, w]; cond, uncond: [1, 77, D]; features: [1, N, D];
    maps: the DDIM inversion's CrossMaps by inversion step (step k ran at timestep timesteps[T-1-k]).
    """
    steps = schedule.steps
    device = ctx.device
    projections = value_projections(ctx.bundle.unet)
    cond, uncond, features = cond.float(), uncond.float(), features.float().to(device)
    iterations = inner_iterations(inner, steps)
    network = MappingNetwork(features.shape[1], cond.shape[1]).reset(torch.Generator().manual_seed(0)).to(device)
    z = trajectory[-1:].float().to(device)
    networks, reached, measured = [], [z], []
    for step in ctx.steps(schedule.timesteps, stage):
        i, t = step.index, step.timestep
        progress = i * REFERENCE_STEPS / steps
        if i > 0:
            network = copy.deepcopy(networks[-1])
        network.requires_grad_(True)
        target = trajectory[steps - i - 1 : steps - i].float().to(device)
        target_maps = [m.to(device) for m in maps[steps - 1 - i]]  # the inversion step at this timestep
        with torch.no_grad():
            eps_uncond = ctx.unet_noise(z, t, uncond, precise=True)

        coefficients = schedule.step_coefficients(t)  # numbers, not read from a tensor in a captured call

        def loss(network: MappingNetwork = network, step: Step = step, z: torch.Tensor = z,
                 eps_uncond: torch.Tensor = eps_uncond, target: torch.Tensor = target,
                 target_maps: list[torch.Tensor] = target_maps,
                 coefficients: tuple[float, ...] = coefficients) -> tuple[torch.Tensor, torch.Tensor]:
            recorder = CrossMaps()
            value = ValueInput(projections, {(step.index, 0): network.value_input(features, cond)[0]})
            eps_cond = guided_noise(ctx, z, step, cond, None, 1.0, [value, recorder], precise=True)
            eps = eps_uncond + scale * (eps_cond - eps_uncond)
            latent_loss = F.mse_loss(move(z, eps, coefficients), target)
            attention_loss = sum(F.mse_loss(m, g) for m, g in
                                 zip(recorder.maps[step.index], target_maps, strict=True))
            return latent_loss + attention_weight * attention_loss, torch.stack([latent_loss, attention_loss])

        # a minimiser per step (each step trains its own network), never captured: one graph per step grew
        # the graphs' memory pools past 31 GiB on an H100 at 512 px and ran out of memory
        # (bench/results/speed-h100-2026-12-06/README.md)
        minimiser = ctx.minimiser(list(network.parameters()), loss, capture=False)
        minimiser.restart(1e-2 * (1.0 - progress / 100.0))
        descent = minimiser.run(iterations[i], 1e-5 + progress * 2e-5 if early_stop else None)
        assert descent.figures is not None
        measured.append(torch.stack([descent.figures[0], descent.figures[descent.last]]))
        networks.append(network.requires_grad_(False))
        with torch.no_grad():
            value = ValueInput(projections, {(i, 0): network.value_input(features, cond)[0]})
            eps = guided_noise(ctx, z, step, cond, uncond, scale, [value], precise=True)
            if step.wants_preview:
                step.preview(schedule.predict_x0(eps, t, z))
            z = schedule.step(eps, t, z)
        reached.append(z)
    losses = torch.stack(measured).cpu() if measured else torch.zeros(0, 2, 2)
    return MappingResult(networks, torch.cat(reached), losses)
