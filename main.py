"""Retake's entry point: no arguments opens the desktop app, `open PATH [--source TEXT] [--target TEXT]`
opens it on a photo, a project or a result PNG (with the prompts its project has not got yet); other
subcommands run the CLI (which never imports Qt); `self-test` adds to the CLI's checks an edit through
the desktop window, offscreen. Before the window, gui.qt_check makes sure Qt can start here, and if it
cannot says which system packages to install instead of letting Qt abort with a misleading hint."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from cli.interrupt import exit_on_signals


@contextmanager
def libraries_loading() -> Iterator[None]:
    """Import torch, diffusers and transformers (and Qt) with the cyclic garbage collector paused, then
    freeze what they made.

    They make some 450,000 objects that live as long as the process, and make next to no garbage; yet
    the collector walks them over and over while they are made, then at every full collection of a
    run, and again at the interpreter's exit. Frozen (`gc.freeze`), they are left out of every later
    collection. On a 2-core CPU this took a CLI process's imports from 3.9 s to 3.2 s and its exit
    from 0.85 s to 0.2 s (bench/bench_startup.py).
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def main() -> int:
    # The libraries' own progress bars and import-time notices would interleave with ours.
    for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        os.environ.setdefault(name, "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # A seeded run on the CPU gives the same bits every time: MKL's sums otherwise depend on where
    # its buffers happen to be aligned (strict mode keeps its fast kernels).
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
    # Until a run installs its own handlers (which cancel it cleanly), Ctrl-C and SIGTERM end the
    # process with one line, whether they come during the seconds of importing torch or later.
    exit_on_signals("retake: cancelled; nothing half-made was written.")
    args = sys.argv[1:]
    if not args or args[0] == "open":
        from gui.qt_check import qt_problem

        if problem := qt_problem():
            print(f"retake: {problem}", file=sys.stderr)
            return 1
        with libraries_loading():
            from gui.app import main as gui_main

        return gui_main(args[1:])
    if args == ["self-test"]:  # the CLI's checks, then the same edit through the desktop window (offscreen)
        with libraries_loading():
            from cli.selftest import self_test
            from gui.selftest import window_checks
            from pipeline.engine import Engine

        return self_test(Engine(), sys.stdout, window_checks)
    with libraries_loading():
        from cli.commands import main as cli_main
    try:
        return cli_main(args)
    except BrokenPipeError:  # `retake methods | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
