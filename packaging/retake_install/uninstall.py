"""`retake-uninstall [--yes] [--purge]`: remove what the installs added, and user data only if asked.

What goes: the prefix's own entries (versions, current, bin, uv's cache, the manifest, the lock
file), then the files and links the manifest lists outside it (links only while they still point
into the prefix), then the folders installs created, where empty, deepest first; the prefix itself
when nothing else is left in it. A file the user put in the prefix or beside our menu entry stays.
`--purge` also removes the user's settings and presets, imported models and Retake's cache
(layout.Layout.user_data); never projects, which are the user's documents wherever they saved them,
nor the Hugging Face cache, which other programs share.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from retake_install.install import read_manifest, remove
from retake_install.layout import Layout

PREFIX_ENTRIES = ("versions", "current", "bin", "cache", "python", "install-manifest.json", ".install-lock")
"""What installs make in the prefix (python: one uv downloaded there, Windows only)."""


def plan(layout: Layout, purge: bool) -> list[Path]:
    """What `uninstall` would remove, for the question the user answers."""
    manifest = read_manifest(layout)
    paths = [layout.prefix / name for name in PREFIX_ENTRIES if (layout.prefix / name).exists()]
    paths += [Path(name) for name in manifest["files"] if _ours(Path(name), layout)]
    if purge:
        paths += [path for path in layout.user_data().values() if path.exists()]
    return paths


def uninstall(layout: Layout, purge: bool, say: Callable[[str], None]) -> None:
    manifest = read_manifest(layout)
    for path in plan(layout, purge):
        remove(path)
    for folder in sorted({Path(name) for name in manifest["folders"]} | {layout.prefix},
                         key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:  # not empty (the user's files) or gone
            continue
    kept = [f"{what}: {path}" for what, path in layout.user_data().items() if path.exists()]
    say("Retake was removed." + (f" Kept (retake-uninstall --purge removes them): {'; '.join(kept)}." if kept else "")
        + " Projects are never removed.")


def _ours(path: Path, layout: Layout) -> bool:
    """A listed file still ours: a link into the prefix, or a plain file (menu entry, icon)."""
    if path.is_symlink():
        return layout.prefix in Path(path.readlink() if path.readlink().is_absolute()
                                     else path.parent / path.readlink()).parents
    return path.exists()
