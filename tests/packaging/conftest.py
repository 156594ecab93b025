"""Fixtures for the installer's tests: a payload as the build scripts assemble it, with tests/packaging/
fake_uv.py as its uv, a home folder of the user's own data, and snapshots of folders to compare."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from retake_install.__main__ import main as installer_main
from retake_install.layout import Layout
from retake_install.runtime import Payload

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

Snapshot = dict[str, object]


def snapshot(*folders: Path) -> Snapshot:
    """Every file, link and folder under `folders` with its content or target."""
    found: Snapshot = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")) if folder.exists() else ():
            if path.is_symlink():
                found[str(path)] = ("link", os.readlink(path))
            elif path.is_dir():
                found[str(path)] = ("dir",)
            else:
                found[str(path)] = ("file", path.read_bytes(), path.stat().st_mode & 0o777)
    return found


@pytest.fixture
def make_payload(tmp_path: Path) -> Callable[[str], Payload]:
    """A payload of Retake `version` (a fake wheel, the fake uv), assembled by the real `assemble`."""

    def make(version: str = "0.1.0") -> Payload:
        out = tmp_path / f"payload-{version}"
        wheel = tmp_path / f"retake-{version}-py3-none-any.whl"
        wheel.write_bytes(b"not a real wheel: fake_uv never opens it")
        uv = tmp_path / "uv"
        shutil.copy2(HERE / "fake_uv.py", uv)
        uv.chmod(0o755)
        assert installer_main(["assemble", "--out", str(out), "--wheel", str(wheel), "--uv", str(uv),
                               "--root", str(ROOT)]) == 0
        return Payload(out)

    return make


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's home with settings and presets, an imported model and a project, as the app leaves them."""
    home = tmp_path / "home"
    for name in ("HOME",):
        monkeypatch.setenv(name, str(home))
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "RETAKE_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FAKE_UV_LOG", str(tmp_path / "uv-calls.jsonl"))
    (home / ".config" / "Retake").mkdir(parents=True)
    (home / ".config" / "Retake" / "Retake.conf").write_text('[General]\nmodel=/models/v1-5.safetensors\n'
                                                           'presets\\p2p="{\\"soft\\": {}}"\n')
    (home / ".local" / "share" / "Retake" / "Retake" / "models").mkdir(parents=True)
    (home / ".local" / "share" / "Retake" / "Retake" / "models" / "mine.safetensors").write_bytes(b"weights")
    (home / "Pictures" / "cat.retake").mkdir(parents=True)
    (home / "Pictures" / "cat.retake" / "project.json").write_text("{}")
    (home / ".cache" / "retake").mkdir(parents=True)
    (home / ".cache" / "retake" / "hashes.json").write_text("{}")
    return home


@pytest.fixture
def layout(home: Path) -> Layout:
    return Layout.for_user(home / ".local" / "opt" / "retake", dict(os.environ))


def python() -> str:
    return sys.executable
