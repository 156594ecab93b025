"""The attention contract: what a controller sees of one attention call, and what it may change.

Every method Retake implements is some change to attention: Prompt-to-Prompt edits probabilities,
MasaCtrl and SpecRef swap or add keys and values, KV Inversion learns keys and values with gradients,
StyleDiffusion changes the value input, P2Plus edits the unconditional rows. One contract serves them
all. A controller works on one `AttentionCall` (its place, step and timestep, the row layout, q, k, v
per head and the additive mask) in three optional phases, run in the order the controllers are given:

1. `rewrite(call)`: replace `call.k`, `call.v` or `call.bias` for the rows it names (from another row,
   from stored or learned tensors), or only observe q, k, v (a store).
2. `edit_probs(call, rows, probs)`: read or edit the probabilities of the rows it asked for with
   `prob_rows(call)` (unconditional rows too). Probabilities are formed only for rows some active
   controller asks for; every other row runs through SDPA on the (possibly rewritten) k and v.
3. `rewrite_output(call, out)`: replace the attention output of rows (masked variants that combine
   two attentions, extra reference keys under a mask).

Nothing here detaches or runs under no_grad, so gradients reach learned tensors a controller puts in
k or v. Per-call state (controllers, layout, step) arrives with the UNet call as a `ControlState` in
`cross_attention_kwargs`; the installed processors hold no run state, so two runs never share any.

A UNet call may be captured once as a CUDA graph and replayed at later steps (pipeline.fast): the
Python of the call then runs only at capture. A controller that allows it says so (`graph_safe`) and
keeps to three rules: whatever its Python decides per call depends on the place and step alone and
is named by `graph_key`; anything that changes from step to step reaches the kernels as data
(`AttentionCall.per_step` for a table with one row per step, `begin_step` to copy a step's stored
tensors into buffers the graph reads); state kept across steps is updated in place in tensors made
outside a capture (every controller's first active call runs eagerly). It never reads a tensor's value
on the host during a call (`.item()`, `bool(t)`): decisions on values are made with `torch.where`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from pipeline.control.places import LayerPlace

Branch = Literal["uncond", "cond"]


@dataclass(frozen=True)
class Row:
    """One row of the UNet batch: its guidance branch and which prompt (0 = source, 1 = target, ...)."""

    branch: Branch
    prompt: int


@dataclass(frozen=True)
class RowLayout:
    """The rows of one UNet call, in batch order."""

    rows: tuple[Row, ...]

    @classmethod
    def guided(cls, prompts: int) -> RowLayout:
        """Classifier-free guidance batch: [uncond 0..n-1, cond 0..n-1]."""
        return cls(tuple(Row(b, p) for b in ("uncond", "cond") for p in range(prompts)))

    @classmethod
    def single(cls, branch: Branch, prompts: int) -> RowLayout:
        """One branch only (guidance 1, or one half of an optimisation step)."""
        return cls(tuple(Row(branch, p) for p in range(prompts)))

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, branch: Branch | None = None, prompt: int | None = None) -> list[int]:
        """Batch indices of the rows of this branch and/or prompt."""
        return [i for i, r in enumerate(self.rows)
                if (branch is None or r.branch == branch) and (prompt is None or r.prompt == prompt)]

    def pairs(self, source: int, target: int) -> list[tuple[int, int]]:
        """(source row, target row) index pairs within each branch present in both prompts."""
        out = []
        for branch in ("uncond", "cond"):
            s, t = self.select(branch, source), self.select(branch, target)
            if s and t:
                out.append((s[0], t[0]))
        return out


@dataclass
class AttentionCall:
    """One attention call as controllers see it; q, k, v are [batch, heads, tokens, head_dim].

    `bias` is an additive mask broadcastable to [batch, heads, queries, keys] (-inf hides a key), or
    None. `spatial` is the query grid (h, w) of self-attention and cross-attention alike.
    `step_index` is the step as a one-element int64 tensor on the device when the call is captured as
    a CUDA graph (None otherwise); read per-step tables with `per_step`, never by `step` directly.
    """

    place: LayerPlace
    step: int
    timestep: int
    layout: RowLayout
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    bias: torch.Tensor | None
    scale: float
    spatial: tuple[int, int]
    step_index: torch.Tensor | None = None

    def per_step(self, table: torch.Tensor) -> torch.Tensor:
        """table[step] of a tensor with one row per step: indexed by the step as data under a CUDA graph."""
        if self.step_index is None:
            return table[self.step]
        return table.index_select(0, self.step_index)[0]


class Controller:
    """A controller that does nothing; subclasses override the phases they need (see the module doc)."""

    graph_safe: ClassVar[bool] = False
    """Whether a call it takes part in may be captured as a CUDA graph (see the module doc)."""

    def active(self, place: LayerPlace, step: int) -> bool:
        """Whether this controller takes part in the call at `place` and `step`."""
        return False

    def graph_key(self, place: LayerPlace, step: int) -> Hashable:
        """Everything the Python of a call at `place` and `step` decides: calls with equal keys at every
        place may share one CUDA graph. By default, whether the controller is active."""
        return self.active(place, step)

    def begin_step(self, step: int, timestep: int, device: torch.device) -> None:
        """Before each UNet call of a step (outside any graph): copy what this step reads into the
        buffers the calls use. Called once per call; repeat calls within a step must be cheap."""

    def rewrite(self, call: AttentionCall) -> None:
        """Replace call.k / call.v / call.bias for some rows, or observe q, k, v."""

    def prob_rows(self, call: AttentionCall) -> Sequence[int]:
        """Batch rows whose probabilities this controller reads or edits in `edit_probs`."""
        return ()

    def edit_probs(self, call: AttentionCall, rows: Sequence[int], probs: torch.Tensor) -> torch.Tensor:
        """probs [len(rows), heads, queries, keys] of `rows` (sorted batch indices); return them, edited or not."""
        return probs

    def rewrite_output(self, call: AttentionCall, out: torch.Tensor) -> torch.Tensor:
        """out [batch, heads, queries, head_dim] before the output projection; return it, edited or not."""
        return out


@dataclass(frozen=True)
class ControlState:
    """What the processors need for one UNet call: the controllers, the row layout and the step."""

    controllers: tuple[Controller, ...]
    layout: RowLayout
    step: int
    timestep: int
    latent_size: tuple[int, int]
    step_index: torch.Tensor | None = None
    """The step as a device tensor when the call is captured as a CUDA graph (AttentionCall.per_step)."""

    def active(self, place: LayerPlace) -> list[Controller]:
        return [c for c in self.controllers if c.active(place, self.step)]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """SDPA at the default 1/sqrt(head_dim) scale, exactly as diffusers' AttnProcessor2_0 calls it."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=0.0, is_causal=False)


def probabilities(q: torch.Tensor, k: torch.Tensor, scale: float, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + bias) in q's dtype, formed as diffusers' `get_attention_scores` forms it."""
    b, h, n, d = q.shape
    keys = k.shape[2]
    if bias is None:
        base, beta = q.new_empty(b * h, n, keys), 0.0
    else:
        base, beta = bias.expand(b, h, n, keys).reshape(b * h, n, keys).to(q.dtype), 1.0
    scores = torch.baddbmm(base, q.reshape(b * h, n, d), k.reshape(b * h, keys, d).transpose(-1, -2),
                           beta=beta, alpha=scale)
    return scores.softmax(dim=-1).to(q.dtype).view(b, h, n, keys)


def take_rows(tensor: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
    """tensor[rows] along the first axis without an index tensor made from host data (on a GPU a copy
    from host memory, which a CUDA graph cannot capture): a view for a rising run, else the rows stacked."""
    rows = list(rows)
    if rows and rows == list(range(rows[0], rows[-1] + 1)):
        return tensor[rows[0] : rows[-1] + 1]
    return torch.stack([tensor[r] for r in rows])


def put_rows(tensor: torch.Tensor, rows: Sequence[int], values: torch.Tensor) -> None:
    """tensor[rows] = values (one row each, or one row for all) in place, as `take_rows` reads them."""
    for i, row in enumerate(rows):
        tensor[row] = values[i if values.shape[0] > 1 else 0]


def key_bias(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive bias [..., keys] that hides keys where `keep` is False (0 elsewhere)."""
    bias = torch.zeros(keep.shape, dtype=dtype, device=keep.device)
    return bias.masked_fill(~keep, float("-inf"))
