"""Kill a real saving app at chosen instants and check the project each kill leaves behind.

Each kill needs a fresh app process, and importing torch and Qt takes seconds; so a zygote process
imports everything once and forks one child per kill, before any Qt object or thread of the app
exists. The child is the real app: a QApplication, the real MainWindow over the tests' FakeEngine,
the project opened through the window, and one save after another through `window.save()` (the
session's project-I/O thread, Project.save_state), each of the whole document: the source prompt
"state K", the edit mask filled with `mask_value(K)` and the guidance `guidance(K)`, K = 1, 2, ...
It reports each K once `save()` returns. The zygote kills it with SIGKILL at the instant asked
(`random`: a delay after its first save is reported; `replace`: just before or after the Nth file rename of
its first save, the commit point of every file write) and says which K was last reported.

`check` then reopens the project: it must open as it is (no repair), hold one whole state J (the
prompt, the mask and the guidance of the same J: never the new prompt with the old mask) with J the
last state reported or the one after it, and take a next save that leaves no debris behind.

    python -m tests.gui.save_killer   (the zygote; the test and scripts/kill_app_saves.py start it)
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "resources" / "demo" / "house.png"
READY_TIMEOUT_S = 60


def mask_value(k: int) -> int:
    return 1 + (37 * k) % 255


def guidance(k: int) -> float:
    return 1.0 + k % 19


def make_template(root: Path) -> None:
    """A project of the demo photo in state 0."""
    from PIL import Image

    from gui.document import DocumentState, method_defaults
    from gui.project_io import save_document
    from pipeline.images import load_image
    from pipeline.project import Project

    Project.create(root, load_image(PHOTO))
    size = Image.open(PHOTO).size
    save_document(root, DocumentState("state 0", "", "p2p", {**method_defaults("p2p"), "guidance": guidance(0)},
                                      {"edit_mask": np.full(size[::-1], mask_value(0), np.uint8)}))


def check(root: Path, saved: int) -> tuple[int | None, list[str]]:
    """The state a kill left in the project (None if it has none) and what is wrong with it (nothing:
    []), given the last state the app reported saved: the project opens unrepaired, holds one whole
    state, that state or the next, and saves cleanly again."""
    from gui.document import DocumentState
    from gui.project_io import save_document
    from pipeline.errors import ProjectError
    from pipeline.project import Project

    try:
        project = Project.open(root)
    except ProjectError as error:
        return None, [f"does not open: {error}"]
    match = re.fullmatch(r"state (\d+)", project.settings.source_prompt)
    if match is None:
        return None, [f"source prompt {project.settings.source_prompt!r}"]
    k = int(match.group(1))
    problems = []
    mask = project.input_image("edit_mask")
    values = set() if mask is None else set(np.unique(np.asarray(mask)).tolist())
    if values != {mask_value(k)}:
        problems.append(f"torn: the prompt of state {k} with a mask of {sorted(values)[:3]}")
    if project.settings.params.get("guidance") != guidance(k):
        problems.append(f"torn: the prompt of state {k} with guidance {project.settings.params.get('guidance')}")
    if k not in (saved, saved + 1):
        problems.append(f"state {k} after the app reported state {saved} saved")
    shape = np.asarray(mask).shape if mask is not None else (8, 8)
    save_document(root, DocumentState(f"state {k + 1}", "", "p2p", dict(project.settings.params),
                                      {"edit_mask": np.full(shape, mask_value(k + 1), np.uint8)}))
    referenced = Project.open(root).manifest.referenced_files() | {"project.json"}
    debris = sorted(name for path in root.rglob("*") if path.is_file()
                    and (name := str(path.relative_to(root))) not in referenced)
    if debris:
        problems.append(f"left behind after the next save: {debris}")
    return k, problems


class Killer:
    """The zygote, as a context manager: `kill(project, mode, value)` forks a saving app and kills it."""

    def __enter__(self) -> Killer:
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
        self._process = subprocess.Popen([sys.executable, "-m", "tests.gui.save_killer"], cwd=ROOT, env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return self

    def kill(self, project: Path, mode: str, value: float | int) -> dict[str, Any]:
        """`mode` "random": kill `value` seconds after the app reported its first save; "replace-before" /
        "replace-after": kill at the `value`-th file rename of the first save. Returns the child's
        exit status and the last state it reported saved."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps({"project": str(project), "mode": mode, "value": value}) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the zygote died")
        return json.loads(line)

    def __exit__(self, *exc_info: object) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(30)


# -- the zygote and its children ------------------------------------------------------------------


def _child(project: Path, mode: str, value: float | int, report: int) -> None:
    from PySide6.QtCore import QSettings

    from gui.app import make_app
    from gui.settings import AppSettings
    from gui.window import MainWindow
    from tests.gui.fakes import FakeEngine

    make_app()
    settings = AppSettings(QSettings(str(Path(tempfile.mkdtemp()) / "settings.ini"), QSettings.Format.IniFormat))
    settings.set("autosave_minutes", 0)
    window = MainWindow(settings, engine_factory=FakeEngine)
    if not window.open_project(project):
        raise RuntimeError(f"the window did not open {project}: {window.message.text.text()}")
    os.write(report, b"ready\n")
    if mode.startswith("replace"):
        _kill_at_replace(int(value), after=mode.endswith("after"))
    k = 0
    while True:
        k += 1
        doc = window.doc
        doc.set_prompt("source", f"state {k}")
        doc.replace_mask("edit_mask", np.full_like(doc.mask("edit_mask"), mask_value(k)), "Fill")
        doc.set_param("guidance", guidance(k))
        if not window.save():
            raise RuntimeError(f"save {k} failed: {window.message.text.text()}")
        os.write(report, f"saved {k}\n".encode())
        if mode.startswith("replace"):
            return


def _kill_at_replace(point: int, after: bool) -> None:
    """SIGKILL this process just before (or after) its `point`-th os.replace from now on."""
    real, calls = os.replace, [0]

    def replace(src: Any, dst: Any) -> None:
        calls[0] += 1
        if calls[0] == point and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)
        if calls[0] == point and after:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace  # type: ignore[assignment]


def _run(command: dict[str, Any]) -> dict[str, Any]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        status = 0
        try:
            _child(Path(command["project"]), command["mode"], command["value"], write)
        except BaseException as error:  # noqa: BLE001 - said on stderr; the parent sees the exit status
            print(f"child: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            status = 3
        os._exit(status)
    os.close(write)
    lines: list[str] = []
    buffer = b""

    def take(timeout: float) -> bool:
        nonlocal buffer
        if not select.select([read], [], [], timeout)[0]:
            return False
        chunk = os.read(read, 4096)
        buffer += chunk
        *done, buffer = buffer.split(b"\n")
        lines.extend(line.decode() for line in done)
        return bool(chunk)

    # "random" counts its delay from the first save reported, so every such kill falls among saves
    awaited = "saved 1" if command["mode"] == "random" else "ready"
    deadline, status = time.monotonic() + READY_TIMEOUT_S, None
    while awaited not in lines and time.monotonic() < deadline:
        if not take(0.1) and (reaped := os.waitpid(pid, os.WNOHANG))[0]:
            status = reaped[1]  # it ended before it was ready
            break
    if status is None:
        if command["mode"] == "random" or "ready" not in lines:
            time.sleep(command["value"] if awaited in lines else 0)
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    while take(0):
        pass
    os.close(read)
    saved = [int(line.split()[1]) for line in lines if line.startswith("saved ")]
    return {"ready": "ready" in lines, "saved": max(saved, default=0),
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}


def zygote() -> None:
    """Import what the app needs once, then fork a saving app for each command on stdin."""
    import gui.window  # noqa: F401 - imported once, before any fork
    import pipeline.methods.registry  # noqa: F401
    import pipeline.tokenizer
    import tests.gui.fakes  # noqa: F401

    # Each app's engine thread reads the CLIP vocabulary at start-up, a second of pure Python that would
    # compete with the project opening for the interpreter; read once here, the children share it.
    tokenizer = pipeline.tokenizer.load_clip_tokenizer()
    pipeline.tokenizer.load_clip_tokenizer = lambda *args, **kwargs: tokenizer
    for line in sys.stdin:
        print(json.dumps(_run(json.loads(line))), flush=True)


if __name__ == "__main__":
    zygote()
