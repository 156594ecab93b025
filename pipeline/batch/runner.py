"""A batch on Ray: one actor per GPU (or CPU worker) loads the model once, and photos stream to the actors.

Imported only when a batch runs (pipeline.batch itself never imports Ray). `Cluster` starts an
embedded Ray on this machine (nothing to set up: its logs stay in a temporary folder, removed at the
end, and it stops with the process) or joins an existing cluster (`address`). `run_plan` then:

* makes the workers (pipeline.batch.work.BatchWorker as actors: `num_gpus=1` each, or one CPU share
  each) and waits until each has loaded the model, checking that every one loaded the model the plan
  was keyed on and runs this version of Retake;
* streams the plan's edits to them, at most `IN_FLIGHT` per worker, so a worker always has its next
  edit while the driver records the last (`ray.wait`); all edits of one photo go to one worker, in
  order, so they share its project and its inversion is made once. Only task JSON goes out and
  outcome JSON comes back, never pictures or tensors: workers read the photos and write the projects
  and results themselves, on the output folder every node sees;
* appends each outcome to the ledger (fsynced) as it arrives, so a stopped run loses at most the
  photos in flight;
* survives a worker's death: Ray restarts the actor (`max_restarts`, on another node if its node is
  lost) and the edits it held go back in the queue; a photo whose edits were in flight on a worker
  that went down `MAX_ATTEMPTS` times is recorded as failed, and the batch goes on without it;
* on `cancel`, tells every worker to stop within a model step and keeps what finished.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from pipeline.batch.ledger import Ledger, Record, outcome_record
from pipeline.batch.plan import Item, Plan, Task
from pipeline.batch.progress import BatchEmit, BatchStatus, PhotoFinished, RateMeter, WorkerState
from pipeline.batch.recipe import RecipeError
from pipeline.batch.report import RunSummary
from pipeline.batch.work import BatchWorker, task_json
from pipeline.errors import RetakeError, shorten
from pipeline.events import CancelToken
from pipeline.project import app_version
from pipeline.project.lock import pid_alive

IN_FLIGHT = 2
"""Edits handed to one worker at a time: the one it runs and the next."""
MAX_ATTEMPTS = 3
MAX_RESTARTS = 4
STATUS_EVERY_S = 1.0
CANCEL_WAIT_S = 120.0
_OBJECT_STORE_BYTES = 256 << 20  # only task and outcome JSON travel through it
_TEMP_PREFIX = "retake-ray-"


@dataclass(frozen=True)
class RunOptions:
    """How to run: where (`address`: None for an embedded Ray here) and on what (`gpus`, or CPU `workers`)."""

    address: str | None = None
    gpus: int | None = None
    """GPU workers, one per GPU; None: every GPU the cluster has (CPU workers when it has none)."""
    workers: int | None = None
    """CPU workers (no GPU is used); None: one when there is no GPU."""
    threads: int | None = None
    """torch threads per CPU worker; None: the machine's (or cluster's) CPUs shared out among the workers."""


class Cluster:
    """Ray for the length of a batch: `with Cluster(options) as cluster:`."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self._temp: Path | None = None
        self.started_here = False
        """Whether this Cluster started an embedded Ray (and so knows this machine is all of it)."""
        self.joined = False
        """Whether this Cluster called ray.init (and so shuts it down)."""

    def __enter__(self) -> Cluster:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # an offline tool reports nothing anywhere
        common: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False,
                                  "configure_logging": True}
        try:
            if ray.is_initialized():  # this process already has Ray (a notebook, a test): use it as it is
                return self
            if self.options.address is not None:
                ray.init(address=self.options.address, **common)
                self.joined = True
            else:
                _remove_stale_temp_dirs()
                self._temp = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX))
                (self._temp / "pid").write_text(str(os.getpid()))
                cpus = os.cpu_count() or 1
                ray.init(num_cpus=max(cpus, self.options.workers or 1), include_dashboard=False,
                         object_store_memory=_OBJECT_STORE_BYTES, _temp_dir=str(self._temp), **common)
                self.started_here = self.joined = True
        except (ConnectionError, RuntimeError, ValueError) as error:
            self._cleanup()
            where = f"the Ray cluster at {self.options.address}" if self.options.address else "a local Ray"
            raise RetakeError(f"Could not start or reach {where} ({shorten(error, 160)}).") from None
        return self

    def __exit__(self, _type: type[BaseException] | None, _value: BaseException | None,
                 _trace: TracebackType | None) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        if self.joined:
            ray.shutdown()
            self.joined = False
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None

    def worker_specs(self) -> list[tuple[str, dict[str, Any], str, int]]:
        """(label, actor resources, device, torch threads) for each worker the options ask for."""
        resources = ray.cluster_resources()
        gpus_there, cpus_there = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
        gpus, workers = self.options.gpus, self.options.workers
        if workers is None and (gpus or (gpus is None and gpus_there)):
            count = gpus_there if gpus is None else gpus
            if count > gpus_there:
                raise RecipeError(f"--gpus {count} asks for more GPUs than the cluster has ({gpus_there}).")
            threads = max(1, cpus_there // count)
            return [(f"gpu{i}", {"num_gpus": 1, "num_cpus": 1}, "cuda", threads) for i in range(count)]
        count = workers or 1
        threads = self.options.threads or max(1, (os.cpu_count() or 1) // count if self.started_here
                                              else cpus_there // count)
        return [(f"cpu{i}", {"num_cpus": 1}, "cpu", threads) for i in range(count)]


@dataclass
class _Queued:
    """A photo's edits waiting for a worker, and how many workers have taken them so far."""

    task: Task
    attempts: int = 0


@dataclass
class _Slot:
    """One worker as the driver sees it."""

    label: str
    actor: Any
    device: str = ""
    state: str = "starting"  # starting | ready | restarting | dead
    ready_ref: Any = None
    status_ref: Any = None
    status: WorkerState | None = None
    in_flight: list[Any] = field(default_factory=list)
    backlog: collections.deque[tuple[Item, _Queued]] = field(default_factory=collections.deque)
    """The edits of the photo this worker has taken and not yet been handed (they go one at a time)."""
    info: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0


def run_plan(plan: Plan, ledger: Ledger, cluster: Cluster, emit: BatchEmit, cancel: CancelToken,
             skip: set[str]) -> RunSummary:
    """Run every task of `plan` whose edits are not all in `skip`; see the module docstring."""
    return _Run(plan, ledger, cluster, emit, cancel, skip).run()


class _Run:
    def __init__(self, plan: Plan, ledger: Ledger, cluster: Cluster, emit: BatchEmit, cancel: CancelToken,
                 skip: set[str]) -> None:
        self.plan, self.ledger, self.cluster, self.emit, self.cancel = plan, ledger, cluster, emit, cancel
        self.queue = collections.deque(_Queued(task) for task in plan.tasks(skip))
        self.total = sum(len(q.task.items) for q in self.queue)
        self.earlier = len(plan.items) - self.total
        self.done = self.failed = 0
        self.meter = RateMeter()
        self.started = time.monotonic()
        self.slots: list[_Slot] = []
        self.running: dict[Any, tuple[_Slot, _Queued, Item]] = {}
        self.this_run: set[str] = set()

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        try:
            if self.queue:
                self._loop()
        finally:
            for slot in self.slots:  # their GPUs and CPUs go back to the cluster now, not at shutdown
                ray.kill(slot.actor)
        pending = self.total - self.done - self.failed
        return RunSummary(self.done, self.failed, pending, self.earlier, time.monotonic() - self.started,
                          self.meter.rate_per_min(), tuple(slot.info for slot in self.slots if slot.info),
                          self.cancel.cancelled, frozenset(self.this_run))

    def _loop(self) -> None:
        self._status("starting the workers")
        self._start_workers()
        next_status = 0.0
        while (self.queue or self.running or any(s.backlog for s in self.slots)) and not self.cancel.cancelled:
            self._submit()
            self._wait(0.25)
            if time.monotonic() >= next_status:
                self._poll_statuses()
                self._status("editing")
                next_status = time.monotonic() + STATUS_EVERY_S
        if self.cancel.cancelled:
            self._stop()
        self._status("cancelled" if self.cancel.cancelled else "finished")

    def _start_workers(self) -> None:
        actor_class = ray.remote(concurrency_groups={"control": 2})(BatchWorker)
        for label, resources, device, threads in self.cluster.worker_specs():
            actor = actor_class.options(max_restarts=MAX_RESTARTS, max_task_retries=0, max_concurrency=1,
                                        **resources).remote(label, device, threads)
            slot = _Slot(label, actor)
            self.slots.append(slot)
            self._ask_ready(slot)
        while not any(slot.state == "ready" for slot in self.slots):  # the first ready worker starts the clock
            if self.cancel.cancelled:
                return
            self._wait(0.25)
            self._status("loading the model")

    def _ask_ready(self, slot: _Slot) -> None:
        recipe = self.plan.recipe
        slot.ready_ref = slot.actor.ready.remote(recipe.model, recipe.dtype, self.plan.allow_pickle,
                                                 str(self.plan.layout.out))

    def _submit(self) -> None:
        """Hand out edits one at a time, at most IN_FLIGHT per worker; a worker takes a photo's edits in
        order (they share its project: the first inverts, the others reuse the inversion)."""
        for slot in sorted(self.slots, key=lambda s: len(s.in_flight)):
            while slot.state == "ready" and len(slot.in_flight) < IN_FLIGHT and (slot.backlog or self.queue):
                if not slot.backlog:
                    queued = self.queue.popleft()
                    queued.attempts += 1
                    slot.backlog.extend((item, queued) for item in queued.task.items)
                item, queued = slot.backlog.popleft()
                one = Task(queued.task.project_name, queued.task.photo, (item,))
                ref = slot.actor.run.remote(task_json(self.plan, one))
                slot.in_flight.append(ref)
                self.running[ref] = (slot, queued, item)

    def _wait(self, timeout: float) -> None:
        refs = list(self.running) + [s.ready_ref for s in self.slots if s.ready_ref is not None]
        if not refs:
            time.sleep(timeout)
            return
        ready, rest = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready and rest:  # whatever else is ready too, without waiting
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        for ref in ready:
            if ref in self.running:
                self._finished(ref)
            else:
                self._became_ready(next(s for s in self.slots if s.ready_ref == ref), ref)

    # -- what comes back --------------------------------------------------------------------------
    def _became_ready(self, slot: _Slot, ref: Any) -> None:
        slot.ready_ref = None
        try:
            info = ray.get(ref)
        except RayActorError as error:
            self._lost(slot, error, while_starting=True)
            return
        if "error" in info:
            raise RetakeError(f"Worker {slot.label} cannot work: {info['error']}")
        if info["identity"] != self.plan.model_identity:
            raise RetakeError(f"Worker {slot.label} on {info['host']} loaded another model than the one this batch "
                              f"was planned with ({shorten(self.plan.recipe.model)}); give the model by a path "
                              "every machine sees with the same files.")
        if info["version"] != app_version():
            raise RetakeError(f"Worker {slot.label} on {info['host']} runs Retake {info['version']}, this machine "
                              f"{app_version()}; install the same version on every machine.")
        slot.info, slot.device, slot.state = info, info["device"], "ready"
        self.meter.start()

    def _finished(self, ref: Any) -> None:
        slot, queued, item = self.running.pop(ref)
        slot.in_flight.remove(ref)
        if not slot.in_flight and slot.status is not None:
            slot.status = dataclasses.replace(slot.status, photo="", stage="waiting", step=0, total=0)
        try:
            outcomes = ray.get(ref)
        except RayActorError as error:
            self._lost(slot, error)
            left = [item, *(entry for entry, _ in slot.backlog)]  # this edit and those the worker had not begun
            slot.backlog.clear()
            self._retry(_Queued(Task(queued.task.project_name, queued.task.photo, tuple(left)), queued.attempts),
                        f"its worker {slot.label} stopped ({_first_line(error)})")
            return
        except RayError as error:  # a bug in the worker's own code: the edit fails, the batch goes on
            self._record_failures((item,), queued.attempts,
                                  f"Unexpected internal error in the worker ({_first_line(error)}).")
            return
        for outcome in outcomes:
            if outcome["status"] == "cancelled":
                continue
            record = outcome_record({**outcome, "attempts": queued.attempts})
            self._record(record)

    def _record(self, record: Record) -> None:
        self.ledger.append(record)
        self.this_run.add(record.key)
        if record.status == "done":
            self.done += 1
        else:
            self.failed += 1
        self.meter.add()
        self.emit(PhotoFinished(record.name, record.status, record.seconds, record.worker, record.reason,
                                record.attempts))
        self._status("editing")

    def _record_failures(self, items: tuple[Item, ...], attempts: int, reason: str) -> None:
        for item in items:
            if item.key not in self.this_run:
                self._record(Record(item.key, item.name, "failed", reason, "internal", attempts=attempts,
                                    started=time.time()))

    def _retry(self, queued: _Queued, why: str) -> None:
        if queued.attempts >= MAX_ATTEMPTS:
            self._record_failures(queued.task.items, queued.attempts, f"The photo was not finished: {why}, "
                                  f"{queued.attempts} times; the other photos went on.")
        else:
            self.queue.appendleft(queued)

    def _lost(self, slot: _Slot, error: Exception, *, while_starting: bool = False) -> None:
        """A worker's process ended: Ray restarts it (up to MAX_RESTARTS times) and it gets no work until it
        has loaded the model again; a worker that cannot be restarted is given up."""
        if slot.state == "restarting" and not while_starting:
            return  # its other task in flight: already being restarted
        slot.restarts += 1
        slot.status = None
        slot.state = "restarting" if slot.restarts <= MAX_RESTARTS else "dead"
        if slot.state == "restarting":
            self._ask_ready(slot)
        if all(s.state == "dead" for s in self.slots):
            raise RetakeError(f"Every worker stopped (the last: {_first_line(error)}).")

    def _poll_statuses(self) -> None:
        for slot in self.slots:
            if slot.status_ref is not None:
                try:
                    slot.status = WorkerState(device=slot.device, **ray.get(slot.status_ref, timeout=0))
                except GetTimeoutError:
                    continue
                except RayError:
                    pass
                slot.status_ref = None
            if slot.state == "ready":
                slot.status_ref = slot.actor.status.options(concurrency_group="control").remote()

    def _status(self, phase: str) -> None:
        remaining = self.total - self.done - self.failed
        workers = tuple(slot.status if slot.status is not None and slot.state == "ready" else
                        WorkerState(slot.label, slot.device, slot.info.get("host", ""), slot.info.get("pid", 0),
                                    stage=slot.state) for slot in self.slots)
        self.emit(BatchStatus(phase, self.total, self.done, self.failed, len(self.running), self.earlier,
                              time.monotonic() - self.started, self.meter.rate_per_min(),
                              self.meter.eta_s(remaining), workers))

    def _stop(self) -> None:
        """Cancelled: every worker stops its edit within a step; what finished meanwhile is recorded."""
        self._status("stopping")
        for slot in self.slots:
            if slot.state != "dead":
                slot.actor.cancel.options(concurrency_group="control").remote()
        self.queue.clear()
        for slot in self.slots:
            slot.backlog.clear()
        deadline = time.monotonic() + CANCEL_WAIT_S
        while self.running and time.monotonic() < deadline:
            self._wait(0.25)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return shorten(text[0] if text else type(error).__name__, 160)


def _remove_stale_temp_dirs() -> None:
    """Temporary folders of embedded Rays whose process is gone (killed before it could clean up)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_TEMP_PREFIX}*"):
        try:
            pid = int((folder / "pid").read_text())
        except (OSError, ValueError):
            continue
        if not pid_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
