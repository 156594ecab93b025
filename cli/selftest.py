"""`retake self-test`: invert, edit, save, reopen and re-edit on the demo model, in a few seconds.

It edits the demo-world scene the README's commands edit (`DEMO_EDIT`: a red house made blue), at the
model's own 128 px and a few steps. It exits 0 only if every stage worked and the re-edit reused the
stored inversion and reproduced the first result byte for byte, and, run from main.py, if the desktop
window (offscreen) edited the scene too, with a preview at every step and a full decode of a scrubbed
step (gui/selftest.py). Later issues add their methods' checks here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from pipeline.demo_model import DEMO_EDIT
from pipeline.engine import EditRequest, Engine
from pipeline.events import Done, Event
from pipeline.project import Project

QUICK = {"steps": 6, "inner_steps": 3}


def self_test(engine: Engine, out: TextIO, more_checks: Callable[[Path], list[tuple[str, bool]]] | None = None) -> int:
    """Run the checks, print one line each, return the exit code; `more_checks(demo_image)` adds named
    checks of its own (main.py's: the same edit through the desktop window)."""
    checks: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="retake-self-test-") as tmp:
        project = Path(tmp) / "house.retake"
        request = EditRequest(target_prompt=DEMO_EDIT.target, source_prompt=DEMO_EDIT.source,
                              image=str(DEMO_EDIT.image), project=str(project), model="demo",
                              params=dict(QUICK))
        first = _run(engine, request, out)
        checks.append(("invert and edit", isinstance(first, Done) and not first.reused_inversion))
        reopened = Project.open(project)
        checks.append(("save and reopen", len(reopened.edits) == 1))
        again = _run(engine, EditRequest(target_prompt=request.target_prompt, project=str(project)), out)
        checks.append(("re-edit reuses the inversion", isinstance(again, Done) and again.reused_inversion))
        same = (isinstance(first, Done) and isinstance(again, Done)
                and first.image.tobytes() == again.image.tobytes())
        checks.append(("re-edit reproduces the result", same))
    if more_checks is not None:
        checks += more_checks(DEMO_EDIT.image)
    for name, ok in checks:
        out.write(f"{'ok  ' if ok else 'FAIL'} {name}\n")
    passed = all(ok for _, ok in checks)
    out.write("self-test passed\n" if passed else "self-test FAILED\n")
    return 0 if passed else 1


def _run(engine: Engine, request: EditRequest, out: TextIO) -> Event:
    event = engine.run(request, lambda _event: None)
    if not isinstance(event, Done):
        out.write(f"  run ended with {event}\n")
    return event
