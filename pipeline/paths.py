"""Where the files Retake ships live: one constant, so nothing else computes the path."""

from pathlib import Path

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
