"""Fuzz restoring settings from result PNGs through the real window: nothing escapes, nothing refused
changes the document, nothing is written outside the temporary folder.

A real MainWindow (over the tests' FakeEngine, offscreen) opens a project in a temporary folder whose
result PNG (written by Project.add_edit, so its metadata is exactly what Retake writes) is the seed.
Each case tampers with that metadata: type swaps, NaN, infinities, huge and negative numbers, 5,000-digit
integers, deep nesting, lone surrogates, long text, unknown methods and parameters, other known
methods, missing and extra keys, non-object JSON, broken JSON, giant or compressed text chunks, and
valid values too (so some restores take something). It is restored as an artist does, by File › Load
settings from a result PNG, from the event loop. Then:

* escaped: exceptions that reached sys.excepthook (where PySide sends those a slot raises);
* refused changes: any change to the document that is not a value the PNG holds and the command line
  would accept (pipeline.params.check_params for parameters; text for prompts; a known method);
* writes outside: every file Python code opened for writing, renamed, removed or created, on any
  thread, that lies outside the temporary folder (sys.addaudithook; the window's settings file, which
  Qt writes itself, is in the temporary folder too);
* undo: after each case the restore is undone (one step) and the document must be as before.

    OMP_NUM_THREADS=1 QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/fuzz_png_restore.py --cases 5000

tests/gui/test_png_fuzz.py runs the same fuzzer on fewer cases.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if __name__ == "__main__":  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image, PngImagePlugin  # noqa: E402

from scripts.fuzz_projects import AUDIT, watch  # noqa: E402

PHOTO = Path(__file__).resolve().parent.parent / "resources" / "demo" / "house.png"
ODD_VALUES: list[Any] = [
    float("nan"), float("inf"), -float("inf"), 10**30, -10**30, -1, 0, 1e308, 2**63, "7", "many", "", "\ud800x",
    [], [1, 2], [0.1, 0.2, 0.3], {}, {"cat": 2}, {"cat": float("nan")}, None, True, False, 0.5, 3, 7.5, 150,
    "null-text", "direct", ["cat"], [["cat"]], {"\udfff": 1}, "x" * 10_000, [[[]]],
]
TEXTS: list[Any] = ["a blue house", "", "\ud800", 5, None, ["a"], {"a": 1}, "x" * 100_000, "ça\u0000va"]


@dataclass
class Counts:
    cases: int = 0
    restored: int = 0  # the document changed
    messages: int = 0  # something was named as not restored
    escaped: list[str] = field(default_factory=list)
    refused_changes: list[str] = field(default_factory=list)
    undo_failures: list[str] = field(default_factory=list)
    writes_outside: list[str] = field(default_factory=list)
    bytes_outside: int = 0
    writes_inside: int = 0  # the fuzzer's own PNGs: the audit is watching

    @property
    def ok(self) -> bool:
        return not (self.escaped or self.refused_changes or self.undo_failures or self.writes_outside)

    def summary(self) -> dict[str, Any]:
        return {"cases": self.cases, "restores_that_changed_the_document": self.restored,
                "restores_with_a_message": self.messages, "escaped_exceptions": len(self.escaped),
                "document_changes_from_refused_values": len(self.refused_changes),
                "undo_failures": len(self.undo_failures), "files_written_outside_the_temp_folder":
                len(self.writes_outside), "bytes_written_outside_the_temp_folder": self.bytes_outside,
                "writes_seen_inside_the_temp_folder": self.writes_inside,
                "examples": (self.escaped + self.refused_changes + self.undo_failures + self.writes_outside)[:10]}


def tampered(rng: random.Random, seed: dict[str, Any], names: list[str], methods: list[str]) -> str | dict:
    """One tampered copy of `seed` (the metadata of a real result): a dict, or raw text."""
    kind = rng.random()
    if kind < 0.04:
        return rng.choice(['[1, 2]', '"text"', "null", "17", '{"params": ' + "[" * 50_000 + "]" * 50_000 + "}",
                           json.dumps(seed)[: rng.randrange(1, 200)], '{"method": "p2p", "params": {"steps": '
                           + "9" * 5000 + "}}", "\x00\xff garbage", '{"method": "p2p", "method": "evil"}'])
    data = json.loads(json.dumps(seed))
    params = data["params"]
    for _ in range(rng.randint(1, 6)):
        choice = rng.random()
        if choice < 0.45:
            params[rng.choice(names)] = rng.choice(ODD_VALUES)
        elif choice < 0.55:
            params[rng.choice(["future", "power", "\ud800", "", "x" * 300])] = rng.choice(ODD_VALUES)
        elif choice < 0.63:
            data["method"] = rng.choice([*methods, "evil-method", 5, None, ["p2p"], "", "\udc00", "p2p" * 1000])
        elif choice < 0.75:
            data[rng.choice(["source_prompt", "target_prompt"])] = rng.choice(TEXTS)
        elif choice < 0.8:
            data["params"] = params = rng.choice([[], "steps=7", None, 5, {}])
            if not isinstance(params, dict):
                break
        elif choice < 0.85:
            del data[rng.choice([key for key in ("method", "params", "source_prompt", "target_prompt") if key in data]
                                or ["app"])]
            if "params" not in data:
                break
        elif choice < 0.9:
            data["app"] = rng.choice(["Retake 99.0", 5, None, "\ud800"])
        else:
            name = rng.choice(names)
            params.pop(name, None)
    return data


def write_png(path: Path, metadata: str | dict, rng: random.Random) -> Path:
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)  # NaN and Infinity included
    info = PngImagePlugin.PngInfo()
    if rng.random() < 0.05:
        text = text * (2_000_000 // max(len(text), 1) + 1)  # beyond the PNG reader's text limit
    info.add_itxt("retake", text, zip=rng.random() < 0.3)
    Image.new("RGB", (8, 8), "teal").save(path, pnginfo=info)
    return path


def document(window: Any) -> tuple[Any, ...]:
    doc = window.doc
    return doc.source_prompt, doc.target_prompt, doc.method_id, json.dumps(doc.params, sort_keys=True)


def refused_changes(before: tuple[Any, ...], window: Any, metadata: str | dict) -> list[str]:
    """Changes to the document that are not values `metadata` holds and the command line accepts."""
    from gui.document import method_defaults
    from pipeline.methods.registry import get_method, method_ids
    from pipeline.params import check_params, is_text

    doc = window.doc
    source, target, method, params = before
    data = metadata if isinstance(metadata, dict) else {}
    wrong = []
    for which, old, new in (("source_prompt", source, doc.source_prompt), ("target_prompt", target, doc.target_prompt)):
        given = data.get(which)
        if new != old and not (isinstance(given, str) and is_text(given) and new == given):
            wrong.append(f"{which} became {new[:40]!r}")
    if doc.method_id != method and not (doc.method_id == data.get("method") and doc.method_id in method_ids()):
        wrong.append(f"method became {doc.method_id!r}")
    old_params = json.loads(params)
    given = data.get("params") if isinstance(data.get("params"), dict) else {}
    defaults = method_defaults(doc.method_id)
    for name, value in doc.params.items():
        if doc.method_id == method and old_params.get(name) == value:
            continue  # unchanged
        if name in given:
            checked = check_params(get_method(doc.method_id).Params, {name: given[name]})
            if checked.ok and checked.json_values()[name] == value:
                continue  # a valid value of the PNG
        if doc.method_id != method and name in defaults and defaults[name] == value:
            continue  # another method, with its default where the PNG said nothing valid
        wrong.append(f"{name} became {str(value)[:40]}")
    for name, value in doc.params.items():
        if isinstance(value, float) and not math.isfinite(value):
            wrong.append(f"{name} is {value}")
    return wrong


def fuzz(window: Any, root: Path, cases: int, seed: int) -> Counts:
    """Restore `cases` tampered PNGs in `window` (its project open in `root`), counting what went wrong."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QFileDialog

    from pipeline.methods.registry import method_ids
    from pipeline.project import Project

    app = QApplication.instance()
    project = Project.open(window.doc.project_path)
    seed_png = project.result_path(project.edits[-1])
    with Image.open(seed_png) as image:
        image.load()
        seed_data = json.loads(image.text["retake"])
    names = sorted(seed_data["params"])
    rng = random.Random(seed)
    counts = Counts()
    chosen: list[str] = []
    real_dialog = QFileDialog.getOpenFileName
    QFileDialog.getOpenFileName = staticmethod(lambda *a, **k: (chosen[-1], ""))  # type: ignore[method-assign]
    real_hook = sys.excepthook
    sys.excepthook = lambda kind, value, tb: counts.escaped.append(f"{kind.__name__}: {str(value)[:200]}")
    pngs = root / "pngs"
    pngs.mkdir(exist_ok=True)
    watch(root)
    try:
        for i in range(cases):
            metadata = tampered(rng, seed_data, names, method_ids())
            path = write_png(pngs / f"case-{i}.png", metadata, rng)
            chosen.append(str(path))
            before, depth = document(window), window.doc.undo.index()
            window.message.hide()
            done: list[bool] = []
            QTimer.singleShot(0, lambda: (window.actions["load_png"].trigger(), done.append(True)))
            while not done:
                app.processEvents()
            counts.cases += 1
            counts.messages += window.message.isVisible()
            if window.doc.undo.index() != depth:
                counts.restored += 1
                counts.refused_changes += [f"case {i}: {text}" for text in refused_changes(before, window, metadata)]
                window.doc.undo.undo()
            if document(window) != before or window.doc.undo.index() != depth:
                counts.undo_failures.append(f"case {i}: undo did not give back the document")
            path.unlink()
            if i % 200 == 199:
                window.doc.undo.clear()
    finally:
        outside = [write for write in AUDIT.writes if not _inside(write.split(" ", 1)[1], root)]
        counts.writes_inside = len(AUDIT.writes) - len(outside)
        watch(None)
        sys.excepthook = real_hook
        QFileDialog.getOpenFileName = real_dialog  # type: ignore[method-assign]
    counts.writes_outside = outside
    counts.bytes_outside = sum(os.path.getsize(p) for w in outside if os.path.isfile(p := w.split(" ", 1)[1]))
    return counts


def _inside(path: str, root: Path) -> bool:
    resolved = os.path.realpath(os.path.abspath(path))
    base = os.path.realpath(root)
    return resolved == base or resolved.startswith(base + os.sep)


def window_with_a_result(root: Path) -> Any:
    """A real window (FakeEngine) over a project in `root` whose one result was written by Retake."""
    from PySide6.QtCore import QSettings

    from gui.app import make_app, wait_until
    from gui.settings import AppSettings
    from gui.window import MainWindow
    from pipeline.images import load_image
    from pipeline.project import ModelRecord, Project
    from tests.gui.fakes import FakeEngine

    make_app()
    project = Project.create(root / "house.retake", load_image(PHOTO))
    project.add_edit(target_prompt="a blue house", source_prompt="a red house", model=ModelRecord("demo", "sha256:x"),
                     method="p2p", params={"steps": 50, "guidance": 7.5, "inversion": "direct", "blend_words": ["house"],
                                           "reweight": {"blue": 2.0}, "cross_replace": [0.0, 0.8]},
                     seed=None, inversion_key=None, result=Image.new("RGB", (64, 48), "blue"))
    settings = AppSettings(QSettings(str(root / "settings.ini"), QSettings.Format.IniFormat))
    settings.set("autosave_minutes", 0)
    window = MainWindow(settings, engine_factory=FakeEngine)
    window.show()
    wait_until(lambda: window.engine.is_ready, 120)
    assert window.open_path(root / "house.retake")
    return window


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the counts here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="retake-png-fuzz-") as tmp:
        root = Path(tmp)
        window = window_with_a_result(root)
        started = time.monotonic()
        counts = fuzz(window, root, args.cases, args.seed)
        window.doc.undo.setClean()
        window.close()
    summary = {**counts.summary(), "seed": args.seed, "seconds": round(time.monotonic() - started, 1)}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0 if counts.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
