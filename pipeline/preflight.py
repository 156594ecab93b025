"""Checks the engine makes before any model work, so a mistake costs a second, not a finished inversion.

Each check is pure (it only looks at its argument and the file system) and raises one RetakeError
whose message is a full sentence naming the value, shortened for display.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import ImageError, ParamError, ProjectError, shorten
from pipeline.project import MANIFEST_FILE, only_creation_remains

MAX_SIDE_MULTIPLE = 64
MAX_SIDE_RANGE = (64, 4096)
OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def check_max_side(n: int) -> int:
    """The working image's longest side: the UNet needs multiples of 64; beyond 4096 no GPU copes."""
    low, high = MAX_SIDE_RANGE
    if isinstance(n, bool) or not isinstance(n, int) or not low <= n <= high or n % MAX_SIDE_MULTIPLE:
        raise ParamError(
            f"The longest side (--max-side) must be a multiple of {MAX_SIDE_MULTIPLE} between {low} and "
            f"{high}, e.g. 512, not {shorten(n)}."
        )
    return n


SEED_RANGE = (0, (1 << 64) - 1)
"""What a torch.Generator takes as a seed (64 bits)."""


def check_seed(seed: int | None) -> int | None:
    """A seed is a whole number a torch.Generator can take, 0 to 2**64 - 1 (None: no seed)."""
    low, high = SEED_RANGE
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not low <= seed <= high):
        raise ParamError(f"The seed (--seed) must be a whole number from {low} to {high}, not {shorten(seed)}.")
    return seed


def check_output_path(path: Path) -> Path:
    """Where the result goes: an image file name in an existing, writable folder."""
    name = shorten(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ImageError(
            f"The result file {name} must end in {', '.join(OUTPUT_SUFFIXES)}, so its format is clear."
        )
    if path.is_dir():
        raise ImageError(f"The result file {name} is a folder; name a file inside it.")
    folder = path.parent
    if not folder.is_dir():
        raise ImageError(f"Cannot write the result {name}: the folder {shorten(folder)} does not exist.")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ImageError(f"Cannot write the result {name}: Retake may not write there.")
    return path


def check_project_folder(path: Path) -> None:
    """A project folder must be new, empty (or hold only what a running or interrupted first edit leaves)
    or a Retake project, so no one's other files get mixed in."""
    if not path.exists():
        return
    name = shorten(path)
    if not path.is_dir():
        raise ProjectError(f"Cannot use {name} as a project folder: it is a file.")
    if (path / MANIFEST_FILE).is_file():
        return
    try:
        occupied = any(path.iterdir())
    except OSError as error:
        raise ProjectError(f"Cannot use {name} as a project folder: {error.strerror or error}.") from None
    if occupied and not only_creation_remains(path):
        raise ProjectError(
            f"Cannot use {name} as a project folder: it holds other files and no {MANIFEST_FILE}; "
            "give a new or empty folder."
        )
