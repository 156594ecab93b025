#!/usr/bin/env python3
"""A stand-in for uv in the installer's tests: the installer runs it exactly as it runs uv, and it
makes a runtime of a few files instead of 5 GB (no torch, no network).

`venv` makes bin/python (the real interpreter, seeing the runtime's site/ first); `pip sync` puts a
fake torch into site/ (a CUDA build when FAKE_TORCH_CUDA is set); `pip install` of the Retake wheel
writes bin/retake, which answers `self-test` with the exit status in FAKE_SELF_TEST_EXIT (0 if
unset). FAKE_UV_FAIL=STEP makes that step (venv, export, sync, install) fail; FAKE_UV_HANG=STEP makes
it write FAKE_UV_HANG_FILE and wait to be killed. Every call is appended to FAKE_UV_LOG.
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path


def step_of(argv: list[str]) -> str:
    if argv[0] == "pip":
        return "sync" if argv[1] == "sync" else "install"
    return argv[0]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def main(argv: list[str]) -> int:
    if log := os.environ.get("FAKE_UV_LOG"):
        with open(log, "a", encoding="utf-8") as file:
            file.write(json.dumps(argv) + "\n")
    step = step_of(argv)
    if os.environ.get("FAKE_UV_FAIL") == step:
        print(f"fake uv: {step} failed", file=sys.stderr)
        return 2
    if os.environ.get("FAKE_UV_HANG") == step:
        Path(os.environ["FAKE_UV_HANG_FILE"]).write_text("hanging")
        time.sleep(600)
    if step == "venv":
        venv = Path(argv[-1])
        (venv / "bin").mkdir(parents=True)
        (venv / "site").mkdir()
        python = venv / "bin" / "python"
        python.write_text(f'#!/bin/sh\nPYTHONPATH="{venv / "site"}" exec "{sys.executable}" "$@"\n')
        python.chmod(0o755)
    elif step == "export":
        Path(option(argv, "--output-file")).write_text("torch==2.14.1 --hash=sha256:00\n")
    elif step == "sync":
        site = Path(option(argv, "--python")).parent.parent / "site"
        cuda = os.environ.get("FAKE_TORCH_CUDA")
        (site / "torch").mkdir()
        (site / "torch" / "__init__.py").write_text(
            f"__version__ = '2.14.1'\nclass version:\n    cuda = {cuda!r}\n    hip = None\n")
    elif step == "install":  # the wheel carries retake_install, which retake-uninstall runs
        wheel = Path(argv[-1])
        shutil.copytree(wheel.parent.parent / "retake_install", Path(option(argv, "--python")).parent.parent
                        / "site" / "retake_install")
        app = Path(option(argv, "--python")).parent / "retake"
        app.write_text('#!/bin/sh\necho "fake retake $*"\n'
                       'if [ "$1" = self-test ]; then exit "${FAKE_SELF_TEST_EXIT:-0}"; fi\n')
        app.chmod(0o755)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
