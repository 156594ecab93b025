"""The fast path: the UNet calls of a run replayed as CUDA graphs, and the precision of optimisation.

Eager PyTorch spends most of a sampling step on the GPU launching kernels: an SD 1.x UNet call is
some two thousand of them, each a few microseconds of Python and driver work, while the GPU does
the arithmetic of a batch in a few milliseconds. A run calls the UNet with the same shapes at every
step, so each distinct call is captured once as a CUDA graph and replayed at the steps that follow:
the kernels are launched by the driver in one go, and no Python runs.

What may differ from call to call reaches the graph as data, copied into its static inputs before
each replay: the latents, the text embeddings, the timestep and the step index (controllers read
per-step tables through `AttentionCall.per_step`). Everything else the call's Python decides must
be the same at every step the graph is replayed for; that is what a controller's `graph_key` names
(pipeline.control.contract says what a controller must keep to). Calls are grouped by their shapes,
precision and the graph keys of every controller at every layer: the first call of a group runs
eagerly (it sets up whatever state the controllers keep), the second is captured, and the rest
replay it. A call in which a controller that is not `graph_safe` takes part always runs eagerly.

Sampling calls on the fast path run a copy of the UNet whose matrix weights are held in the sampling
dtype (`FastOptions.held_weights`; pipeline.held_weights): eagerly, autocast casts every fp32 weight to
fp16 at every call, some 700 cast kernels that a captured call replays too (on an H100 the copy took a
captured p2p edit from 1.43 to 1.28 s). In PyTorch's default layout the copy gives the same bits,
since autocast's casts of the held weights are then no-ops; on CUDA it is channels-last, which changes
the convolutions' algorithms (the 40 dB gate applies).

Optimisation (null-text, KV tuning, text optimisation, the mapping networks) runs the UNet in fp32
with gradients; on the fast path its matrix products use TF32 (`FastOptions.optimise`), which the
convolutions do already by PyTorch's default. The loops whose whole Adam iteration is captured
(null-text's and TOLI's, `FastOptions.optimisation_graphs`) run it under bf16 autocast
(`FastOptions.captured_optimise`): on an H100 at 512 px null-text took 14.5 s against 45.8 s eagerly,
its reconstruction error within 0.02% of the eager fp32 path's. Uncaptured, bf16 autocast is slower than
TF32 (its casts are more kernels to launch: null-text's first 10 steps took 17.7 s against 8.7 s), so
the loops that stay eager (KV tuning's, the mapping networks') keep TF32.

CUDA graphs are captured on one side stream per capture backend, and the eager call before each
capture runs on that stream too (PyTorch's own recipe): cuBLAS sets up its workspace for a stream at the
first call on it, which inside a capture fails. Each optimisation loop captures into a memory pool of
its own, released with the loop; the UNet graphs of a run share one.

The fast path is only ever taken on CUDA devices. On the CPU (tests, CI, the demo) results are bit for
bit those of the eager path, which is the very same code without the capture. For tests, the
capture can be emulated on any device (`FastOptions.emulate`): every operation of the captured call
is recorded with its arguments and replayed on the same tensors, which is what a CUDA graph does
(Python state and host values are frozen at capture), and a read of a tensor's value on the host
during capture is refused, as a CUDA graph refuses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.control.contract import ControlState
from pipeline.control.places import LayerPlace

log = logging.getLogger(__name__)
OPTIMISE_PRECISIONS = ("fp32", "tf32", "bf16")
GRAPH_LIMIT = 8
"""Captured graphs kept per run (least recently used dropped first): a method needs two to five."""


@dataclass(frozen=True)
class FastOptions:
    """How the fast path runs where it runs (CUDA; anywhere with `emulate`).

    graphs: replay the UNet calls of a run as CUDA graphs.
    held_weights: run the calls without gradients on the UNet copy whose matrix weights are held in the
        sampling dtype (ModelBundle.sampling_unet, made by pipeline.held_weights), where the bundle has one.
    optimisation_graphs: capture the whole iteration of the optimisation loops that allow it
        (pipeline.optimise.Minimiser: null-text's, TOLI's; the mapping training's one graph per step ran
        an H100 out of memory, so it stays eager).
    optimise: precision of the matrix products of what is optimised in loops that are not captured:
        "tf32", "fp32" (the eager path's) or "bf16" (autocast).
    captured_optimise: the same, inside a captured iteration.
    emulate: capture by recording and replaying operations instead of CUDA graphs, on any device
        (tests only: it is slower than eager).
    """

    graphs: bool = True
    held_weights: bool = True
    optimisation_graphs: bool = True
    optimise: str = "tf32"
    captured_optimise: str = "bf16"
    emulate: bool = False

    def __post_init__(self) -> None:
        for precision in (self.optimise, self.captured_optimise):
            if precision not in OPTIMISE_PRECISIONS:
                raise ValueError(f"unknown optimisation precision {precision!r}; use one of {OPTIMISE_PRECISIONS}")


def applies(options: FastOptions | None, device: torch.device) -> bool:
    """Whether the fast path runs on `device` with these options (None: the fast path is off)."""
    return options is not None and (device.type == "cuda" or options.emulate)


# -- capture backends ---------------------------------------------------------------------------------


class CaptureFailed(RuntimeError):
    """A call that cannot be captured as a CUDA graph: a bug to report, not a reason to stop the run (the
    call runs eagerly). Running out of GPU memory while capturing is not one: it is raised as itself, and
    the engine runs the stage again with the fast path off."""


@contextlib.contextmanager
def _capturing() -> Iterator[None]:
    """What a capture backend raises: CaptureFailed for the RuntimeErrors of the work or of CUDA, save
    torch.cuda.OutOfMemoryError (a RuntimeError too), which passes as it is."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError as error:
        raise CaptureFailed(str(error)) from error


class Capture(Protocol):
    """Records what a callable launches, runs it once, and returns a function that launches it again
    (and what the callable returned: the tensors each launch writes), or raises CaptureFailed; `warm`
    runs a callable eagerly where a later capture of it will run (the call before a capture)."""

    def __call__(self, work: Callable[[], Any]) -> tuple[Callable[[], None], Any]: ...

    def warm(self, work: Callable[[], Any]) -> Any: ...


class CudaGraphCapture:
    """CUDA graphs sharing one memory pool (they never run at the same time), captured on one side stream."""

    def __init__(self) -> None:
        self._pool = torch.cuda.graph_pool_handle()
        self._stream = torch.cuda.Stream()

    def warm(self, work: Callable[[], Any]) -> Any:
        with self._on_side_stream():
            return work()

    def __call__(self, work: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        graph = torch.cuda.CUDAGraph()
        with _capturing():
            with self._on_side_stream():
                # thread_local: a GUI thread touching CUDA meanwhile does not invalidate the capture
                graph.capture_begin(pool=self._pool, capture_error_mode="thread_local")
                try:
                    out = work()
                    graph.capture_end()
                except BaseException:
                    _abandon(graph, self._pool)
                    raise
            graph.replay()  # a capture launches nothing: this is the work's one run
        return graph.replay, out

    @contextlib.contextmanager
    def _on_side_stream(self) -> Iterator[None]:
        self._stream.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(self._stream):
                yield
        finally:
            torch.cuda.current_stream().wait_stream(self._stream)


def _abandon(graph: torch.cuda.CUDAGraph, pool: Any) -> None:
    """End a capture that failed half way, so that the allocator stops routing this stream's
    allocations into the pool (a failed capture left it recording there: every later capture then
    failed with "already recording to mempool")."""
    with contextlib.suppress(RuntimeError):
        graph.capture_end()
    end = getattr(torch._C, "_cuda_endAllocateToPool", None)  # private, hence looked up and guarded
    if end is not None:
        with contextlib.suppress(RuntimeError, TypeError):
            end(torch.cuda.current_device(), pool)


class EmulatedCapture:
    """CUDA-graph semantics on any device, for tests (see the module doc)."""

    def warm(self, work: Callable[[], Any]) -> Any:
        return work()

    def __call__(self, work: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        recorder = _Recorder()
        with _capturing(), recorder:
            out = work()  # recording runs it (once, as the CUDA backend does)
        return recorder.replay, out


def capture_backend(options: FastOptions) -> Capture:
    """A capture backend of its own (its own memory pool and stream) for these options."""
    return EmulatedCapture() if options.emulate else CudaGraphCapture()


class _Recorder(TorchDispatchMode):
    """Records every operation with its argument tensors; `replay` runs them again on the same tensors
    and writes each result into the tensor the recording produced, as a graph writes its buffers."""

    def __init__(self) -> None:
        super().__init__()
        self._ops: list[tuple[Any, tuple, dict, Any]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            raise RuntimeError("a tensor's value was read on the host during a graph capture")
        if func is torch.ops.aten.lift_fresh.default:  # on a GPU, a copy from host memory
            raise RuntimeError("a tensor was made from host data (a list index?) during a graph capture")
        out = func(*args, **kwargs)
        self._ops.append((func, args, kwargs, out))
        return out

    def replay(self) -> None:
        with torch.no_grad():  # the recording is below autograd (a backward pass is in it as operations)
            for func, args, kwargs, out in self._ops:
                _write(out, func(*args, **kwargs), _storages(args, kwargs))


def _storages(args: tuple, kwargs: dict) -> set[int]:
    found: set[int] = set()
    for value in (*args, *kwargs.values()):
        for tensor in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(tensor, torch.Tensor):
                found.add(tensor.untyped_storage().data_ptr())
    return found


def _write(recorded: Any, fresh: Any, inputs: set[int]) -> None:
    if isinstance(recorded, (list, tuple)):
        for r, f in zip(recorded, fresh, strict=True):
            _write(r, f, inputs)
    elif isinstance(recorded, torch.Tensor) and recorded.untyped_storage().data_ptr() not in inputs:
        recorded.copy_(fresh)  # a view or an in-place result already holds the new values


# -- the UNet's graphs ---------------------------------------------------------------------------------

UNetCall = Callable[[torch.Tensor, "int | torch.Tensor", torch.Tensor, "ControlState | None"], torch.Tensor]


@dataclass
class _Graph:
    replay: Callable[[], None]
    z: torch.Tensor
    t: torch.Tensor
    emb: torch.Tensor
    step: torch.Tensor
    out: torch.Tensor
    keep: tuple[Any, ...]  # the controllers it was captured with: alive as long as the graph


class UNetGraphs:
    """The captured UNet calls of one run (see the module doc), by shapes, precision and control."""

    def __init__(self, places: list[LayerPlace], capture: Capture, limit: int = GRAPH_LIMIT) -> None:
        self._places = places
        self._capture = capture
        self._limit = limit
        self._graphs: OrderedDict[Hashable, _Graph] = OrderedDict()
        self._seen: dict[Hashable, tuple[weakref.ref, ...]] = {}
        self.captures = 0
        self.replays = 0
        self.capture_seconds = 0.0  # host time spent capturing (the first run's price, reported apart)
        self._failed: set[Hashable] = set()

    def __call__(self, unet: UNetCall, z: torch.Tensor, t: int, emb: torch.Tensor,
                 control: ControlState | None, precision: Hashable) -> torch.Tensor:
        key = self._key(z, emb, control, precision)
        if key is None or key in self._failed:
            return unet(z, t, emb, control)
        graph = self._graphs.get(key)
        if graph is None:
            controllers = () if control is None else control.controllers
            refs = self._seen.get(key)
            if refs is None or any(ref() is None for ref in refs):  # first call of its kind: eagerly
                self._seen[key] = tuple(weakref.ref(c) for c in controllers)
                return self._capture.warm(lambda: unet(z, t, emb, control))
            try:
                graph = self._record(unet, z, t, emb, control, controllers)  # this call's result, too
            except CaptureFailed as error:
                log.warning("a UNet call could not be captured as a CUDA graph; it runs eagerly: %s", error)
                self._failed.add(key)
                del self._seen[key]
                return unet(z, t, emb, control)
            self._graphs[key] = graph
            del self._seen[key]
            if len(self._graphs) > self._limit:
                self._graphs.popitem(last=False)
            return graph.out.clone()
        self._graphs.move_to_end(key)
        graph.z.copy_(z)
        graph.emb.copy_(emb)
        graph.t.fill_(t)
        graph.step.fill_(0 if control is None else control.step)
        graph.replay()
        self.replays += 1
        return graph.out.clone()

    @property
    def failures(self) -> int:
        """Kinds of call whose capture failed (they run eagerly)."""
        return len(self._failed)

    @property
    def kept(self) -> int:
        """Kinds of call held captured (fewer than `captures` when one was dropped and captured again)."""
        return len(self._graphs)

    def _key(self, z: torch.Tensor, emb: torch.Tensor, control: ControlState | None,
             precision: Hashable) -> Hashable | None:
        """What the call's Python depends on, or None when it cannot be captured."""
        shapes = (tuple(z.shape), z.dtype, tuple(emb.shape), emb.dtype, z.device, precision)
        if control is None:
            return shapes
        keys = []
        for controller in control.controllers:
            for place in self._places:
                key = controller.graph_key(place, control.step)
                if not controller.graph_safe and controller.active(place, control.step):
                    return None
                keys.append(key)
        ids = tuple(id(c) for c in control.controllers)
        return shapes, ids, control.layout, control.latent_size, tuple(keys)

    def _record(self, unet: UNetCall, z: torch.Tensor, t: int, emb: torch.Tensor, control: ControlState | None,
                controllers: tuple[Any, ...]) -> _Graph:
        device = z.device
        static_z, static_emb = z.clone(), emb.clone()
        static_t = torch.tensor(t, dtype=torch.int64, device=device)
        static_step = torch.tensor([0 if control is None else control.step], dtype=torch.int64, device=device)
        state = None if control is None else dataclasses.replace(control, step_index=static_step)
        started = time.perf_counter()
        replay, out = self._capture(lambda: unet(static_z, static_t, static_emb, state))
        self.capture_seconds += time.perf_counter() - started
        self.captures += 1
        return _Graph(replay, static_z, static_t, static_emb, static_step, out, controllers)


# -- precision -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def optimisation_precision(precision: str, device: torch.device) -> Iterator[None]:
    """The matrix-product precision (one of OPTIMISE_PRECISIONS) of fp32 work that is optimised, for the
    duration of the block.

    TF32 is a process-wide switch of PyTorch's; it is set and restored around each optimised call (the
    engine runs one job at a time). bf16 is autocast (its casts are not cached: a graph keeps none)."""
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False):
            yield
        return
    if precision != "tf32":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
