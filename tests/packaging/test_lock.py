"""uv.lock says what pyproject.toml asks for (a stale lock fails here as well as in setup-venv.sh's
`uv sync --locked`), every wheel it names carries a hash, and the torch build is a choice of extras."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from retake_install.backend import BACKENDS
from retake_install.runtime import locked_backends

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())


def requirement(text: str) -> tuple[str, tuple[str, ...], str, str | None]:
    """(name, extras, specifier, marker) of a PEP 508 line, names normalised as uv writes them."""
    spec, _, marker = text.partition(";")
    name, extras, specifier = re.match(  # type: ignore[union-attr]
        r"\s*([A-Za-z0-9_.-]+)\s*(?:\[([^\]]*)\])?\s*(.*)", spec).groups()
    wanted = tuple(sorted(e.strip() for e in (extras or "").split(",") if e.strip()))
    return re.sub(r"[-_.]+", "-", name).lower(), wanted, specifier.replace(" ", ""), marker.strip() or None


def test_the_lock_holds_what_pyproject_asks_for() -> None:
    project = PYPROJECT["project"]
    asked = {requirement(line) for line in project["dependencies"]}
    for extra, lines in project["optional-dependencies"].items():
        asked |= {(name, extras, specifier,
                   f"extra == '{extra}'" if marker is None else f"{marker} and extra == '{extra}'")
                  for name, extras, specifier, marker in map(requirement, lines)}
    retake = next(package for package in LOCK["package"] if package["name"] == "retake")
    locked = {(entry["name"], tuple(sorted(entry.get("extras", []))), entry.get("specifier", ""), entry.get("marker"))
              for entry in retake["metadata"]["requires-dist"]}
    assert locked == asked, "pyproject.toml changed since uv.lock was made: run `uv lock` (packaging/README.md)"
    assert retake["metadata"]["provides-extras"] == list(project["optional-dependencies"])


def test_the_torch_builds_are_exclusive_extras() -> None:
    backends = locked_backends(ROOT / "uv.lock")
    assert backends == ["cuda", "cpu"] and set(backends) <= set(BACKENDS)
    assert PYPROJECT["tool"]["uv"]["conflicts"] == [[{"extra": backend} for backend in backends]]
    assert LOCK["conflicts"] == [[{"package": "retake", "extra": backend} for backend in sorted(backends)]]


def test_every_file_in_the_lock_has_a_hash() -> None:
    files = [entry for package in LOCK["package"] if "registry" in package.get("source", {})
             for entry in [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]]
    assert files and all(entry["hash"].startswith("sha256:") for entry in files)
    torch = next(package for package in LOCK["package"] if package["name"] == "torch")
    assert torch["version"] == "2.14.1"
    assert any("manylinux" in wheel["url"] and "cp311" in wheel["url"] for wheel in torch["wheels"])
