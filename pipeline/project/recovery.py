"""Setting damaged files aside so that the rest of a project stays usable.

A damaged old result or a lost inversion should not lock a person out of their photo, its settings
and every other edit. Recovery moves each damaged file into `quarantine/<time>/` (never deleting
it), writes a NOTE.txt there saying what each file was and why it was moved, and drops the records
that pointed at it. Each loss becomes one sentence for the user.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

from pipeline.errors import shorten
from pipeline.project.folder import QUARANTINE_DIR, Folder
from pipeline.project.records import Manifest
from pipeline.project.verify import Problem

NOTE_FILE = "NOTE.txt"


def quarantine_folder(folder: Folder) -> str:
    """A new `quarantine/<UTC time>` folder name (not yet created) for this recovery."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name, n = f"{QUARANTINE_DIR}/{stamp}", 1
    while folder.lstat(name) is not None:
        n += 1
        name = f"{QUARANTINE_DIR}/{stamp}-{n}"
    return name


def set_aside(folder: Folder, manifest: Manifest, problems: list[Problem]) -> tuple[Manifest, tuple[str, ...]]:
    """Move the files of `problems` (all repairable) into a quarantine folder, write its NOTE.txt and
    return the manifest without their records, with one sentence per loss.

    The caller commits the manifest; if it is killed first, the next recovery finds the files missing
    and drops the same records.
    """
    place = quarantine_folder(folder)
    notes, sentences = [], []
    by_file = {p.file: p for p in problems}
    for problem in problems:
        what, consequence = _loss(manifest, problem)
        if folder.move(problem.file, f"{place}/{problem.file}"):
            notes.append(f"{problem.file}: {what} {problem.reason}.")
            fate = f"was damaged and moved to {shorten(place)}/"
        else:
            fate = "was missing"
        sentences.append(f"{what[0].upper()}{what[1:]} {fate}; {consequence}.")
    if notes:
        folder.write(f"{place}/{NOTE_FILE}", _note(notes).encode("utf-8"))
    kept_edits = []
    for edit in manifest.edits:
        if edit.result.file in by_file:
            continue
        if edit.mask is not None and edit.mask.file in by_file:
            edit = dataclasses.replace(edit, mask=None)
        kept_edits.append(edit)
    repaired = dataclasses.replace(
        manifest,
        inversions=tuple(inv for inv in manifest.inversions if inv.file not in by_file),
        edits=tuple(kept_edits),
        inputs=tuple(item for item in manifest.inputs if item.file.file not in by_file),
    )
    return repaired, tuple(sentences)


def _note(lines: list[str]) -> str:
    return ("Retake moved these files out of the project because they were damaged; project.json no longer\n"
            "refers to them. Nothing here is needed to open the project; delete the folder when you like.\n\n"
            + "\n".join(lines) + "\n")


def _loss(manifest: Manifest, problem: Problem) -> tuple[str, str]:
    """What the lost file was (a phrase) and what losing it means for the user."""
    if problem.kind == "result":
        edit = next(e for e in manifest.edits if e.result.file == problem.file)
        return f"result {edit.id}", "the other results are intact"
    if problem.kind == "inversion":
        inv = next(i for i in manifest.inversions if i.file == problem.file)
        return f"the stored inversion {shorten(inv.key)}", "it will be recomputed on the next edit"
    if problem.kind == "mask":
        ids = ", ".join(e.id for e in manifest.edits if e.mask is not None and e.mask.file == problem.file)
        return f"the mask of edit {shorten(ids)}", "the results are intact"
    item = next(i for i in manifest.inputs if i.file.file == problem.file)
    return f"the {item.kind} input {item.name}", "set it again to use it"
