"""Which part of the photo an edit works on: the whole photo, or a crop around the region it may change.

Why: the model works at a few hundred pixels. A 1536x1024 photo edited whole is squeezed to 512x320
and the result upsampled: the edited part comes back blurred. When the region an edit may change is
known before it runs, the crop around it is edited at the model's working size instead and pasted
back, feathered, into the untouched photo (pipeline.images.paste_result), so the edited part is as
sharp as the model draws and everything else is the photo's own pixels.

This follows AUTOMATIC1111's "Inpaint area: Only masked" (modules/masking.py `get_crop_region` and
`expand_crop_region`, modules/processing.py `StableDiffusionProcessingImg2Img.init` and
`apply_overlay`): the masked pixels' bounding box, padded by `padding` pixels (its default 32, like
the webui's "Only masked padding"), is grown to the aspect ratio of the picture the model works on
(centred, shifted back inside the photo at its edges), cut out, resized to that working size, and the
result is resized back onto the box and laid over the photo through the mask. Departures: the
working size is the crop's own (longest side `max_side`, the other side the multiple of 64 nearest
its aspect, pipeline.images.working_size) rather than a width and height fixed beforehand; the
padding is at least the feather plus one pixel, so the feathered edge lies inside the box; and the
result is laid in through `feather_alpha`'s exact ramp (the webui blurs the mask with a Gaussian
of `mask_blur` pixels).

What "the region" is, for each kind of input (`InputSpec.bounds`): a mask that bounds what the edit
may change (the painted edit region; KV Inversion's subject mask, which it grows by `mask_grow`
within the crop) is known before the run, so it is cropped around. Blend words give a region only
once the edit's attention maps exist, during the run: an edit with blend words and no such mask is
made whole (its result is still pasted back along the words' region). MasaCtrl's subject masks and
SpecRef's masks steer attention and bound nothing, so they crop nothing.

Mode `None` (automatic) crops only when the photo is larger than the working size: a photo that fits
it is edited at its own resolution already, and a crop would only enlarge part of it beyond its own
pixels (the demo model, trained on whole 128-px scenes, would see a zoomed-in scene it never drew).
`region` crops whenever there is a region; `whole` never does.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from pipeline.images import Box, bounding_box, working_size

MODES = ("whole", "region")
DEFAULT_PADDING = 32
MAX_PADDING = 4096


def region_crop(region: np.ndarray, max_side: int, padding: int = DEFAULT_PADDING, feather: int = 0) -> Box | None:
    """The box of photo pixels to edit for `region` (bool [H, W] at the photo's size): its bounding box
    padded by max(padding, feather + 1) pixels, grown to the aspect of its working size and kept inside
    the photo. None when the region is empty or the box would be the whole photo."""
    height, width = region.shape
    box = bounding_box(region)
    if box is None:
        return None
    pad = max(padding, feather + 1)
    left, top, right, bottom = (max(box[0] - pad, 0), max(box[1] - pad, 0), min(box[2] + pad, width),
                                min(box[3] + pad, height))
    target_w, target_h = working_size(right - left, bottom - top, max_side=max_side)
    if (right - left) * target_h > (bottom - top) * target_w:  # too wide for its working size: taller
        top, bottom = _grow(top, bottom, round((right - left) * target_h / target_w), height)
    else:
        left, right = _grow(left, right, round((bottom - top) * target_w / target_h), width)
    box = (left, top, right, bottom)
    return None if box == (0, 0, width, height) else box


def _grow(start: int, end: int, wanted: int, limit: int) -> tuple[int, int]:
    """The span [start, end) grown about its centre to `wanted` pixels, shifted back inside [0, limit)
    (and cut to it, when `wanted` is more than there is)."""
    extra = max(wanted - (end - start), 0)
    start, end = start - extra // 2, end + extra - extra // 2
    if end > limit:
        start, end = start - (end - limit), limit
    return max(start, 0), end


def choose_crop(mode: str | None, regions: Iterable[np.ndarray], photo_size: tuple[int, int], max_side: int,
                padding: int = DEFAULT_PADDING, feather: int = 0) -> Box | None:
    """The crop an edit works on (None: the whole photo), by the rule of the module docstring, from the
    masks known before the run that bound what it may change."""
    if mode not in (None, *MODES):
        raise ValueError(f"area mode must be one of {MODES} or None, not {mode!r}")
    regions = list(regions)
    if mode == "whole" or not regions or (mode is None and max(photo_size) <= max_side):
        return None
    return region_crop(np.logical_or.reduce(regions), max_side, padding, feather)
