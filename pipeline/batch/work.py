"""What one batch worker does: load the model once, then run the engine's stages for photo after photo.

`BatchWorker` knows nothing of Ray: the Ray runner (pipeline.batch.runner) makes it an actor, one per
GPU or CPU worker, and tests drive it directly. It takes tasks and gives outcomes as JSON text, so
nothing but plain data crosses between processes or machines. Each edit goes through `Engine.run`
(resolve, load_model, invert, edit, commit), exactly as `retake edit` runs it: the same checks, the
same atomic writes into the photo's project, the same one-sentence failures; a failed photo is an
outcome like a finished one, and the next photo goes on. `cancel` (from another thread) stops the
current edit within one model step and skips the rest of the task.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import torch

from pipeline.batch.plan import STATE_DIR, Item, Plan, Task
from pipeline.batch.sheet import write_thumbnail
from pipeline.engine import Engine
from pipeline.errors import RetakeError, shorten
from pipeline.events import CancelledEvent, CancelToken, Done, Event, Failed, Progress, StageClock
from pipeline.images import load_image
from pipeline.project import app_version
from pipeline.request import EditRequest


def task_json(plan: Plan, task: Task) -> str:
    """A task as the plain JSON a worker takes: each edit's request, key and where its thumbnails go."""
    layout = plan.layout

    def item(entry: Item) -> dict[str, Any]:
        return {"name": entry.name, "key": entry.key, "request": plan.request(entry).to_json(),
                "after": str(layout.after_thumb(entry.name)), "result": str(layout.result(entry.name))}

    return json.dumps({"photo": str(task.photo), "before": str(layout.before_thumb(task.project_name)),
                       "out": str(layout.out), "items": [item(entry) for entry in task.items]})


class BatchWorker:
    """One worker: an engine on one device, fed tasks one at a time (see the module docstring)."""

    def __init__(self, label: str, device: str, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.label = label
        self.device = device
        self.engine = Engine()
        self._lock = threading.Lock()
        self._token: CancelToken | None = None
        self._stopping = False
        self._status: dict[str, Any] = {"worker": label, "host": socket.gethostname(), "pid": os.getpid(),
                                        "photo": "", "stage": "starting", "step": 0, "total": 0, "done": 0}

    def ready(self, model: str, dtype: str | None, allow_pickle: bool, out: str) -> dict[str, Any]:
        """Load the model (once) and say who this worker is; {"error": sentence} when it cannot work."""

        started = time.perf_counter()
        self._set(stage="loading the model")
        where = socket.gethostname()
        if not (Path(out) / STATE_DIR).is_dir():
            return {"error": f"The output folder {shorten(out)} is not visible on {where}; give a folder on storage "
                             "every machine of the cluster shares."}
        try:
            bundle = self.engine.preload(model, self.device, dtype, allow_pickle=allow_pickle)
        except RetakeError as error:
            return {"error": str(error)}
        self._set(stage="ready")
        return {"worker": self.label, "pid": os.getpid(), "host": where, "device": _describe(bundle.device),
                "identity": bundle.identity, "version": app_version(),
                "load_s": round(time.perf_counter() - started, 3)}

    def run(self, task: str) -> list[dict[str, Any]]:
        """Every edit of one task (one photo), in order; one outcome per edit (see Record, pipeline.batch.ledger)."""
        data = json.loads(task)
        outcomes = []
        for entry in data["items"]:
            if self._stopping:
                outcomes.append({"key": entry["key"], "name": entry["name"], "status": "cancelled"})
                continue
            outcomes.append(self._edit(entry, data))
        self._set(photo="", stage="waiting", step=0, total=0)
        return outcomes

    def _edit(self, entry: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
        request = EditRequest.from_json(entry["request"])
        request.device = self.device
        token = CancelToken()
        with self._lock:
            self._token = token
            if self._stopping:
                token.cancel()
        clock = StageClock()
        self._set(photo=entry["name"], stage="checking the request", step=0, total=0)

        def emit(event: Event) -> None:
            clock(event)
            if isinstance(event, Progress):
                self._set(stage=str(event.stage), step=event.step, total=event.total)

        started, wall = time.time(), time.perf_counter()
        final = self.engine.run(request, emit, token)
        clock.stop()
        outcome: dict[str, Any] = {"key": entry["key"], "name": entry["name"], "worker": self.label,
                                   "started": round(started, 3), "seconds": round(time.perf_counter() - wall, 3),
                                   "stages": clock.seconds}
        if isinstance(final, Done):
            out = Path(task["out"])
            wall = time.perf_counter()
            _thumbnails(task, entry, final)
            clock.seconds["thumbnails"] = round(time.perf_counter() - wall, 3)
            outcome.update(status="done", result=Path(entry["result"]).relative_to(out).as_posix(),
                           reused_inversion=final.reused_inversion)
            with self._lock:
                self._status["done"] += 1
        elif isinstance(final, Failed):
            outcome.update(status="failed", reason=final.message, kind=final.kind)
        else:
            assert isinstance(final, CancelledEvent)
            outcome.update(status="cancelled")
        return outcome

    def status(self) -> dict[str, Any]:
        """What the worker is doing now (for the progress display); answered while an edit runs."""
        with self._lock:
            return dict(self._status)

    def cancel(self) -> None:
        """Stop the edit running now (within a model step) and every edit not yet started."""
        with self._lock:
            self._stopping = True
            if self._token is not None:
                self._token.cancel()

    def _set(self, **values: Any) -> None:
        with self._lock:
            self._status = {**self._status, **values}


def _thumbnails(task: dict[str, Any], entry: dict[str, Any], done: Done) -> None:
    """The contact sheet's pictures; a thumbnail that cannot be written leaves a gap, not a failed photo."""
    try:
        before = Path(task["before"])
        if not before.is_file():
            write_thumbnail(load_image(task["photo"]), before)
        write_thumbnail(done.image, Path(entry["after"]))
    except (OSError, RetakeError):
        pass


def _describe(device: Any) -> str:
    if getattr(device, "type", "") == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"
