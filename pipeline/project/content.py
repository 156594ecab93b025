"""What is inside a project's files: checksums, PNG encodings of images and masks, inversion headers.

An inversion file is checked without loading it (its safetensors header against its size), so
that opening a project with large inversions stays fast and a damaged one is named precisely.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import struct

import torch
from PIL import Image

from pipeline.images import from_tensor, to_rgb
from pipeline.project.codec import Damage
from pipeline.project.folder import Folder
from pipeline.project.records import Json

INVERSION_FORMAT = "retake-inversion"
INVERSION_METADATA_KEY = "retake"  # the safetensors metadata entry describing an inversion file

_MAX_SAFETENSORS_HEADER = 100 << 20
_SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    """The hex SHA-256 of `data`, as project.json records it."""
    return hashlib.sha256(data).hexdigest()


def read_safetensors_header(folder: Folder, rel: str) -> tuple[dict[str, Json], dict[str, str]]:
    """Parse and check a safetensors header against the file size; returns (tensors, metadata).

    Raises Damage. Checks that every tensor's byte range matches its dtype and shape and that the
    ranges tile the data section exactly, so a file that passes can be loaded.
    """
    with folder.open(rel) as file:
        size = file.seek(0, io.SEEK_END)
        file.seek(0)
        prefix = file.read(8)
        if len(prefix) < 8:
            raise Damage("it is too short to be a safetensors file")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(_MAX_SAFETENSORS_HEADER, size - 8):
            raise Damage("its safetensors header length is impossible")
        raw = file.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Damage("its safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise Damage("its safetensors header is not an object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise Damage("its safetensors metadata is not a string table")
    spans = []
    for info in header.values():
        if not isinstance(info, dict):
            raise Damage("a tensor in it has no description")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in _SAFETENSORS_DTYPE_BYTES:
            raise Damage("a tensor in it has an unknown dtype")
        if not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
            raise Damage("a tensor in it has an invalid shape")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or any(isinstance(o, bool) or not isinstance(o, int) for o in offsets)):
            raise Damage("a tensor in it has invalid data offsets")
        if offsets[1] - offsets[0] != math.prod(shape) * _SAFETENSORS_DTYPE_BYTES[dtype]:
            raise Damage("a tensor in it has a size that does not match its shape")
        spans.append((offsets[0], offsets[1]))
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            raise Damage("its tensors do not tile the data section")
        end = stop
    if 8 + header_len + end != size:
        raise Damage("its size does not match its safetensors header")
    return header, metadata


def inversion_description(metadata: dict[str, str]) -> dict[str, Json]:
    """The JSON object an inversion file carries in its safetensors metadata ({} if none or broken)."""
    try:
        described = json.loads(metadata.get(INVERSION_METADATA_KEY, "{}"))
    except (ValueError, RecursionError):
        return {}
    return described if isinstance(described, dict) else {}


def mask_png(mask: torch.Tensor | Image.Image) -> bytes:
    """Encode a mask (tensor of 0..1 or bools, or a PIL image) as an 8-bit greyscale PNG."""
    if isinstance(mask, Image.Image):
        grey = mask.convert("L") if mask.mode in ("1", "L") else to_rgb(mask).convert("L")
    elif isinstance(mask, torch.Tensor):
        values = mask.detach().to("cpu")
        while values.dim() > 2 and values.shape[0] == 1:
            values = values[0]
        if values.dim() != 2:
            raise ValueError(f"a mask tensor must be [1, 1, H, W], [1, H, W] or [H, W], not {tuple(mask.shape)}")
        values = values.to(torch.float32)
        if not torch.isfinite(values).all():
            raise ValueError("a mask tensor must not contain NaN or infinity")
        grey = Image.fromarray((values.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), "L")
    else:
        raise TypeError(f"a mask must be a torch.Tensor or a PIL image, not {type(mask).__name__}")
    return plain_png(grey)


def image_png(image: torch.Tensor | Image.Image) -> bytes:
    """Encode an image (PIL, or a [1, 3, H, W] / [3, H, W] tensor in [-1, 1]) as an 8-bit RGB PNG."""
    if isinstance(image, torch.Tensor):
        return plain_png(from_tensor(image))
    if isinstance(image, Image.Image):
        return plain_png(image if image.mode == "RGB" else to_rgb(image))
    raise TypeError(f"an image must be a torch.Tensor or a PIL image, not {type(image).__name__}")


def plain_png(image: Image.Image) -> bytes:
    """`image` as PNG bytes without metadata."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
