"""Getting pixels in and out of the engine without surprises.

Real photos arrive in every shape a camera, a phone or an editor can produce: rotated by an EXIF
tag, with an alpha channel, as a palette GIF, as 16-bit greyscale, as a CMYK JPEG from a print shop.
Stable Diffusion wants one thing: an RGB tensor in [-1, 1] whose sides are multiples of 64. This
module is the single door between the two, so that every caller (CLI, GUI, project, tests) sees the
same image for the same file, and every failure is an ImageError that names the file and the reason.

Results carry their parameters inside the PNG (`png_with_metadata`) so any saved edit can be
reproduced from the file alone; `save_png` writes them with `files.write_atomically`.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageCms, ImageOps, PngImagePlugin, UnidentifiedImageError

from pipeline.errors import ImageError
from pipeline.files import write_atomically

# PIL's own decompression-bomb bound (about 89 megapixels). Checked against the header before a
# single pixel is decoded, so a 50 kB file that claims to be 100 000 x 100 000 costs nothing.
MAX_PIXELS = 89_478_485

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
"""The file endings of the photos a folder is searched for (a batch's inputs)."""
PNG_METADATA_KEY = "retake"
PNG_PARAMETERS_KEY = "parameters"

# What PIL raises, across its plugins, for a file that is not an image or is damaged inside.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)

_RESIZE = Image.Resampling.LANCZOS


# --------------------------------------------------------------------------------------------------
# Loading


def load_image(path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read an image file as an upright 8-bit RGB image, fully decoded and detached from the file.

    EXIF orientation is applied, transparency is composited on white, an embedded ICC profile is
    converted to sRGB, and every PIL mode (1, L, P, LA, PA, RGBA, CMYK, I;16, I, F, ...) becomes RGB
    with its full range mapped onto 0..255. Any problem raises ImageError naming the file.
    """
    with _open_decoded(path, max_pixels) as img:
        try:
            img = _exif_upright(img)
            rgb = to_rgb(img)
        except _DECODE_ERRORS as exc:
            raise ImageError(f"Cannot read {_name(path)}: its pixels could not be converted to RGB ({exc}).") from exc
    return rgb


def to_rgb(image: Image.Image) -> Image.Image:
    """Return `image` as a new 8-bit RGB image: alpha on white, ICC to sRGB, high bit depths scaled.

    The result carries no ICC profile or EXIF block: its pixels are sRGB and upright by definition.
    """
    mode = image.mode
    icc = image.info.get("icc_profile")
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit files (PNG, TIFF) decode as I;16 or I; their range is 0..65535, not 0..255, so
        # PIL's own conversion would clip almost everything to white.
        grey = np.asarray(image).astype(np.float64)
        out = _grey_to_rgb(np.clip(grey, 0, 65535) * (255.0 / 65535.0))
    elif mode == "F":
        out = _grey_to_rgb(_float_to_byte_range(np.asarray(image, dtype=np.float64)))
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        out = _on_white(image)  # white is white in any RGB space, so the profile still applies
    elif mode == "LAB":
        out = _lab_to_srgb(image)
    elif mode == "P":
        out = image.convert("RGB")
    else:
        out = image
    if icc and out.mode in ("RGB", "CMYK", "L"):
        converted = _icc_to_srgb(out, icc)
        if converted is not None:
            out = converted
    if out.mode != "RGB":
        try:
            out = out.convert("RGB")
        except ValueError as exc:
            raise ImageError(f"Retake cannot use images in the {mode} colour mode.") from exc
    elif out is image:
        out = image.copy()
    out.info.clear()
    return out


def _grey_to_rgb(values: np.ndarray) -> Image.Image:
    """Greyscale array already scaled to 0..255 (float) -> RGB image, rounded not truncated."""
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB")


def _float_to_byte_range(values: np.ndarray) -> np.ndarray:
    """Map a float image onto 0..255: [0, 1] data is scaled, [0, 255] kept, anything else stretched.

    Float images (TIFF, PFM) have no agreed range; these three cases cover normalised data, 8-bit
    data stored as float, and arbitrary measurements. NaN and infinities become black.
    """
    finite = np.isfinite(values)
    values = np.where(finite, values, 0.0)
    if not finite.any():
        return values
    low, high = float(values[finite].min()), float(values[finite].max())
    if low >= 0.0 and high <= 1.0:
        return values * 255.0
    if low >= 0.0 and high <= 255.0:
        return values
    return (values - low) * (255.0 / (high - low))


def _on_white(image: Image.Image) -> Image.Image:
    """Composite any image with transparency over opaque white (dropping alpha would give black)."""
    if image.mode == "La":  # premultiplied grey + alpha: PIL has no conversion for it
        grey, alpha = (np.asarray(image, dtype=np.float64)[..., i] for i in (0, 1))
        straight = np.where(alpha > 0, grey * 255.0 / np.maximum(alpha, 1), 0)
        image = Image.fromarray(
            np.stack([np.clip(np.rint(straight), 0, 255), alpha], axis=2).astype(np.uint8), "LA"
        )
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _icc_to_srgb(image: Image.Image, icc: bytes) -> Image.Image | None:
    """Convert an image with an embedded ICC profile to sRGB; None when there is no usable profile.

    A CMYK JPEG or an Adobe RGB / Display P3 photo looks wrong when its numbers are read as sRGB.
    A damaged or unsupported profile is not worth refusing the photo for: the caller falls back to
    PIL's plain conversion.
    """
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(
            image,
            source,
            ImageCms.createProfile("sRGB"),
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
            outputMode="RGB",
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _lab_to_srgb(image: Image.Image) -> Image.Image:
    try:
        transform = ImageCms.buildTransform(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
        )
        return ImageCms.applyTransform(image, transform)
    except (ImageCms.PyCMSError, ValueError) as exc:
        raise ImageError("Retake cannot convert this Lab colour image to RGB.") from exc


def _exif_upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag. A damaged EXIF block leaves the image as stored."""
    try:
        upright = ImageOps.exif_transpose(image)
    except (*_DECODE_ERRORS, KeyError, TypeError):
        return image
    return image if upright is None else upright


class _open_decoded:
    """Context manager: open `path`, check its size, decode every pixel; map failures to ImageError.

    Decoding happens here, inside the error handling, because PIL opens lazily: a truncated JPEG
    opens fine and only fails when its pixels are read.
    """

    def __init__(self, path: str | os.PathLike[str], max_pixels: int) -> None:
        self._path = path
        self._max_pixels = max_pixels
        self._image: Image.Image | None = None

    def __enter__(self) -> Image.Image:
        path, name = Path(self._path), _name(self._path)
        try:
            if not path.exists():
                raise ImageError(f"Cannot open {name}: the file does not exist.")
            if path.is_dir():
                raise ImageError(f"Cannot open {name}: it is a folder, not an image file.")
            if path.stat().st_size == 0:
                raise ImageError(f"Cannot open {name}: the file is empty.")
            image = Image.open(path)
        except PermissionError as exc:
            raise ImageError(f"Cannot open {name}: Retake is not allowed to read it.") from exc
        except Image.DecompressionBombError as exc:  # PIL's own bound, twice ours: refused before its size is known
            raise ImageError(_too_many_pixels(name, self._max_pixels)) from exc
        except UnidentifiedImageError as exc:
            raise ImageError(f"Cannot open {name}: it is not an image file Retake can read.") from exc
        except _DECODE_ERRORS as exc:
            raise ImageError(f"Cannot open {name}: the file is damaged or incomplete ({_reason(exc)}).") from exc
        self._image = image
        try:
            width, height = image.size
            if width <= 0 or height <= 0:
                raise ImageError(f"Cannot open {name}: the image has no pixels ({width}x{height}).")
            if width * height > self._max_pixels:
                raise ImageError(_too_many_pixels(name, self._max_pixels, (width, height)))
            image.load()
        except ImageError:
            image.close()
            raise
        except _DECODE_ERRORS as exc:
            image.close()
            raise ImageError(f"Cannot read {name}: the file is damaged or incomplete ({_reason(exc)}).") from exc
        return image

    def __exit__(self, *exc_info: object) -> None:
        if self._image is not None:
            self._image.close()


def _name(path: str | os.PathLike[str]) -> str:
    return str(Path(path))


def _too_many_pixels(name: str, max_pixels: int, size: tuple[int, int] | None = None) -> str:
    at = "" if size is None else f"at {size[0]}x{size[1]} "
    return (f"Cannot open {name}: {at}it has more than {max_pixels / 1e6:.0f} megapixels, which Retake refuses "
            f"to decode.")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".")
    return text or type(exc).__name__


# --------------------------------------------------------------------------------------------------
# Sizes


def working_size(width: int, height: int, max_side: int = 512, multiple: int = 64) -> tuple[int, int]:
    """The size the model works at: longest side = max_side, the other side the multiple of
    `multiple` (at least one multiple) that keeps the aspect ratio closest to width:height.

    Closeness is measured as a ratio (|log(chosen / exact)|), so rounding up and rounding down are
    judged alike. Small images are scaled up: SD 1.x works best near 512 pixels.
    """
    for label, value in (("width", width), ("height", height), ("max_side", max_side), ("multiple", multiple)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{label} must be a positive integer, not {value!r}")
    if max_side % multiple:
        raise ValueError(f"max_side ({max_side}) must be a multiple of {multiple}")
    long_side, short_side = max(width, height), min(width, height)
    exact = max_side * short_side / long_side
    below = max(multiple, math.floor(exact / multiple) * multiple)
    above = min(max_side, below + multiple)
    short = min((below, above), key=lambda s: (abs(math.log(s / exact)), s))
    return (max_side, short) if width >= height else (short, max_side)


def check_editable(width: int, height: int, max_side: int, cell: int) -> None:
    """Refuse, in one sentence, a photo the model cannot edit at the working size `max_side`.

    The model sees the photo in latent cells of `cell` x `cell` pixels (the VAE's scale factor: 8 for
    SD 1.x); nothing narrower than one cell can be edited. So a photo's short side must hold at least
    one cell, and its proportions must leave the short side at least one cell at the working size: the
    longest ratio is max_side / cell to 1 (64:1 at 512 pixels).
    """
    short, long = sorted((width, height))
    if short < cell:
        raise ImageError(f"The photo is {width}x{height} pixels: its short side is smaller than one latent cell of "
                         f"the model ({cell} pixels), the least it can edit.")
    if short * max_side < cell * long:
        raise ImageError(f"The photo is {width}x{height} pixels, about {round(long / short):,}:1; at the working "
                         f"size of {max_side} pixels its short side would be less than one latent cell of the model "
                         f"({cell} pixels), so it can be edited only up to {max_side // cell}:1: crop it, or "
                         f"choose a larger working size (--max-side).")


Box = tuple[int, int, int, int]
"""A rectangle of photo pixels: left, top, right, bottom (right and bottom excluded)."""

DEFAULT_FEATHER = 4
"""Pixels of the photo over which the result fades out past the edit's region (see `feather_alpha`)."""


def bounding_box(mask: np.ndarray) -> Box | None:
    """The smallest box holding every True pixel of `mask` (bool [H, W]); None for an empty mask."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1


def feather_alpha(region: np.ndarray, feather: int, box: Box | None = None) -> np.ndarray:
    """How much of the result each photo pixel takes: 1 on `region` (bool [H, W]), and at `d` pixels
    outside it (counted along rows, columns and diagonals: a square ring per pixel) 1 - d / (feather + 1)
    for d = 1..feather, 0 beyond. Inside `box` only (None: the whole picture), where it also fades out
    over the `feather` pixels along the box's edges that lie inside the photo, so nothing is cut hard.
    float32 [H, W] in 0..1."""
    if feather < 0:
        raise ValueError(f"feather must be at least 0, not {feather}")
    height, width = region.shape
    left, top, right, bottom = box if box is not None else (0, 0, width, height)
    out = np.zeros((height, width), np.float32)
    reach = bounding_box(region[top:bottom, left:right])
    if reach is None:
        return out
    # only around the region: its bounding box grown by the feather, inside the box
    x0, y0 = max(left, left + reach[0] - feather), max(top, top + reach[1] - feather)
    x1, y1 = min(right, left + reach[2] + feather), min(bottom, top + reach[3] + feather)
    window = torch.from_numpy(np.ascontiguousarray(region[y0:y1, x0:x1], np.float32))[None, None]
    alpha, grown = window.clone(), window
    for d in range(1, feather + 1):  # one pixel of growth per step: the ramp is exactly linear in d
        grown = F.max_pool2d(grown, 3, stride=1, padding=1)
        alpha = torch.maximum(alpha, grown * (1.0 - d / (feather + 1)))
    out[y0:y1, x0:x1] = alpha[0, 0].numpy()
    if box is not None and feather > 0:  # the box's own edges fade too, where the photo goes on past them
        rows = _edge_ramp(bottom - top, top > 0, bottom < height, feather)
        columns = _edge_ramp(right - left, left > 0, right < width, feather)
        out[top:bottom, left:right] *= np.minimum(rows[:, None], columns[None, :])
    return out


def _edge_ramp(n: int, fade_start: bool, fade_end: bool, feather: int) -> np.ndarray:
    """Weights along one side of a box of `n` pixels: rising over its first `feather` pixels (k / (feather
    + 1) at the k-th) if `fade_start`, falling over its last ones if `fade_end`, 1 elsewhere."""
    steps = np.arange(1, n + 1, dtype=np.float32)
    ramp = np.ones(n, np.float32)
    if fade_start:
        ramp = np.minimum(ramp, steps / (feather + 1))
    if fade_end:
        ramp = np.minimum(ramp, steps[::-1] / (feather + 1))
    return ramp


def region_at_photo_size(region: torch.Tensor, box: Box, photo_size: tuple[int, int]) -> np.ndarray:
    """A region at working or latent resolution ([1, 1, h, w], > 0.5 inside) over the photo's `box`,
    as bool [H, W] at the photo's size: bilinearly resized to the box (so a latent cell's square edge
    becomes a smooth one), at least half in."""
    if region.dim() != 4 or tuple(region.shape[:2]) != (1, 1):
        raise ValueError(f"expected a [1, 1, h, w] region, got {tuple(region.shape)}")
    left, top, right, bottom = box
    sized = F.interpolate(region.detach().to("cpu", torch.float32), size=(bottom - top, right - left),
                          mode="bilinear", align_corners=False)[0, 0].numpy() >= 0.5
    out = np.zeros((photo_size[1], photo_size[0]), bool)
    out[top:bottom, left:right] = sized
    return out


def mask_at_photo_size(mask: Image.Image, photo_size: tuple[int, int]) -> np.ndarray:
    """A greyscale mask at the photo's size (resized bilinearly if drawn at another), bool: >= 128."""
    grey = mask.convert("L") if mask.mode != "L" else mask
    if grey.size != tuple(photo_size):
        grey = grey.resize(tuple(photo_size), Image.Resampling.BILINEAR)
    return np.asarray(grey, np.uint8) >= 128


def paste_result(photo: Image.Image, result: Image.Image, box: Box | None, region: np.ndarray | None,
                 feather: int = DEFAULT_FEATHER) -> Image.Image:
    """The edit at the photo's own size: `result` (the working picture of `box`, or of the whole photo
    for None) resized with Lanczos onto its box, taken where `feather_alpha(region, feather, box)` says,
    and the photo's own pixels byte for byte wherever that is 0 (everything outside the box, and more
    than `feather` pixels outside the region).

    With `region` None the whole box is taken (fading in over `feather` pixels inside its edges); with
    neither a box nor a region, the result is the whole upsampled picture."""
    photo, result = to_rgb(photo), to_rgb(result)
    if box is None and region is None:
        return result.copy() if result.size == photo.size else result.resize(photo.size, _RESIZE)
    left, top, right, bottom = box if box is not None else (0, 0, *photo.size)
    if region is not None and region.shape != (photo.height, photo.width):
        raise ValueError(f"the region is {region.shape[1]}x{region.shape[0]}, not the photo's "
                         f"{photo.width}x{photo.height}")
    inside = np.zeros((photo.height, photo.width), bool)
    inside[top:bottom, left:right] = True
    alpha = feather_alpha(inside if region is None else region & inside, feather,
                          None if box is None else (left, top, right, bottom))
    size = (right - left, bottom - top)
    placed = photo.copy()
    placed.paste(result if result.size == size else result.resize(size, _RESIZE), (left, top))
    weights = Image.fromarray(np.round(alpha * 255).astype(np.uint8), "L")
    return Image.composite(placed, photo, weights)


# --------------------------------------------------------------------------------------------------
# Tensors


def to_tensor(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """RGB image -> float32 tensor [1, 3, H, W] in [-1, 1] at `size` = (W, H), resized with Lanczos."""
    if image.mode != "RGB":
        image = to_rgb(image)
    if tuple(image.size) != tuple(size):
        image = image.resize(tuple(size), _RESIZE, reducing_gap=3.0)
    pixels = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).contiguous()


def from_tensor(tensor: torch.Tensor) -> Image.Image:
    """Tensor [1, 3, H, W] or [3, H, W] in [-1, 1] -> RGB image (clamped, rounded, NaN -> grey)."""
    if tensor.dim() == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {tensor.shape[0]}")
        tensor = tensor[0]
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(f"expected a [1, 3, H, W] or [3, H, W] tensor, got {tuple(tensor.shape)}")
    values = torch.nan_to_num(tensor.detach().to("cpu", torch.float32), nan=0.0)
    values = ((values.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return Image.fromarray(values.permute(1, 2, 0).contiguous().numpy(), "RGB")


# --------------------------------------------------------------------------------------------------
# Masks


def load_mask(path: str | os.PathLike[str], size: tuple[int, int]) -> torch.Tensor:
    """Read a mask image as a float32 tensor [1, 1, H, W] of 0s and 1s at `size` = (W, H) (see mask_tensor)."""
    return mask_tensor(read_mask_image(path), size)


def read_mask_image(path: str | os.PathLike[str]) -> Image.Image:
    """Read a mask file as 8-bit greyscale at its own size, white where it applies.

    If the file has an alpha channel that is not fully opaque (strokes painted on a transparent
    layer), alpha decides; otherwise brightness does (white = edit).
    """
    with _open_decoded(path, MAX_PIXELS) as img:
        try:
            img = _exif_upright(img)
            alpha = _alpha_channel(img)
            if alpha is not None and alpha.getextrema() != (255, 255):
                return alpha.copy()
            return to_rgb(img).convert("L")
        except _DECODE_ERRORS as exc:
            raise ImageError(f"Cannot read the mask {_name(path)}: {_reason(exc)}.") from exc


def mask_tensor(grey: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """A greyscale mask as a float32 tensor [1, 1, H, W] of 0s and 1s at `size` = (W, H).

    Resampling is bilinear, and a cell is in the mask when it is at least half white.
    """
    if grey.mode != "L":
        grey = grey.convert("L")
    if grey.size != tuple(size):
        grey = grey.resize(tuple(size), Image.Resampling.BILINEAR)
    mask = np.asarray(grey, dtype=np.uint8) >= 128
    return torch.from_numpy(mask.astype(np.float32))[None, None].contiguous()


def _alpha_channel(image: Image.Image) -> Image.Image | None:
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return image.getchannel("A")
    if image.mode == "P" and "transparency" in image.info:
        return image.convert("RGBA").getchannel("A")
    return None


# --------------------------------------------------------------------------------------------------
# PNG with parameters


def png_with_metadata(image: Image.Image, metadata: Mapping[str, Any]) -> bytes:
    """Encode `image` as PNG carrying `metadata` (JSON values), so the edit can be reproduced.

    Two text chunks: "retake" holds the whole mapping as one UTF-8 JSON document (iTXt, for
    programs), "parameters" the same as "key: value" lines (for people and image viewers).
    """
    document = json.dumps(dict(metadata), ensure_ascii=False, allow_nan=False)
    lines = [f"{key}: {value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}"
             for key, value in metadata.items()]
    info = PngImagePlugin.PngInfo()
    info.add_itxt(PNG_METADATA_KEY, document)
    info.add_text(PNG_PARAMETERS_KEY, "\n".join(lines))  # tEXt if Latin-1, else iTXt
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def save_png(image: Image.Image, path: str | os.PathLike[str], metadata: Mapping[str, Any]) -> None:
    """Write `image` as a PNG with `metadata` (see `png_with_metadata`), atomically."""
    data = png_with_metadata(image, metadata)
    try:
        write_atomically(path, data)
    except OSError as exc:
        raise ImageError(f"Cannot save {_name(path)}: {_reason(exc)}.") from exc


def read_png_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping stored by `png_with_metadata`; {} for a PNG without Retake parameters.

    The file is opened as `load_image` opens it (the same bounds, the same sentences: a decompression
    bomb is refused before a pixel is decoded), then decoded, since text chunks after the pixel data
    are only seen once the image is read. PIL bounds the text chunks themselves; a document nested too
    deeply or holding a number too long to convert is damage, like one that is not JSON.
    """
    name = _name(path)
    with _open_decoded(path, MAX_PIXELS) as img:
        if img.format != "PNG":
            raise ImageError(f"Cannot read parameters from {name}: it is not a PNG file.")
        try:
            text = img.text.get(PNG_METADATA_KEY)
        except _DECODE_ERRORS as exc:
            raise ImageError(f"Cannot read {name}: the file is damaged or incomplete ({_reason(exc)}).") from exc
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, too many digits, too deep
        raise ImageError(f"The Retake parameters stored in {name} are damaged.") from exc
    if not isinstance(value, dict):
        raise ImageError(f"The Retake parameters stored in {name} are damaged.")
    return value
