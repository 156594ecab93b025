"""Where each attention layer of an SD 1.x UNet sits, derived from diffusers' processor names.

Controllers choose layers by place (block, self or cross, resolution level, transformer index), never
by position in `unet.attn_processors`, whose order is down, up, mid rather than execution order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from diffusers import UNet2DConditionModel

_NAME = re.compile(
    r"^(?:(?P<block>down|up)_blocks\.(?P<bi>\d+)|mid_block)\.attentions\.(?P<ai>\d+)"
    r"\.transformer_blocks\.(?P<ti>\d+)\.attn(?P<kind>[12])\.processor$"
)
_BLOCK_ORDER = {"down": 0, "mid": 1, "up": 2}


@dataclass(frozen=True)
class LayerPlace:
    """Where an attention layer sits in the UNet.

    level: 0 at the latent's own resolution, 1 at half of it, and so on (SD 1.x at 512x512: level
    0 is 64x64, 1 is 32x32, 2 is 16x16, 3 is 8x8). index: position among all attention layers in
    execution order (down, mid, up). transformer: position among transformer blocks in execution
    order (the 16 layers MasaCtrl and SpecRef count).
    """

    name: str
    block: Literal["down", "mid", "up"]
    kind: Literal["self", "cross"]
    level: int
    index: int
    transformer: int


def layer_places(unet: UNet2DConditionModel) -> list[LayerPlace]:
    """The places of all attention layers, in execution order, derived from processor names."""
    n_down = len(unet.config.down_block_types)
    n_up = len(unet.config.up_block_types)
    parsed = []
    for name in unet.attn_processors:
        m = _NAME.match(name)
        if m is None:
            raise ValueError(f"unexpected attention layer {name!r}: not an SD 1.x UNet")
        block = m["block"] or "mid"
        bi = int(m["bi"]) if m["bi"] is not None else 0
        level = {"down": bi, "mid": n_down - 1, "up": n_up - 1 - bi}[block]
        order = (_BLOCK_ORDER[block], bi, int(m["ai"]), int(m["ti"]))
        parsed.append((order, int(m["kind"]), name, block, level))
    parsed.sort()
    transformers = {order: i for i, order in enumerate(sorted({p[0] for p in parsed}))}
    return [
        LayerPlace(name, block, "self" if kind == 1 else "cross", level, index, transformers[order])
        for index, (order, kind, name, block, level) in enumerate(parsed)
    ]
