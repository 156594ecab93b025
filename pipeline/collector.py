"""Keeping a loaded model out of the garbage collector's walks (for front ends that hold one for long)."""

from __future__ import annotations

import gc


def keep_out_of_collections() -> None:
    """Move every object alive now (torch, diffusers, the model: millions) out of the garbage
    collector's reach. A full collection otherwise walks them all, holding the GIL for 0.1 to 0.45 s
    on a CPU, and the window freezes that long whenever one falls during a run; afterwards it walks
    only what runs create. Called once the model is loaded, after a collection (so no garbage is
    kept for good); `gc.unfreeze()` before the next model lets the old one be collected."""
    gc.collect()
    gc.freeze()
