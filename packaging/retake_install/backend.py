"""Which torch build a machine gets: cuda, rocm or cpu, and a plain sentence saying why.

The backends are the mutually exclusive extras of pyproject.toml, locked in uv.lock; an installer
asks `choose()` with the user's `--backend` (auto by default) and what this machine shows:

* NVIDIA (`nvidia-smi`): the locked CUDA build runs only with a driver at least CUDA_MIN_DRIVER
  and on GPUs of compute capability at least CUDA_MIN_COMPUTE (the oldest architecture compiled into
  the wheel, `torch._C._cuda_getArchFlags()`); a test checks both against the torch installed.
  An older driver or GPU is named, with what to do, instead of a CUDA build that would fail later.
* AMD (`/dev/kfd`, `rocminfo`): ROCm, when the lock has a ROCm build (not yet: see
  packaging/README.md), else the CPU, saying so.
* Apple: the macOS wheel is one build with MPS, locked as the cpu extra.
* none: cpu.

Invoke's launcher and Krita AI Diffusion's server installer choose the same way (GPU vendor, then
the CUDA generation); unlike them we refuse a CUDA build the GPU cannot run rather than let the
app fail on its first edit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

BACKENDS = ("cuda", "rocm", "cpu")

CUDA_VERSION = "13.0"
"""The CUDA version of the locked torch build on Linux x86_64 (torch.version.cuda)."""
CUDA_MIN_DRIVER = (580, 0)
"""The oldest NVIDIA driver branch that runs CUDA 13.x builds (CUDA's minor-version compatibility)."""
CUDA_MIN_COMPUTE = (7, 5)
"""The oldest GPU architecture compiled into the locked CUDA build: sm_75, Turing (GTX 16xx, RTX 20xx)."""

NVIDIA_QUERY = ["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"]


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA GPU as nvidia-smi reports it."""

    name: str
    driver: tuple[int, ...]
    compute: tuple[int, int] | None  # None: a driver too old to report it


@dataclass(frozen=True)
class Machine:
    """What detection saw; tests build one by hand."""

    system: str  # sys.platform: linux, win32, darwin
    nvidia: list[Gpu] = field(default_factory=list)
    nvidia_error: str = ""  # nvidia-smi exists but failed (driver not loaded...)
    amd: bool = False


@dataclass(frozen=True)
class Choice:
    """The backend to install and why (printed by the installer)."""

    backend: str
    reason: str


class BackendError(Exception):
    """A backend the user asked for that cannot work here; the message says why and what to do."""


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.strip().split(".") if part.isdigit())


def parse_nvidia_smi(output: str) -> list[Gpu]:
    """GPUs from `nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader`
    (a driver older than 510 knows no compute_cap: its field is '[N/A]' or the query fails)."""
    gpus = []
    for line in output.splitlines():
        fields = [part.strip() for part in line.split(",")]
        if len(fields) < 2 or not fields[0]:
            continue
        compute = _version(fields[2]) if len(fields) > 2 else ()
        gpus.append(Gpu(fields[0], _version(fields[1]), (compute[0], compute[1]) if len(compute) >= 2 else None))
    return gpus


def detect(run: Callable[[list[str]], str | None] | None = None, system: str = sys.platform,
           exists: Callable[[str], bool] = os.path.exists) -> Machine:
    """Look at this machine: nvidia-smi, AMD's compute device node and rocminfo."""
    run = run or _run
    nvidia: list[Gpu] = []
    error = ""
    if system != "darwin":
        output = run(NVIDIA_QUERY)
        if output is None:  # a driver too old for compute_cap: ask for the rest
            output = run(NVIDIA_QUERY[:1] + ["--query-gpu=name,driver_version", "--format=csv,noheader"])
        if output is not None:
            nvidia = parse_nvidia_smi(output)
            error = "" if nvidia else output.strip()
    amd = system == "linux" and (exists("/dev/kfd") or bool(run(["rocminfo"]) or ""))
    return Machine(system, nvidia, error, amd)


def _run(argv: list[str]) -> str | None:
    """stdout of a command, or None when it is missing or fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def cuda_problem(gpus: list[Gpu]) -> str | None:
    """Why the locked CUDA build cannot run on these GPUs, or None when it can (the best GPU counts)."""
    if not gpus:
        return None
    driver = max(gpu.driver for gpu in gpus)
    if driver[:2] < CUDA_MIN_DRIVER:
        return (f"the NVIDIA driver {'.'.join(map(str, driver))} is older than {CUDA_MIN_DRIVER[0]}, the oldest "
                f"that runs Retake's CUDA {CUDA_VERSION} build: update the driver (your distribution's "
                f"nvidia-driver package, {CUDA_MIN_DRIVER[0]} or newer), then install again")
    known = [gpu for gpu in gpus if gpu.compute is not None]
    if known and all(gpu.compute < CUDA_MIN_COMPUTE for gpu in known):  # type: ignore[operator]
        names = ", ".join(f"{gpu.name} (compute capability {gpu.compute[0]}.{gpu.compute[1]})"  # type: ignore[index]
                          for gpu in known)
        return (f"{names} is too old for Retake's CUDA {CUDA_VERSION} build, which needs compute capability "
                f"{CUDA_MIN_COMPUTE[0]}.{CUDA_MIN_COMPUTE[1]} or newer (GeForce GTX 16xx / RTX 20xx, Quadro RTX, "
                "Tesla T4 and later)")
    return None


def choose(requested: str, machine: Machine, locked: Collection[str]) -> Choice:
    """The backend for `requested` (auto, cuda, rocm, cpu) on `machine`, among those the lock holds.
    An explicit request that cannot work raises BackendError; auto falls back to cpu and says why."""
    if requested not in ("auto", *BACKENDS):
        raise BackendError(f"--backend {requested}: choose auto, {', '.join(BACKENDS)}")
    if requested != "auto" and requested not in locked:
        raise BackendError(_not_locked(requested, machine.system))
    if requested == "cpu":
        return Choice("cpu", "asked for: the CPU" + (" (and Apple's GPU, MPS)" if machine.system == "darwin" else ""))
    if requested == "cuda":
        if not machine.nvidia:
            raise BackendError("--backend cuda: no NVIDIA GPU answers here (nvidia-smi "
                               + (f"says: {machine.nvidia_error}" if machine.nvidia_error else "is missing or failed")
                               + "); install the NVIDIA driver, or use --backend cpu")
        if problem := cuda_problem(machine.nvidia):
            raise BackendError(f"--backend cuda: {problem}; or use --backend cpu")
        return Choice("cuda", f"asked for: {_gpu_names(machine.nvidia)}")
    if requested == "rocm":
        return Choice("rocm", "asked for: an AMD GPU through ROCm")
    return _auto(machine, locked)


def _auto(machine: Machine, locked: Collection[str]) -> Choice:
    if machine.system == "darwin":
        return Choice("cpu", "macOS: the CPU, and Apple's GPU through MPS where there is one")
    if machine.nvidia:
        if problem := cuda_problem(machine.nvidia):
            return Choice("cpu", f"{problem}. Retake will run on the CPU (slowly: minutes per edit)")
        if "cuda" in locked:
            return Choice("cuda", f"found {_gpu_names(machine.nvidia)}")
        return Choice("cpu", f"found {_gpu_names(machine.nvidia)}, but {_not_locked('cuda', machine.system)}")
    if machine.amd:
        if "rocm" in locked:
            return Choice("rocm", "found an AMD GPU (ROCm)")
        return Choice("cpu", f"found an AMD GPU, but {_not_locked('rocm', machine.system)}; "
                             "Retake will run on the CPU")
    if machine.nvidia_error:
        return Choice("cpu", f"nvidia-smi failed ({machine.nvidia_error}): is the NVIDIA driver loaded? "
                             "Retake will run on the CPU")
    return Choice("cpu", "no NVIDIA or AMD GPU found: Retake will run on the CPU")


def _gpu_names(gpus: list[Gpu]) -> str:
    driver = ".".join(map(str, max(gpu.driver for gpu in gpus)))
    return f"{', '.join(gpu.name for gpu in gpus)} (driver {driver})"


def _not_locked(backend: str, system: str) -> str:
    return (f"this Retake's lock holds no {backend} build of torch for {system} ({backend} builds are published "
            "only on download.pytorch.org, which the lock was not made from: see packaging/README.md, Backends)")
