"""Retake's desktop interface (PySide6). Lands with the GUI issue; only pipeline/ computes."""
