"""Retake's entry point: no arguments opens the desktop app (once it lands); subcommands run the CLI."""

from __future__ import annotations

import os
import sys


def main() -> int:
    # The libraries' own progress bars and import-time notices would interleave with ours.
    for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        os.environ.setdefault(name, "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from cli.commands import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
