"""What a CLI process pays before and after its work (issue 19; the seconds are in bench/bench_startup.py).

A re-edit imports what it runs and nothing more: Ray (batch), segment-anything (masks from clicks) and Qt
stay out of the CLI's imports until a command asks for them. The libraries it does import are loaded
with the garbage collector paused and then frozen (main.libraries_loading), which must leave the
collector on for the run and must not hide the run's own garbage from it.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_FOR_A_RE_EDIT = ("ray", "segment_anything", "PySide6", "shiboken6", "superqt", "gui", "cv2", "matplotlib")


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_cli_imports_nothing_a_re_edit_does_not_use():
    code = ("import sys, cli.commands, pipeline.engine\n"
            f"print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({NOT_FOR_A_RE_EDIT!r}))))")
    assert _python(code) == ""


def test_libraries_loading_freezes_what_it_imports_and_leaves_the_collector_on():
    code = (
        "import gc, main\n"
        "assert gc.get_freeze_count() == 0\n"
        "with main.libraries_loading():\n"
        "    paused = not gc.isenabled()\n"
        "    import json, decimal\n"
        "    made = [[i] for i in range(1000)]\n"
        "frozen = gc.get_freeze_count()\n"
        "class Cycle: pass\n"
        "a, b = Cycle(), Cycle(); a.b, b.a = b, a\n"
        "del a, b\n"
        "print(paused, gc.isenabled(), frozen >= 1000, gc.collect() >= 2)\n"
    )
    assert _python(code) == "True True True True"
