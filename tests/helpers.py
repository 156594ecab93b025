"""Small helpers shared by tests."""

import hashlib
from pathlib import Path


def tree_digest(folder: Path) -> str:
    """A hash of every path and file byte under `folder`: equal digests mean nothing was touched."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()
