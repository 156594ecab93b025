"""KV Inversion's content-preserving self-attention (CP-attention; Huang et al., paper 000) as a controller.

In an upgraded self-attention layer l at step t the keys and values of the source rows become

    K-bar = lambda_k K + gamma_k K-hat,    V-bar = lambda_v V + gamma_v V-hat        (paper, eq. 1-2)

where K, V are the layer's own projected keys and values (per head, as the attention contract gives
them) and psi_t = {K-hat, V-hat, lambda_k, lambda_v, gamma_k, gamma_v} is learned per layer and step
(pipeline.inversion.kv_tuning). The queries are never touched.

Choices the paper leaves open, made here:

- Both guidance halves are upgraded: Algorithm 1 passes psi_t to the conditional and to the
  unconditional UNet pass alike. Each half has its own K-hat and V-hat (row 0 unconditional, row 1
  conditional of every learned tensor) because the two halves' keys differ and guidance multiplies
  their difference by 7.5: one shared K-hat would perturb the unconditional branch on every step.
  The four scalar weights are shared by both halves, as the paper writes them (one per layer, step).
- The target rows of an edit take the source rows' K-bar and V-bar of their own half: the paper's
  editing stage keeps the target's queries and "uses the learned (K-bar, V-bar) from the
  corresponding place of the tuning stage"; the reconstruction row beside the target retraces the
  tuning stage, so its K-bar is that one. With the initial psi (lambda 0, gamma 1, K-hat the source's
  own K) this is exactly MasaCtrl's mutual self-attention. Before `start_step` the target rows keep
  their own keys and values (the paper's "step at which CP-attention starts"); the source rows use
  psi at every step, so the reconstruction always retraces the tuning.
- Two forms of K-hat (and V-hat), told apart by the stored tensor names:
  `full`: K-hat itself, [2, heads, tokens, head_dim] per layer and step (the paper's parameters);
  `low-rank`: K-hat = K + L R, the layer's own current K plus a rank-r product of a token factor L
  [2, tokens, r] and a channel factor R [2, r, heads * head_dim]: the delta to the source that the
  tuning learns, stored in (tokens + channels) * r numbers instead of tokens * channels. K is the
  source row's own key in the same call, which an edit recomputes in its reconstruction row.

Layers are chosen by place, as in the paper's ablation: the decoder's self-attention layers (the
paper's best), the encoder's, the middle block's, or all.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import torch

from pipeline.control.contract import AttentionCall, Controller, take_rows
from pipeline.control.places import LayerPlace

LAYER_CHOICES = ("decoder", "encoder", "middle", "all")
FORMS = ("full", "low-rank")
HALVES = ("uncond", "cond")  # index 0 and 1 of every learned per-half tensor
INITIAL_WEIGHTS = (0.0, 0.0, 1.0, 1.0)  # lambda_k, lambda_v, gamma_k, gamma_v
_BLOCKS = {"decoder": "up", "encoder": "down", "middle": "mid"}
_NAME = re.compile(r"^kv\.(?P<layer>\d+)\.(?P<field>weights|[kv]_hat|[kv]_tokens|[kv]_channels)$")


def upgrades_layer(place: LayerPlace, layers: str) -> bool:
    """Whether CP-attention runs at this place for a LAYER_CHOICES choice (self-attention only)."""
    if layers not in LAYER_CHOICES:
        raise ValueError(f"unknown layer choice {layers!r}")
    return place.kind == "self" and (layers == "all" or place.block == _BLOCKS[layers])


@dataclass(frozen=True)
class LearnedKV:
    """psi of one layer at one step.

    weights: [4] = lambda_k, lambda_v, gamma_k, gamma_v. k, v: (K-hat,) of the full form, or
    (token factor, channel factor) of the low-rank form; every tensor has one row per guidance half.
    """

    weights: torch.Tensor
    k: tuple[torch.Tensor, ...]
    v: tuple[torch.Tensor, ...]

    def apply(self, halves: list[int], k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K-bar, V-bar) of the source rows k, v [len(halves), heads, tokens, head_dim] of these halves."""
        lam_k, lam_v, gam_k, gam_v = self.weights.to(k.dtype).unbind()
        return (lam_k * k + gam_k * _hat(self.k, halves, k)), (lam_v * v + gam_v * _hat(self.v, halves, v))

    def to(self, device: torch.device | str) -> LearnedKV:
        """The same psi on another device."""
        return LearnedKV(self.weights.to(device), tuple(t.to(device) for t in self.k),
                         tuple(t.to(device) for t in self.v))

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(field name, tensor) pairs as stored (see StoredKV)."""
        yield "weights", self.weights
        for name, parts in (("k", self.k), ("v", self.v)):
            if len(parts) == 1:
                yield f"{name}_hat", parts[0]
            else:
                yield f"{name}_tokens", parts[0]
                yield f"{name}_channels", parts[1]


def _hat(parts: tuple[torch.Tensor, ...], halves: list[int], own: torch.Tensor) -> torch.Tensor:
    """K-hat for these halves: the stored tensor, or the source's own keys plus the low-rank delta."""
    if len(parts) == 1:
        return take_rows(parts[0], halves).to(own)
    tokens, channels = (take_rows(p, halves).to(own) for p in parts)
    rows, heads, count, head_dim = own.shape
    delta = (tokens @ channels).view(rows, count, heads, head_dim).transpose(1, 2)
    return own + delta


class KVSource(Protocol):
    """Where a CP controller gets psi: learned tensors being tuned, or stored ones."""

    def covers(self, place: LayerPlace, step: int) -> bool: ...

    def begin_step(self, step: int, device: torch.device) -> None:
        """Before a step's UNet calls: bring that step's psi to the device (see Controller.begin_step)."""
        ...

    def learned(self, call: AttentionCall, k: torch.Tensor, v: torch.Tensor) -> LearnedKV:
        """psi at the call's place and step; k, v are the source rows (both halves) before the upgrade."""
        ...


@dataclass
class CPAttention(Controller):
    """Upgrades the source rows' self-attention to CP-attention; from `start_step` on, the target rows
    (if the layout has any) attend with the source rows' upgraded keys and values."""

    graph_safe: ClassVar[bool] = True

    psi: KVSource
    start_step: int = 0
    source: int = 0
    target: int = 1

    def active(self, place: LayerPlace, step: int) -> bool:
        return self.psi.covers(place, step)

    def graph_key(self, place: LayerPlace, step: int) -> Hashable:
        return self.active(place, step), step >= self.start_step

    def begin_step(self, step: int, timestep: int, device: torch.device) -> None:
        self.psi.begin_step(step, device)

    def rewrite(self, call: AttentionCall) -> None:
        layout = call.layout
        present = [(h, rows[0]) for h, branch in enumerate(HALVES) if (rows := layout.select(branch, self.source))]
        halves, rows = [h for h, _ in present], [r for _, r in present]
        k, v = take_rows(call.k, rows), take_rows(call.v, rows)
        psi = self.psi.learned(call, k, v)
        k_bar, v_bar = psi.apply(halves, k, v)
        keys, values = list(call.k.unbind(0)), list(call.v.unbind(0))  # rebuilt, so gradients reach psi
        for i, row in enumerate(rows):
            keys[row], values[row] = k_bar[i], v_bar[i]
        if call.step >= self.start_step:
            for s, t in layout.pairs(self.source, self.target):
                keys[t], values[t] = keys[s], values[s]
        call.k, call.v = torch.stack(keys), torch.stack(values)


class StoredKV:
    """psi of every step from named tensors: `kv.<layer index>.<field>`, each with a leading step axis.

    Fields: `weights` [steps, 4]; full form `k_hat`, `v_hat` [steps, 2, heads, tokens, head_dim];
    low-rank form `k_tokens`, `v_tokens` [steps, 2, tokens, r] and `k_channels`, `v_channels`
    [steps, 2, r, channels]. Names that are not `kv.` tensors (the inversion's latents) are ignored.
    The tensors stay where they are (the project's, on the CPU: the full form is gigabytes); before
    each step its slices are copied into one device buffer per field, which every step reuses (and a
    CUDA graph reads).
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        layers: dict[int, dict[str, torch.Tensor]] = {}
        for name, tensor in tensors.items():
            m = _NAME.match(name)
            if m is not None:
                layers.setdefault(int(m["layer"]), {})[m["field"]] = tensor
        if not layers:
            raise ValueError("no learned keys and values (kv.* tensors) in this inversion")
        self._layers = layers
        self.steps = min(int(f["weights"].shape[0]) for f in layers.values())
        self._staged: dict[int, dict[str, torch.Tensor]] = {}
        self._staged_step = -1

    @property
    def layers(self) -> frozenset[int]:
        return frozenset(self._layers)

    def covers(self, place: LayerPlace, step: int) -> bool:
        return place.index in self._layers and 0 <= step < self.steps

    def begin_step(self, step: int, device: torch.device) -> None:
        if step == self._staged_step or not 0 <= step < self.steps:
            return
        for layer, fields in self._layers.items():
            staged = self._staged.setdefault(layer, {})
            for name, tensor in fields.items():
                if name not in staged:
                    staged[name] = torch.empty(tensor.shape[1:], dtype=tensor.dtype, device=device)
                staged[name].copy_(tensor[step])
        self._staged_step = step

    def learned(self, call: AttentionCall, k: torch.Tensor, v: torch.Tensor) -> LearnedKV:
        if call.step != self._staged_step:  # a caller that skipped begin_step (one UNet call on its own)
            self.begin_step(call.step, k.device)
        f = self._staged[call.place.index]

        def parts(name: str) -> tuple[torch.Tensor, ...]:
            if f"{name}_hat" in f:
                return (f[f"{name}_hat"],)
            return f[f"{name}_tokens"], f[f"{name}_channels"]

        return LearnedKV(f["weights"], parts("k"), parts("v"))

    @staticmethod
    def stack(per_step: list[dict[int, LearnedKV]]) -> dict[str, torch.Tensor]:
        """The named tensors of a list of steps' psi (each step covering the same layers)."""
        out: dict[str, list[torch.Tensor]] = {}
        for step in per_step:
            for layer, psi in sorted(step.items()):
                for name, tensor in psi.tensors():
                    out.setdefault(f"kv.{layer}.{name}", []).append(tensor)
        return {name: torch.stack(tensors) for name, tensors in out.items()}


@dataclass
class FixedKV:
    """psi of one step, for the layers it holds (what tuning advances with)."""

    step: int
    layers: dict[int, LearnedKV]

    def covers(self, place: LayerPlace, step: int) -> bool:
        return step == self.step and place.index in self.layers

    def begin_step(self, step: int, device: torch.device) -> None:
        """psi is on the device already."""

    def learned(self, call: AttentionCall, k: torch.Tensor, v: torch.Tensor) -> LearnedKV:
        return self.layers[call.place.index]


@dataclass
class TunableKV:
    """psi of one step being learned: created at the first call of each upgraded layer (so the first
    iterate is plain self-attention) and handed to an optimiser through `parameters`.

    Initial point: lambda 0, gamma 1; full form K-hat = the source's own K of that call (detached),
    low-rank form token factor 0 and channel factor drawn once per layer from a generator seeded by
    the layer's index (so tuning the same photo twice gives the same tensors), scaled by 1/sqrt(rank)
    so one Adam step moves the delta about as much as it moves one entry of a full K-hat.
    """

    layers: str
    form: str
    rank: int
    step: int
    made: dict[int, LearnedKV] = field(default_factory=dict)

    def covers(self, place: LayerPlace, step: int) -> bool:
        return step == self.step and upgrades_layer(place, self.layers)

    def begin_step(self, step: int, device: torch.device) -> None:
        """psi is made on the device at the first call."""

    def learned(self, call: AttentionCall, k: torch.Tensor, v: torch.Tensor) -> LearnedKV:
        layer = call.place.index
        if layer not in self.made:
            if k.shape[0] != len(HALVES):
                raise ValueError("tuning needs both guidance halves of the source")
            weights = torch.tensor(INITIAL_WEIGHTS, dtype=torch.float32, device=k.device)
            self.made[layer] = LearnedKV(weights.requires_grad_(True), self._start(k, layer), self._start(v, layer))
        return self.made[layer]

    def _start(self, own: torch.Tensor, layer: int) -> tuple[torch.Tensor, ...]:
        if self.form == "full":
            return (own.detach().float().clone().requires_grad_(True),)
        halves, heads, tokens, head_dim = own.shape
        generator = torch.Generator().manual_seed(layer)
        channels = torch.randn(halves, self.rank, heads * head_dim, generator=generator) / self.rank**0.5
        token_factor = torch.zeros(halves, tokens, self.rank, device=own.device)
        return token_factor.requires_grad_(True), channels.to(own.device).requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [t for psi in self.made.values() for _, t in psi.tensors()]

    def snapshot(self, dtype: torch.dtype) -> dict[int, LearnedKV]:
        """Detached copies of the current psi, the learned K/V tensors cast to `dtype` (the stored
        precision), the weights kept in fp32."""
        return {layer: LearnedKV(psi.weights.detach().clone(),
                                 tuple(t.detach().to(dtype, copy=True) for t in psi.k),
                                 tuple(t.detach().to(dtype, copy=True) for t in psi.v))
                for layer, psi in self.made.items()}
