"""`retake project check DIR [--repair]`: what is in a project, what is wrong with it, and the repair.

Checking reads only, so it is safe on a project someone sent you, and hashes every file (opening a
project does not; see pipeline.project.verify); repairing is `Project.open` with `recover=True` and
`verify=True`, which sets every damaged file aside in quarantine/ and keeps everything else. What
the summary echoes from project.json goes through `codec.show`, which escapes control characters,
so a hostile manifest cannot drive the terminal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ProjectError, printable, shorten
from pipeline.project.codec import parse_manifest, show
from pipeline.project.folder import Folder, shown
from pipeline.project.records import Manifest
from pipeline.project.store import Project, read_manifest_bytes, cannot_open_message
from pipeline.project.verify import find_problems


@dataclass(frozen=True)
class ProjectHealth:
    """The state of a project folder: `ok` when it opens as is; `repairable` when `repair_project`
    (or `Project.open(path, recover=True)`) would make it open, losing only what `problems` names."""

    path: str
    ok: bool
    problems: tuple[str, ...]
    repairable: bool
    contents: tuple[str, ...] = ()  # "photo: ...", "settings: ...", ... (empty if the manifest is unreadable)
    repaired: tuple[str, ...] = ()  # what a repair set aside, one sentence each

    def summary(self) -> str:
        """A few lines for a terminal: the verdict, what the project holds, what is (or was) wrong."""
        verdict = ("sound" if self.ok else "damaged; `--repair` sets the damaged files aside" if self.repairable
                   else "damaged beyond repair")
        lines = [f"Project {self.path}: {verdict}"]
        lines += [f"  {line}" for line in self.contents]
        lines += [f"  problem: {problem}" for problem in self.problems]
        lines += [f"  repaired: {sentence}" for sentence in self.repaired]
        return "\n".join(lines)


def check_project(path: str | os.PathLike[str]) -> ProjectHealth:
    """Check a project folder without writing anything: its manifest, its photo and every file, hashed."""
    root = Path(path)

    def broken(message: str, contents: tuple[str, ...] = ()) -> ProjectHealth:
        return ProjectHealth(shown(root), ok=False, problems=(message,), repairable=False, contents=contents)

    if not root.is_dir():
        return broken(f"{shown(root)} is not a folder.")
    folder = Folder(root)
    try:
        folder.audit()
        manifest = parse_manifest(root, read_manifest_bytes(folder))
    except ProjectError as exc:
        return broken(str(exc))
    contents = _contents(manifest)
    try:
        problems = find_problems(folder, manifest, hashes=True)
    except ProjectError as exc:  # a file swapped for a link since the audit
        return broken(str(exc), contents)
    repairable = all(p.repairable for p in problems)
    texts = tuple(p.text[0].upper() + p.text[1:] + "." for p in problems)
    if problems and not repairable:
        texts += (cannot_open_message(root, problems),)
    return ProjectHealth(shown(root), ok=not problems, problems=texts, repairable=bool(problems) and repairable,
                         contents=contents)


def repair_project(path: str | os.PathLike[str]) -> ProjectHealth:
    """Open the project with recovery after hashing every file (damaged files to quarantine/), then
    report its health and what was set aside. A project that cannot be repaired is reported, not raised."""
    try:
        project = Project.open(path, recover=True, verify=True)
    except ProjectError:
        return check_project(path)
    health = check_project(path)
    return ProjectHealth(health.path, health.ok, health.problems, health.repairable, health.contents,
                         project.recovered)


def _contents(manifest: Manifest) -> tuple[str, ...]:
    s, image = manifest.settings, manifest.image
    settings = ", ".join([f"method {shorten(printable(s.method))}" if s.method else "no method yet",
                          f"model {shorten(printable(s.model.spec))}" if s.model else "no model yet",
                          f"max side {s.max_side}" if s.max_side else "max side not recorded",
                          f"source prompt {show(s.source_prompt)}"])
    inputs = ", ".join(f"{item.name} ({item.kind})" for item in manifest.inputs) or "none"
    return (f"photo: {image.file}, {shorten(image.width)}x{shorten(image.height)}",
            f"settings: {settings}",
            f"inversions: {sum(i.tuning_of is None for i in manifest.inversions)}, tuning records: "
            f"{sum(i.tuning_of is not None for i in manifest.inversions)}",
            f"results: {len(manifest.edits)} edit{'s' if len(manifest.edits) != 1 else ''}",
            f"inputs: {shorten(inputs, 200)}")
