"""Fuzz the project loader: damaged manifests and file trees must give ProjectError, write nothing
and touch nothing outside the project folder.

Each case copies a small valid project, applies one to three random mutations (of project.json's
data or text: truncations, type swaps, huge numbers, NaN/Infinity tokens, deep nesting, odd
unicode, missing and extra keys; of the tree: deleted, renamed, truncated and flipped files, files
swapped for links to a sentinel folder outside, hard links into it, fifos, folders), then opens it,
reads everything it offers and checks it, and repairs it when the damage is repairable. Every
path opened or changed meanwhile is audited (sys.addaudithook); the tree is digested before and
after the read-only part, the sentinel before and after the whole run.

    python scripts/fuzz_projects.py --cases 20000 --seed 1

tests/test_project_fuzz.py runs the same fuzzer on fewer cases.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import re
import shutil
import stat
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.errors import ProjectError  # noqa: E402
from pipeline.project import ModelRecord, Project, check_project, repair_project  # noqa: E402

_WRITE_EVENTS = {"os.rename", "os.replace", "os.remove", "os.unlink", "os.mkdir", "os.rmdir", "os.link", "os.symlink",
                 "os.chmod", "os.chown", "os.utime", "os.truncate", "os.mkfifo", "os.mknod", "shutil.rmtree",
                 "shutil.move", "shutil.copyfile"}
_READ_EVENTS = {"open", "os.scandir", "os.listdir"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


@dataclass
class Counts:
    """What a fuzz run found; `failures` holds a few examples of each kind of failure."""

    cases: int = 0
    opened: int = 0
    repaired: int = 0
    project_errors: collections.Counter = field(default_factory=collections.Counter)
    other_exceptions: collections.Counter = field(default_factory=collections.Counter)
    writes: int = 0
    outside_accesses: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.other_exceptions or self.writes or self.outside_accesses)

    def report(self) -> str:
        lines = [f"cases: {self.cases}", f"opened without error: {self.opened}",
                 f"repaired after a repairable error: {self.repaired}",
                 f"ProjectErrors: {sum(self.project_errors.values())}"]
        lines += [f"  {kind}: {n}" for kind, n in self.project_errors.most_common()]
        lines += [f"other exceptions: {sum(self.other_exceptions.values())}"]
        lines += [f"  {kind}: {n}" for kind, n in self.other_exceptions.most_common()]
        lines += [f"writes: {self.writes}", f"outside accesses: {self.outside_accesses}"]
        lines += [f"  e.g. {failure}" for failure in self.failures[:10]]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Auditing file access


class _Audit:
    """Records the paths opened, listed or changed while `root` is being loaded."""

    def __init__(self) -> None:
        self.root: str | None = None
        self.outside: list[str] = []
        self.writes: list[str] = []

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if self.root is None or (event not in _READ_EVENTS and event not in _WRITE_EVENTS):
            return
        path = args[0] if args else None
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str):  # a file descriptor: opened (and audited) before
            return
        flags = args[2] if event == "open" and len(args) > 2 and isinstance(args[2], int) else 0
        mode = args[1] if event == "open" and len(args) > 1 and isinstance(args[1], str) else ""
        if event in _WRITE_EVENTS or flags & _WRITE_FLAGS or any(c in mode for c in "wax+"):
            self.writes.append(f"{event} {path}")
        absolute = os.path.abspath(path)
        if event == "open" and flags & getattr(os, "O_NOFOLLOW", 0):  # the last component is not followed
            resolved = os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))
        else:
            resolved = os.path.realpath(absolute)
        if resolved != self.root and not resolved.startswith(self.root + os.sep):
            self.outside.append(f"{event} {path} -> {resolved}")


AUDIT = _Audit()
_HOOKED = False


def watch(root: Path | None) -> None:
    """Audit accesses against `root` from now on (None: stop); clears what AUDIT recorded."""
    global _HOOKED
    if not _HOOKED:
        sys.addaudithook(AUDIT)  # cannot be removed; it does nothing while no root is watched
        _HOOKED = True
    AUDIT.root = None if root is None else os.path.realpath(root)
    AUDIT.outside, AUDIT.writes = [], []


def tree_state(folder: Path) -> str:
    """A digest of every entry under `folder` (links not followed): names, types, sizes, times, bytes."""
    digest = hashlib.sha256()
    for directory, subdirs, files in sorted(os.walk(folder)):
        subdirs.sort()
        for name in sorted(subdirs + files):
            path = os.path.join(directory, name)
            info = os.lstat(path)
            digest.update(f"{os.path.relpath(path, folder)}|{info.st_mode}|{info.st_size}|{info.st_mtime_ns}|".encode())
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as file:
                    digest.update(file.read())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# The template project and the mutations


def build_template(folder: Path) -> Path:
    """A small valid project using every kind of record, and a sentinel folder holding copies of its files."""
    root = folder / "template"
    project = Project.create(root, Image.effect_noise((24, 16), 40).convert("RGB"))
    model = ModelRecord("demo", "sha256:" + "0" * 64)
    project.save_inversion("k1", {"latents": torch.zeros(3, 4, 2, 2)}, method="p2p", model_identity=model.identity,
                           source_prompt="a house", params={"steps": 2}, size=(64, 64), steps=2)
    for target, mask in (("a castle", None), ("a barn", torch.ones(1, 1, 4, 4))):
        project.add_edit(target_prompt=target, source_prompt="a house", model=model, method="p2p",
                         params={"steps": 2, "words": ["house"]}, seed=None, inversion_key="k1",
                         result=Image.new("RGB", (24, 16), "red"), mask=mask)
    project.set_input("reference", Image.new("RGB", (8, 8), "blue"), kind="image", prompt="a blue square")
    project.set_input("edit_mask", torch.ones(8, 8), kind="mask")
    project.update_settings(model_spec="demo", model_identity=model.identity, source_prompt="a house",
                            method="p2p", params={"steps": 2}, max_side=512)
    shutil.copytree(root, folder / "sentinel")
    return root


_ODD_STRINGS = ["", " ", "\u202e\u0000", "\ud800", "é" * 3, "🙂" * 50, "x" * 10_000, "../../etc/passwd", "/etc/passwd",
                "results\\..\\..\\x.png", "results/../../outside.png", "inputs/.", "NaN", "results/e0001.png",
                "masks/" + "a" * 300 + ".png", "0" * 64, "2026-13-45T99:99:99"]
_ODD_VALUES: list[Any] = [None, True, False, 0, -1, 1, 2 ** 63, -(2 ** 63), 10 ** 4000, 1e308, -0.0, 0.5, [], {},
                          [1, 2], {"file": "x"}, *_ODD_STRINGS]


_DEEP = "(deeply nested)"
_DEEP_JSON = "[" * 5000 + "1" + "]" * 5000


def _nodes(value: Any, path: tuple = ()) -> list[tuple]:
    """Paths (key sequences) to every container and value inside `value`."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _nodes(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _nodes(item, path + (index,))
    return found


def _parent(doc: Any, path: tuple) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


def _mutate_data(rng: random.Random, doc: dict) -> None:
    path = rng.choice(_nodes(doc)[1:])
    parent, key = _parent(doc, path), path[-1]
    action = rng.randrange(6)
    if action == 0:  # delete the key or item
        del parent[key]
    elif action == 1:  # swap the value's type
        parent[key] = rng.choice(_ODD_VALUES)
    elif action == 2 and isinstance(parent, dict):  # an extra key
        parent[rng.choice(_ODD_STRINGS) or "extra"] = rng.choice(_ODD_VALUES)
    elif action == 3:  # a copy of another part of the document
        parent[key] = json.loads(json.dumps(_parent(doc, rng.choice(_nodes(doc)) + ("",))))
    elif action == 4 and isinstance(parent[key], list) and parent[key]:  # duplicate an item
        parent[key].append(parent[key][0])
    else:  # nest deeply (spliced into the text: encoding it would exhaust Python's stack)
        parent[key] = _DEEP


def _mutate_text(rng: random.Random, text: bytes) -> bytes:
    action = rng.randrange(6)
    if action == 0:
        return text[: rng.randrange(len(text) + 1)]
    if action == 1:
        at = rng.randrange(len(text))
        return text[:at] + bytes([text[at] ^ (1 << rng.randrange(8))]) + text[at + 1:]
    if action == 2:  # a number token becomes something strict JSON has no number for
        digits = [m.start() for m in re.finditer(rb"[0-9]", text)]
        if digits:
            at = rng.choice(digits)
            token = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"9" * 5000, b"-" + b"9" * 4000])
            return text[:at] + token + text[at + 1:]
    if action == 3:
        return b"[" * 100_000 + b"]" * 100_000
    if action == 4:
        at = rng.randrange(len(text))
        return text[:at] + rng.choice([b"\xff\xfe", b"\x00", "\u2028".encode(), b"\\ud800", b'"', b","]) + text[at:]
    return text.replace(b"\n", b"", 1).replace(b'"sha256"', b'"sha256": "0", "sha256"', 1)  # duplicate key


def _plain(path: Path) -> bool:
    """A regular file with one link: changing it cannot change the sentinel."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_nlink == 1


def _mutate_tree(rng: random.Random, root: Path, sentinel: Path) -> None:
    files = sorted(Path(d) / name for d, _, names in os.walk(root) for name in names if _plain(Path(d) / name))
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    if not files:
        return
    target = rng.choice(files)
    rel = target.relative_to(root)
    outside = sentinel / rel if (sentinel / rel).exists() else sentinel / "source.png"
    action = rng.randrange(9)
    if action == 0:
        target.unlink()
    elif action == 1:
        target.rename(target.with_name(rng.choice(["e0003.png", "x.png", ".hidden", "source.png"])))
    elif action == 2:
        target.write_bytes(target.read_bytes()[: rng.randrange(target.stat().st_size + 1)])
    elif action == 3:
        raw = bytearray(target.read_bytes())
        if raw:
            raw[rng.randrange(len(raw))] ^= 0xFF
        target.write_bytes(bytes(raw))
    elif action == 4:  # a link to the sentinel's copy: the checksum matches if it is followed
        target.unlink()
        target.symlink_to(outside)
    elif action == 5 and folders:  # a whole folder swapped for a link to the sentinel's copy
        folder = rng.choice(folders)
        shutil.rmtree(folder)
        folder.symlink_to(sentinel / folder.name, target_is_directory=True)
    elif action == 6:
        target.unlink()
        os.link(outside, target)
    elif action == 7:
        target.unlink()
        os.mkfifo(target)
    else:
        target.unlink()
        target.mkdir()


def mutate(rng: random.Random, root: Path, sentinel: Path) -> None:
    """Apply one to three random mutations to the project in `root`."""
    for _ in range(rng.randint(1, 3)):
        manifest = root / "project.json"
        choice = rng.random()
        if choice < 0.45 and _plain(manifest):
            try:
                doc = json.loads(manifest.read_bytes())
            except (ValueError, RecursionError):
                doc = None
            if isinstance(doc, dict) and len(_nodes(doc)) > 1:
                _mutate_data(rng, doc)
                text = json.dumps(doc, indent=rng.choice([None, 2]))
                manifest.write_text(text.replace(json.dumps(_DEEP), _DEEP_JSON))
        elif choice < 0.7 and _plain(manifest):
            manifest.write_bytes(_mutate_text(rng, manifest.read_bytes()))
        else:
            try:
                _mutate_tree(rng, root, sentinel)
            except OSError:  # not applicable to what earlier mutations left (renaming onto a folder)
                pass


# --------------------------------------------------------------------------------------------------
# Running


def _error_kind(message: str) -> str:
    for words, kind in (("Refusing", "refused: link, special file or escaping name"),
                        ("project.json is damaged", "manifest damaged"), ("newer Retake", "newer format"),
                        ("not a Retake project", "not a project"), ("--repair", "repairable file damage"),
                        ("photo is lost", "photo lost or damaged"), ("cannot be decoded", "undecodable file")):
        if words in message:
            return kind
    return "other"


def _load_everything(root: Path) -> None:
    """What a user of a project does: open it, read every file it offers, check it."""
    health = check_project(root)
    if not isinstance(health.summary(), str):
        raise TypeError("check_project gave no summary")
    project = Project.open(root)
    project.image()
    for record in project.inversions:
        project.load_inversion(record.key)
    for name in project.input_names():
        project.input_image(name)


def _repair(root: Path) -> None:
    """Repair a project whose files are damaged; once it says it is sound, it must open."""
    if repair_project(root).ok:
        Project.open(root)


def fuzz(cases: int, seed: int, work: Path | None = None) -> Counts:
    """Run `cases` mutated projects (deterministic for a `seed`) and count what happened.

    Projects whose files (not manifest) are damaged are then repaired: writes inside the project
    are allowed there, access outside is not. Scratch files go to `work`, else to /dev/shm where
    there is one (folders are created and deleted thousands of times).
    """
    rng = random.Random(seed)
    counts = Counts()
    if work is None and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        work = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        base = Path(scratch)
        template = build_template(base)
        sentinel = base / "sentinel"
        sentinel_before = tree_state(sentinel)  # the mutations never write through links into it
        case = base / "case"
        for number in range(cases):
            if case.exists():
                shutil.rmtree(case)
            shutil.copytree(template, case)
            mutate(rng, case, sentinel)
            before = tree_state(case)
            kind = None
            watch(case)
            try:
                _load_everything(case)
                counts.opened += 1
            except ProjectError as exc:
                kind = _error_kind(str(exc))
                counts.project_errors[kind] += 1
            except Exception as exc:  # noqa: BLE001 - counting them is the point
                counts.other_exceptions[type(exc).__name__] += 1
                counts.failures.append(f"case {number}: {type(exc).__name__}: {str(exc)[:200]}")
            finally:
                outside, writes = AUDIT.outside, AUDIT.writes
                watch(None)
            if tree_state(case) != before or writes:
                counts.writes += 1
                counts.failures.append(f"case {number}: wrote {writes[:3]}")
            if kind == "repairable file damage":
                watch(case)
                try:
                    _repair(case)
                    counts.repaired += 1
                except Exception as exc:  # noqa: BLE001
                    counts.other_exceptions[f"{type(exc).__name__} in repair"] += 1
                    counts.failures.append(f"case {number}: repair: {type(exc).__name__}: {str(exc)[:200]}")
                finally:
                    outside = outside + AUDIT.outside
                    watch(None)
            if tree_state(sentinel) != sentinel_before:
                outside = [*outside, "the sentinel folder outside the project changed"]
            if outside:
                counts.outside_accesses += 1
                counts.failures.append(f"case {number}: outside {outside[:3]}")
            counts.cases += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000, help="how many mutated projects (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    counts = fuzz(args.cases, args.seed)
    print(counts.report())
    print(f"seconds: {time.monotonic() - started:.1f}")
    return 0 if counts.ok else 1


if __name__ == "__main__":
    sys.exit(main())
