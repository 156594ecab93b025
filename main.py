"""Retake's entry point: no arguments opens the desktop app (once it lands); subcommands run the CLI."""

from __future__ import annotations

import sys


def main() -> int:
    from cli.commands import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
