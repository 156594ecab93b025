"""Which torch build a machine gets (retake_install.backend), from nvidia-smi's real output formats."""

from __future__ import annotations

import pytest

from retake_install.backend import (
    CUDA_MIN_COMPUTE, CUDA_VERSION, BackendError, Gpu, Machine, choose, detect, parse_nvidia_smi,
)

LOCKED = ("cuda", "cpu")
RTX_4090 = Gpu("NVIDIA GeForce RTX 4090", (580, 95, 5), (8, 9))


def smi(outputs: dict[str, str | None]):
    """A fake command runner answering by the query asked."""

    def run(argv: list[str]) -> str | None:
        return outputs.get(argv[0] + (" " + argv[1] if len(argv) > 1 else ""))

    return run


def test_nvidia_smi_csv_is_parsed_with_and_without_compute_capability() -> None:
    assert parse_nvidia_smi("NVIDIA GeForce RTX 4090, 580.95.05, 8.9\nTesla T4, 580.65.06, 7.5\n") == [
        RTX_4090, Gpu("Tesla T4", (580, 65, 6), (7, 5))]
    assert parse_nvidia_smi("Quadro K2200, 470.256.02, [N/A]\n") == [Gpu("Quadro K2200", (470, 256, 2), None)]
    assert parse_nvidia_smi("Quadro K2200, 470.256.02\n") == [Gpu("Quadro K2200", (470, 256, 2), None)]


def test_detect_falls_back_to_the_old_query_when_the_driver_knows_no_compute_cap() -> None:
    machine = detect(smi({"nvidia-smi --query-gpu=name,driver_version": "GeForce GTX 1080, 535.183.01\n"}),
                     system="linux", exists=lambda _path: False)
    assert machine.nvidia == [Gpu("GeForce GTX 1080", (535, 183, 1), None)] and not machine.amd


def test_a_current_nvidia_gpu_gets_cuda() -> None:
    choice = choose("auto", Machine("linux", [RTX_4090]), LOCKED)
    assert choice.backend == "cuda" and "RTX 4090" in choice.reason and "580.95.5" in choice.reason


def test_a_driver_too_old_is_named_with_what_to_do() -> None:
    old = Machine("linux", [Gpu("NVIDIA GeForce RTX 3090", (535, 183, 1), (8, 6))])
    choice = choose("auto", old, LOCKED)
    assert choice.backend == "cpu"
    assert "driver 535.183.1 is older than 580" in choice.reason and "update the driver" in choice.reason
    with pytest.raises(BackendError, match="older than 580.*or use --backend cpu"):
        choose("cuda", old, LOCKED)


@pytest.mark.parametrize("compute", [(6, 1), (7, 0)])  # Pascal (GTX 1080), Volta (V100)
def test_a_gpu_too_old_for_the_cuda_build_says_so_plainly(compute) -> None:
    old = Machine("linux", [Gpu("Tesla V100", (580, 95, 5), compute)])
    choice = choose("auto", old, LOCKED)
    assert choice.backend == "cpu"
    assert f"compute capability {compute[0]}.{compute[1]}) is too old" in choice.reason
    assert f"CUDA {CUDA_VERSION}" in choice.reason and "run on the CPU" in choice.reason
    with pytest.raises(BackendError, match="too old"):
        choose("cuda", old, LOCKED)


def test_one_supported_gpu_among_old_ones_is_enough() -> None:
    mixed = Machine("linux", [Gpu("Quadro P4000", (580, 95, 5), (6, 1)), RTX_4090])
    assert choose("auto", mixed, LOCKED).backend == "cuda"


def test_amd_without_a_rocm_build_in_the_lock_falls_back_to_the_cpu_saying_why() -> None:
    choice = choose("auto", Machine("linux", amd=True), LOCKED)
    assert choice.backend == "cpu" and "no rocm build" in choice.reason and "download.pytorch.org" in choice.reason
    with pytest.raises(BackendError, match="no rocm build"):
        choose("rocm", Machine("linux", amd=True), LOCKED)
    assert choose("auto", Machine("linux", amd=True), ("cuda", "rocm", "cpu")).backend == "rocm"


def test_detect_sees_amd_by_its_compute_device_node() -> None:
    assert detect(smi({}), system="linux", exists=lambda path: path == "/dev/kfd").amd


@pytest.mark.parametrize("machine, reason", [
    (Machine("linux"), "no NVIDIA or AMD GPU"),
    (Machine("darwin"), "MPS"),
    (Machine("linux", nvidia_error="NVIDIA-SMI has failed because it couldn't communicate with the driver"),
     "is the NVIDIA driver loaded"),
])
def test_no_usable_gpu_gets_the_cpu(machine: Machine, reason: str) -> None:
    choice = choose("auto", machine, LOCKED)
    assert choice.backend == "cpu" and reason in choice.reason


def test_cuda_asked_for_without_a_gpu_is_refused() -> None:
    with pytest.raises(BackendError, match="no NVIDIA GPU answers"):
        choose("cuda", Machine("linux"), LOCKED)


def test_the_minimums_are_those_of_the_locked_torch() -> None:
    """CUDA_VERSION and CUDA_MIN_COMPUTE describe the torch the lock installs (this venv's)."""
    torch = pytest.importorskip("torch")
    assert torch.version.cuda == CUDA_VERSION
    oldest = min(int(flag.removeprefix("sm_")) for flag in torch._C._cuda_getArchFlags().split())
    assert divmod(oldest, 10) == CUDA_MIN_COMPUTE
