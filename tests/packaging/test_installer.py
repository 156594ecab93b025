"""The installer's install, upgrade, rollback, interruption and uninstall, on fake runtimes (fake_uv.py):
the real retake_install code, the real launcher scripts and menu entry, no torch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retake_install.install import Options, install
from retake_install.layout import Layout
from retake_install.runtime import InstallError
from tests.packaging.conftest import snapshot


def quiet(_message: str) -> None:
    pass


def install_(payload, layout: Layout, **changes: object) -> str:
    """install() as the installer calls it, with the environment as it is now (the test may have set it)."""
    options = Options(**{"backend": "cpu", "python": sys.executable, **changes})  # type: ignore[arg-type]
    return install(payload, Layout.for_user(layout.prefix), options, quiet)


def user_data(home: Path) -> dict:
    return {path: content for path, content in snapshot(home).items()
            if "/.local/opt" not in path and "/.local/bin" not in path and "/.local/share/applications" not in path
            and "/.local/share/icons" not in path}


def run_launcher(layout: Layout, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([str(layout.links / "retake"), *args], capture_output=True, text=True, env=env, check=False)


def test_fresh_install_puts_each_piece_in_place(make_payload, layout: Layout, home: Path) -> None:
    name = install_(make_payload("0.1.0"), layout)
    assert layout.current() == name and name.startswith("0.1.0-")
    record = json.loads((layout.versions / name / "install.json").read_text())
    assert record["backend"] == "cpu" and record["torch"] == {"torch": "2.14.1", "cuda": None, "hip": None}
    for launcher in ("retake", "retake-uninstall"):
        assert os.access(layout.bin / launcher, os.X_OK)
        assert (layout.links / launcher).resolve() == layout.bin / launcher
    entry = layout.desktop_entry.read_text()
    assert f'Exec="{layout.bin / "retake"}" open %f' in entry and "Icon=retake" in entry
    assert layout.icon("png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and layout.icon("svg").exists()
    manifest = json.loads(layout.manifest.read_text())
    assert set(manifest["files"]) == {str(layout.links / "retake"), str(layout.links / "retake-uninstall"),
                                      str(layout.desktop_entry), str(layout.icon("png")), str(layout.icon("svg"))}
    done = run_launcher(layout, "self-test")  # ~/.local/bin/retake -> <prefix>/bin/retake -> the runtime
    assert done.returncode == 0 and done.stdout.strip() == "fake retake self-test"


def test_the_runtime_is_made_from_the_lock_with_hashes_and_the_chosen_extra(make_payload, layout, tmp_path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    install_(make_payload(), layout, backend="cpu", wheels=wheels)
    calls = [json.loads(line) for line in (tmp_path / "uv-calls.jsonl").read_text().splitlines()]
    export = next(call for call in calls if call[0] == "export")
    assert "--frozen" in export and export[export.index("--extra") + 1] == "cpu"
    sync = next(call for call in calls if call[:2] == ["pip", "sync"])
    assert "--require-hashes" in sync and "--no-build" in sync
    assert all("--compile-bytecode" in call for call in calls if call[0] == "pip")  # no compiling at first launch
    assert sync[sync.index("--find-links") + 1] == str(wheels) and "--no-index" in sync and "--offline" in sync


def test_upgrade_keeps_user_data_and_replaces_the_version(make_payload, layout: Layout, home: Path) -> None:
    first = install_(make_payload("0.1.0"), layout)
    data = user_data(home)
    second = install_(make_payload("0.2.0"), layout)
    assert layout.current() == second != first and second.startswith("0.2.0-")
    assert sorted(p.name for p in layout.versions.iterdir()) == [second]  # the old one removed after the switch
    assert user_data(home) == data  # settings, presets, models, projects, cache: byte for byte


def test_a_new_version_failing_its_self_test_changes_nothing(make_payload, layout: Layout, home: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    first = install_(make_payload("0.1.0"), layout)
    before = snapshot(home)
    monkeypatch.setenv("FAKE_SELF_TEST_EXIT", "1")
    with pytest.raises(InstallError, match="failed its self-test.*0.1.0.* is still installed"):
        install_(make_payload("0.2.0"), layout)
    assert snapshot(home) == before and layout.current() == first
    monkeypatch.delenv("FAKE_SELF_TEST_EXIT")
    assert run_launcher(layout, "self-test").returncode == 0


def test_a_cuda_install_that_brings_a_cpu_torch_is_refused(make_payload, layout: Layout, home: Path) -> None:
    before = snapshot(home)
    with pytest.raises(InstallError, match="cuda choice installed torch 2.14.1 without CUDA"):
        install_(make_payload(), layout, backend="cuda")
    assert snapshot(home) == before


@pytest.mark.parametrize("step", ["venv", "export", "sync", "install"])
def test_a_failed_fresh_install_leaves_nothing(make_payload, layout: Layout, home: Path, step: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(home)
    monkeypatch.setenv("FAKE_UV_FAIL", step)
    with pytest.raises(InstallError):
        install_(make_payload(), layout)
    assert snapshot(home) == before  # not even an empty ~/.local/opt


def _interrupt(payload, layout: Layout, home: Path, tmp_path: Path, sig: signal.Signals) -> subprocess.Popen:
    """Start the installer as the user would (python -m retake_install install), stop it with `sig`
    while uv installs packages; return the finished process."""
    flag = tmp_path / "hanging"
    env = {**os.environ, "FAKE_UV_HANG": "sync", "FAKE_UV_HANG_FILE": str(flag), "PYTHONPATH": str(payload.root)}
    process = subprocess.Popen([sys.executable, "-m", "retake_install", "install", "--yes", "--skip-system-check",
                                "--backend", "cpu", "--prefix", str(layout.prefix), "--no-self-test"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()  # type: ignore[union-attr]
        time.sleep(0.05)
    process.send_signal(sig)
    process.wait(60)
    return process


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_fresh_install_leaves_nothing(make_payload, layout, home, tmp_path, sig) -> None:
    before = snapshot(home)
    process = _interrupt(make_payload(), layout, home, tmp_path, sig)
    assert process.returncode == 130 and "interrupted: nothing was changed" in process.stdout.read()  # type: ignore[union-attr]
    assert snapshot(home) == before


def test_an_interrupted_upgrade_keeps_the_installed_version(make_payload, layout, home, tmp_path) -> None:
    first = install_(make_payload("0.1.0"), layout)
    before = snapshot(home)
    process = _interrupt(make_payload("0.2.0"), layout, home, tmp_path, signal.SIGTERM)
    assert process.returncode == 130
    assert snapshot(home) == before and layout.current() == first


def test_a_killed_install_is_cleaned_up_by_the_next(make_payload, layout: Layout, home: Path) -> None:
    first = install_(make_payload("0.1.0"), layout)
    (layout.versions / "0.2.0-killed").mkdir()  # what SIGKILL during a build leaves: a folder nobody names
    second = install_(make_payload("0.2.0"), layout)
    assert sorted(p.name for p in layout.versions.iterdir()) == [second] and second != first


def test_uninstall_removes_exactly_what_the_installs_added(make_payload, layout: Layout, home: Path) -> None:
    before = snapshot(home)
    install_(make_payload("0.1.0"), layout)
    install_(make_payload("0.2.0"), layout)  # the manifest covers both installs
    (home / ".local" / "share" / "applications" / "other.desktop").write_text("[Desktop Entry]\n")  # not ours
    done = subprocess.run([str(layout.links / "retake-uninstall"), "--yes"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    after = snapshot(home)
    other = str(home / ".local" / "share" / "applications" / "other.desktop")
    assert after.pop(other) == ("file", b"[Desktop Entry]\n", 0o644)
    assert after == {**before, str(home / ".local" / "share" / "applications"): ("dir",)}
    assert "Kept (retake-uninstall --purge removes them)" in done.stdout


def test_uninstall_purge_removes_user_data_but_never_projects(make_payload, layout: Layout, home: Path) -> None:
    install_(make_payload(), layout)
    done = subprocess.run([str(layout.links / "retake-uninstall"), "--yes", "--purge"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    left = {str(Path(path).relative_to(home)) for path in snapshot(home)}
    assert left == {"Pictures", "Pictures/cat.retake", "Pictures/cat.retake/project.json", ".config", ".local",
                    ".local/share", ".cache"}


def test_the_launcher_says_what_to_do_when_the_runtime_is_broken(make_payload, layout: Layout) -> None:
    name = install_(make_payload(), layout)
    (layout.versions / name / "venv" / "bin" / "python").unlink()  # e.g. the distribution removed its Python
    done = run_launcher(layout, "self-test")
    assert done.returncode == 1 and "Run the Retake installer again" in done.stderr
