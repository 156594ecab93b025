"""The ledger: what a batch has finished, one JSON line per edit, appended and fsynced as each one ends.

It is how a batch resumes. Only the driver (the `retake batch` process) writes it, under an exclusive
lock that the operating system drops when the process dies, so a killed run leaves it whole but for
at most a torn last line. Its lines are read back like any input from outside: a line that does not
parse or validate is ignored, and that edit is simply done again. The last line of a key wins.

A rerun skips an edit whose key is recorded `done` and whose result file is still there, and one that
failed in a way that only a change to its inputs can mend (a broken photo, a prompt the method
refuses, a parameter out of range: such a change is a new key); anything else that failed (out of GPU
memory, a worker lost, a bug) is tried again.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from pipeline.batch.plan import Layout
from pipeline.batch.recipe import RecipeError
from pipeline.errors import shorten

FINAL_KINDS = frozenset({"ImageError", "PromptError", "ParamError"})
"""Failures that the same key would meet again (pipeline.events.Failed.kind)."""
STATUSES = ("done", "failed")
_KEY = re.compile(r"[0-9a-f]{64}")
_MAX_LINE = 64 << 10


@dataclass(frozen=True)
class Record:
    """How one edit ended. Paths are relative to the output folder."""

    key: str
    name: str
    status: str
    reason: str = ""
    kind: str = ""
    result: str = ""
    worker: str = ""
    started: float = 0.0
    """Unix time the edit started."""
    seconds: float = 0.0
    """How long Engine.run took for this edit."""
    stages: dict[str, float] = field(default_factory=dict)
    """Seconds per engine stage (`DDIM inversion`, `editing`...), and the batch's own `thumbnails`."""
    reused_inversion: bool = False
    attempts: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, line: str) -> Record | None:
        """The record a ledger line holds, or None when the line is not a valid record."""
        try:
            data = json.loads(line)
            record = cls(**data)
        except (ValueError, TypeError):
            return None
        return record if _valid(record) else None


def _valid(r: Record) -> bool:
    finite = all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1e12
                 for v in (r.started, r.seconds, *r.stages.values()))
    texts = all(isinstance(v, str) for v in (r.name, r.reason, r.kind, r.result, r.worker, *r.stages))
    return (isinstance(r.key, str) and bool(_KEY.fullmatch(r.key)) and r.status in STATUSES and finite and texts
            and isinstance(r.stages, dict) and isinstance(r.reused_inversion, bool)
            and isinstance(r.attempts, int) and not isinstance(r.attempts, bool) and r.attempts >= 1
            and ".." not in Path(r.result).parts and not Path(r.result).is_absolute())


class Ledger:
    """The ledger of one output folder, held open (and locked) for a run: `with Ledger(layout) as ledger`."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.path = layout.state / "ledger.jsonl"
        self.records: dict[str, Record] = {}
        self._lock: BinaryIO | None = None
        self._file: BinaryIO | None = None

    def __enter__(self) -> Ledger:
        self._lock = _take_lock(self.layout.state / "lock")
        try:
            self.records = read_records(self.path)
            self._file = open(self.path, "ab")
        except OSError as error:
            self.__exit__(None, None, None)
            raise RecipeError(f"Cannot open the batch ledger {shorten(self.path)}: {error.strerror or error}.") from None
        return self

    def __exit__(self, _type: type[BaseException] | None, _value: BaseException | None,
                 _trace: TracebackType | None) -> None:
        for handle in (self._file, self._lock):
            if handle is not None:
                handle.close()
        self._file = self._lock = None

    def append(self, record: Record) -> None:
        """Record how an edit ended, durably, before the run goes on."""
        assert self._file is not None, "the ledger is not open"
        self._file.write(record.to_json().encode("utf-8") + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records[record.key] = record

    def finished(self, retry_failed: bool = False) -> set[str]:
        """The keys a run skips: done with the result still there, or failed for good (see the module docstring)."""
        keys = set()
        for key, record in self.records.items():
            if record.status == "done" and (self.layout.out / record.result).is_file():
                keys.add(key)
            elif record.status == "failed" and record.kind in FINAL_KINDS and not retry_failed:
                keys.add(key)
        return keys


def read_records(path: Path) -> dict[str, Record]:
    """Every valid record of a ledger file by key (the last of a key wins); {} when there is none yet."""
    records: dict[str, Record] = {}
    try:
        with open(path, "rb") as file:
            for raw in file:
                if len(raw) > _MAX_LINE:
                    continue
                try:
                    record = Record.from_json(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    continue
                if record is not None:
                    records[record.key] = record
    except FileNotFoundError:
        pass
    return records


def _take_lock(path: Path) -> BinaryIO:
    """An exclusive lock on `path`, released by the system when this process ends however it ends."""
    try:
        handle = open(path, "a+b")
    except OSError as error:
        raise RecipeError(f"Cannot lock the batch folder {shorten(path.parent.parent)}: {error.strerror or error}.") from None
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read(64).decode("ascii", "replace").strip() or "unknown"
        handle.close()
        raise RecipeError(f"Another retake batch (pid {shorten(holder)}) is working in {shorten(path.parent.parent)}; "
                          "wait for it to finish or stop it first.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()).encode())
    handle.flush()
    return handle


def outcome_record(data: dict[str, Any]) -> Record:
    """A record from a worker's outcome (pipeline.batch.work), checked like a ledger line."""
    record = Record.from_json(json.dumps(data))
    if record is None:
        raise ValueError(f"a worker returned an invalid outcome: {shorten(data, 200)}")
    return record
