"""Retake's entry point: no arguments opens the desktop app (once it lands); subcommands run the CLI."""

from __future__ import annotations

import os
import sys

from cli.interrupt import exit_on_signals


def main() -> int:
    # The libraries' own progress bars and import-time notices would interleave with ours.
    for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        os.environ.setdefault(name, "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Until a run installs its own handlers (which cancel it cleanly), Ctrl-C and SIGTERM end the
    # process with one line, whether they come during the seconds of importing torch or later.
    exit_on_signals("retake: cancelled; nothing half-made was written.")
    from cli.commands import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
