"""SpecRef's specific-reference attention (Specific Reference Condition Real Image Editing; public code:
jingjiqinggong/specp2p) as controllers of the attention contract.

Three controllers:

- `KeyValueRecorder` observes a run (the reference picture's DDIM inversion) and keeps the keys and
  values its one row gives each controlled self-attention layer at every step, in fp16 on the CPU,
  filed by timestep: index i belongs to the schedule's i-th (descending) timestep, which is the
  timestep of the edit's step i. It changes nothing (the contract's rewrite phase, read only).
- `TargetWordRegion` gives mask_t: where the target's chosen words attend.
- `ReferenceAttention` is the SR-attention: in the controlled layers and steps, the queries of the
  target's conditional row attend, once more, to the stored reference keys and values of the call's
  timestep, keys outside mask_s (the reference object) hidden; inside mask_t that attention's output
  replaces the row's own output, elsewhere the own output stays:
  out = out_ref * mask_t + out_own * (1 - mask_t). The own output is whatever the other controllers
  made of the row (Prompt-to-Prompt's self-attention replacement included), so with mask_t or mask_s
  empty the call is exactly the plain P2P one.

This is an output rewrite, not an extension of the key axis: the authors compute the reference
attention on its own (a softmax over the reference's keys only) and blend outputs, so nothing needs to
append keys to one row of the call. Only the target's conditional row is touched, as in the authors'
default (their `useuncond` off).

Masks are resized to each layer's grid with nearest-neighbour interpolation and thresholded at 0.5,
as the authors do (from latent size, where the engine brings every mask; theirs start at 512 px).
Where a grid leaves mask_s or mask_t empty, that layer runs without reference attention (a softmax
over no key is undefined; the authors' -max fill would give a uniform average).

mask_t from words, and the authors' running mean: their store of 16x16 cross-attention maps is never
cleared, so the map at step i is the mean over every 16x16 call of steps 0..i (their figures were
made with it). We keep that on purpose, as a running sum (one [queries] tensor instead of a list
that grows by five [4, 256, 77] maps a step): it is the same average P2P's local blend takes, and it
keeps mask_t from flickering between steps. The maps are those of the target's conditional row after
the P2P editor has edited them (the store runs after the editor, as theirs reads the controller's
output): during cross-attention replacement the target word looks where the source word looked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from pipeline.control.contract import AttentionCall, Controller, attend, key_bias
from pipeline.control.masactrl import controls_layer, grid_mask
from pipeline.control.p2p import BLEND_LEVEL
from pipeline.control.places import LayerPlace

Grid = tuple[int, int]
Region = Callable[[int, Grid], "torch.Tensor | None"]
"""mask_t: (step, a layer's grid) -> the queries [h*w] (bool) that take the reference (maybe none), or
None where none can (no map yet, an empty painted mask)."""
KV_PREFIX = "reference_kv."
"""Stored tensors: KV_PREFIX + transformer index -> [steps, 2 (key, value), heads, tokens, head_dim] fp16."""
TIMESTEPS = "reference_timesteps"
"""Stored tensor: the timesteps [steps] (descending) that index i of every KV tensor belongs to."""


def stored_reference(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[int, torch.Tensor], list[int]]:
    """The per-layer key/value tensors and their timesteps from a stored tuning."""
    layers = {int(name[len(KV_PREFIX):]): t for name, t in tensors.items() if name.startswith(KV_PREFIX)}
    return layers, [int(t) for t in tensors[TIMESTEPS].tolist()]


@dataclass
class KeyValueRecorder(Controller):
    """Keeps the keys and values row `row` gives the controlled self-attention layers at every timestep.

    Storage is allocated once per layer on the first call ([steps, 2, heads, tokens, head_dim], fp16 on
    the CPU) and each call's k and v are copied into their slot, so nothing of them stays on the GPU.
    Never captured as a CUDA graph (graph_safe stays False): each call copies to the host.
    """

    layers: str
    timesteps: Sequence[int]
    row: int = 0
    _store: dict[int, torch.Tensor] = field(default_factory=dict)
    _filled: set[tuple[int, int]] = field(default_factory=set)

    def active(self, place: LayerPlace, step: int) -> bool:
        return controls_layer(place, self.layers)

    def rewrite(self, call: AttentionCall) -> None:
        index = list(self.timesteps).index(call.timestep)
        layer = call.place.transformer
        k, v = call.k[self.row], call.v[self.row]
        store = self._store.get(layer)
        if store is None:
            store = self._store[layer] = torch.empty(len(self.timesteps), 2, *k.shape, dtype=torch.float16)
        store[index, 0].copy_(k.detach())
        store[index, 1].copy_(v.detach())
        self._filled.add((layer, index))

    def tensors(self) -> dict[str, torch.Tensor]:
        """What the project stores (see KV_PREFIX, TIMESTEPS); every layer must have every timestep."""
        missing = len(self._store) * len(self.timesteps) - len(self._filled)
        if not self._store or missing:
            raise RuntimeError(f"the reference's keys and values are incomplete ({missing} layer-steps missing)")
        named = {f"{KV_PREFIX}{layer}": store for layer, store in sorted(self._store.items())}
        return {**named, TIMESTEPS: torch.tensor(list(self.timesteps), dtype=torch.int64)}


@dataclass
class FixedRegion:
    """A painted mask_t ([1, 1, h, w] at latent size), at each layer's grid."""

    mask: torch.Tensor
    _grids: dict[Grid, torch.Tensor | None] = field(default_factory=dict)

    def __call__(self, step: int, grid: Grid) -> torch.Tensor | None:
        if grid not in self._grids:
            queries = grid_mask(self.mask, grid)
            self._grids[grid] = queries if bool(queries.any()) else None
        return self._grids[grid]


@dataclass
class TargetWordRegion(Controller):
    """mask_t from where the target's `words` attend (see the module doc for the running mean).

    It stores, from the target's conditional row of the cross-attention layers at BLEND_LEVEL in the
    down and up blocks (16x16 at 512 px), the maps averaged over heads and summed over the words'
    tokens; the region is that sum, min-max normalised, resized to a layer's grid (nearest) and
    thresholded. The sum is kept in place in the tensor of the first call, and the region is formed
    from it at every call that asks (no cache keyed by host state), so a CUDA graph that replays
    calls sees the sum grow; an empty region is an all-False tensor, never decided on the host.
    """

    graph_safe: ClassVar[bool] = True

    words: torch.Tensor  # [77] 0/1: the words' token positions in the target prompt
    threshold: float = 0.5
    target: int = 1
    _sum: torch.Tensor | None = None
    _grid: Grid = (0, 0)

    def active(self, place: LayerPlace, step: int) -> bool:
        return place.kind == "cross" and place.block != "mid" and place.level == BLEND_LEVEL

    def prob_rows(self, call: AttentionCall) -> tuple[int]:
        return (call.layout.select("cond", self.target)[0],)

    def edit_probs(self, call: AttentionCall, rows: Sequence[int], probs: torch.Tensor) -> torch.Tensor:
        row = probs[rows.index(self.prob_rows(call)[0])].float().mean(0)  # [queries, 77]
        maps = row @ self.words.to(row)
        if self._sum is None:
            self._sum = maps
        else:
            self._sum.add_(maps)
        self._grid = call.spatial
        return probs

    def __call__(self, step: int, grid: Grid) -> torch.Tensor | None:
        if self._sum is None:
            return None  # no map yet (a layer that runs before the first 16x16 cross-attention)
        maps = self._sum.view(1, 1, *self._grid)
        low, high = maps.amin(), maps.amax()
        maps = (maps - low) / (high - low).clamp_min(torch.finfo(maps.dtype).tiny)
        return F.interpolate(maps, size=grid, mode="nearest").flatten() >= self.threshold


@dataclass
class ReferenceAttention(Controller):
    """SR-attention (see the module doc) in the layers `reference` holds and the steps [span).

    reference: transformer index -> [steps, 2, heads, tokens, head_dim] (fp16, on the CPU), filed by
    `timesteps`. Only the current step's slices are on the GPU: before each step (`begin_step`) they
    are copied into one device buffer per layer, which every step reuses (and a CUDA graph reads).
    """

    graph_safe: ClassVar[bool] = True

    reference: Mapping[int, torch.Tensor]
    timesteps: Sequence[int]
    span: tuple[int, int]
    object_mask: torch.Tensor  # mask_s, [1, 1, h, w] at latent size
    region: Region  # mask_t
    target: int = 1
    _keys: dict[Grid, torch.Tensor | None] = field(default_factory=dict)
    _step: int = -1
    _loaded: dict[int, torch.Tensor] = field(default_factory=dict)

    def active(self, place: LayerPlace, step: int) -> bool:
        return place.kind == "self" and place.transformer in self.reference and self.span[0] <= step < self.span[1]

    def begin_step(self, step: int, timestep: int, device: torch.device) -> None:
        if step == self._step or not self.span[0] <= step < self.span[1]:
            return
        try:
            index = list(self.timesteps).index(timestep)
        except ValueError:
            raise ValueError(f"no reference keys were recorded at timestep {timestep}") from None
        for layer, stored in self.reference.items():
            if layer not in self._loaded:
                self._loaded[layer] = torch.empty(stored.shape[1:], dtype=stored.dtype, device=device)
            self._loaded[layer].copy_(stored[index])
        self._step = step

    def rewrite_output(self, call: AttentionCall, out: torch.Tensor) -> torch.Tensor:
        keys = self._object_keys(call.spatial)
        queries = self.region(call.step, call.spatial) if keys is not None else None
        if queries is None:
            return out
        kv = self._kv(call)
        if kv.shape[-2] != call.q.shape[-2]:
            raise ValueError(f"the reference has {kv.shape[-2]} tokens at {call.place.name}, the photo "
                             f"{call.q.shape[-2]}: it was recorded at another size")
        t = call.layout.select("cond", self.target)[0]
        bias = key_bias(keys, call.q.dtype).view(1, 1, 1, -1)
        ref = attend(call.q[t : t + 1], kv[None, 0], kv[None, 1], bias)[0]
        out = out.clone()
        out[t] = torch.where(queries[:, None], ref.to(out.dtype), out[t])
        return out

    def _object_keys(self, grid: Grid) -> torch.Tensor | None:
        """mask_s at a grid as the reference keys to keep, or None when the grid leaves none."""
        if grid not in self._keys:
            keys = grid_mask(self.object_mask, grid)
            self._keys[grid] = keys if bool(keys.any()) else None
        return self._keys[grid]

    def _kv(self, call: AttentionCall) -> torch.Tensor:
        """This layer's [2, heads, tokens, head_dim] of the call's timestep, in the call's dtype."""
        if call.step != self._step:  # a caller that skipped begin_step (one UNet call on its own)
            self.begin_step(call.step, call.timestep, call.q.device)
        return self._loaded[call.place.transformer].to(call.q.dtype)
