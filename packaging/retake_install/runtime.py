"""The installer's payload, and the runtime (a virtual environment) made from its lock by uv.

The runtime holds exactly what uv.lock says for one backend extra, with the hashes the lock
records (`uv export --frozen` then `uv pip sync --require-hashes`): nothing is resolved on the
user's machine, so an install cannot drift from what the tests ran on, and no later step may
replace the torch build (the runtime is never touched again; an upgrade builds a new one). Wheels
come from PyPI, or with `--wheels DIR` from that folder only, offline. The torch that arrives is then
asked what it is, so a lock whose `cuda` extra holds a CPU build (as PyPI's Windows wheels are) fails
the install with that sentence instead of a silently slow app. ComfyUI Desktop and Krita AI
Diffusion install compiled requirement files with `uv pip install` the same way; InvokeAI's launcher
runs `uv sync --frozen` on the release's lock.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from retake_install.backend import BACKENDS

Runner = Callable[[Sequence[str], Mapping[str, str]], int]
"""Runs a command with an environment and returns its exit status (its output goes to the user)."""


class InstallError(Exception):
    """A step that failed, in a sentence for the user."""


def run_command(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """The real Runner: the command's output goes straight to the terminal."""
    return subprocess.run(list(argv), env=dict(env), check=False).returncode


@dataclass(frozen=True)
class Payload:
    """What an installer carries (see `assemble`): uv, the lock, the Retake wheel, the desktop files."""

    root: Path

    @property
    def uv(self) -> Path:
        return self.root / "bin" / ("uv.exe" if sys.platform == "win32" else "uv")

    @property
    def project(self) -> Path:
        """pyproject.toml and uv.lock: what `uv export --frozen` reads."""
        return self.root / "lock"

    @property
    def share(self) -> Path:
        return self.root / "share"

    @property
    def wheel(self) -> Path:
        wheels = sorted((self.root / "wheels").glob("retake-*.whl"))
        if len(wheels) != 1:
            raise InstallError(f"the installer's payload should hold one Retake wheel, not {len(wheels)}")
        return wheels[0]

    @property
    def version(self) -> str:
        return self.wheel.name.split("-")[1]

    def locked_backends(self) -> list[str]:
        return locked_backends(self.project / "uv.lock")


def locked_backends(lock_file: Path) -> list[str]:
    """The backend extras a uv.lock holds for Retake."""
    lock = tomllib.loads(lock_file.read_text(encoding="utf-8"))
    for package in lock.get("package", []):
        if package.get("name") == "retake":
            extras = package.get("optional-dependencies", {})
            return [backend for backend in BACKENDS if backend in extras]
    raise InstallError(f"{lock_file} does not describe Retake")


def uv_env(cache: Path, base: Mapping[str, str]) -> dict[str, str]:
    """uv's environment: its cache in the install, no user or project uv configuration, no Python downloads,
    the system's certificates."""
    env = {key: value for key, value in base.items() if not key.startswith("UV_") and key != "VIRTUAL_ENV"}
    # UV_SYSTEM_CERTS: the system's certificate store, so a studio's TLS-inspecting proxy works (uv's own
    # store lacks its CA; seen here as "invalid peer certificate: UnknownIssuer")
    env.update(UV_CACHE_DIR=str(cache), UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never", UV_SYSTEM_CERTS="1")
    return env


def create(payload: Payload, backend: str, target: Path, python: str, *, wheels: Path | None, cache: Path,
           run: Runner, base_env: Mapping[str, str]) -> None:
    """Make `target`/venv from the lock's `backend` extra and the Retake wheel."""
    env = uv_env(cache, base_env)
    uv = str(payload.uv)
    venv = target / "venv"
    requirements = target / "requirements.txt"
    sources = ["--offline", "--no-index", "--find-links", str(wheels)] if wheels else []
    steps = [
        ("create the virtual environment", [uv, "venv", "--quiet", "--python", python, str(venv)]),
        ("read the lock", [uv, "export", "--quiet", "--frozen", "--project", str(payload.project), "--extra", backend,
                           "--no-emit-project", "--format", "requirements-txt", "--output-file", str(requirements)]),
        # --compile-bytecode: uv writes no .pyc by default, so the first launch after an install would compile
        # torch, diffusers and transformers (7-8 s more on a 2-core CPU, bench/bench_startup.py's "no
        # bytecode yet" row), and every launch would where the runtime folder is not writable.
        ("install the locked packages", [uv, "pip", "sync", "--python", str(_python(venv)), "--require-hashes",
                                         "--no-build", "--compile-bytecode", *sources, str(requirements)]),
        ("install Retake", [uv, "pip", "install", "--python", str(_python(venv)), "--no-deps", "--offline",
                            "--compile-bytecode", str(payload.wheel)]),
    ]
    for what, argv in steps:
        if run(argv, env) != 0:
            hint = (f" (is every wheel of the lock in {wheels}? packaging/build-linux.sh --offline-bundle makes "
                    "such a folder)") if wheels and what.startswith("install the locked") else ""
            raise InstallError(f"could not {what}{hint}: see uv's message above")


def _python(venv: Path) -> Path:
    return venv / "Scripts" / "python.exe" if sys.platform == "win32" else venv / "bin" / "python"


PROBE = ("import json, torch; print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
         "'hip': getattr(torch.version, 'hip', None)}))")


def torch_build(python: Path, env: Mapping[str, str]) -> dict[str, str | None]:
    """What the runtime's torch is: its version, CUDA and HIP versions (None where absent)."""
    done = subprocess.run([str(python), "-c", PROBE], env=dict(env), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InstallError(f"the new runtime cannot import torch: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_backend(backend: str, build: Mapping[str, str | None], system: str = sys.platform) -> None:
    """InstallError unless the torch installed is the build `backend` promises."""
    wanted = {"cuda": "cuda", "rocm": "hip"}.get(backend)
    if wanted and not build.get(wanted):
        raise InstallError(f"the lock's {backend} choice installed torch {build.get('torch')} without "
                           f"{backend.upper()} support on {system}: this Retake's lock has no {backend} build for "
                           "this system (packaging/README.md, Backends); install with --backend cpu")


def write_record(target: Path, record: Mapping[str, object]) -> None:
    """install.json in a version folder: what it is and how it was made."""
    (target / "install.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def environment_for_app(base: Mapping[str, str]) -> dict[str, str]:
    """The environment for the runtime's own commands (self-test): offscreen Qt, no hub downloads."""
    env = {key: value for key, value in base.items() if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1")
    return env

