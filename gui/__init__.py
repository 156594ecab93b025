"""Retake's desktop interface (PySide6): widgets over a document model, the engine on a worker
thread; only pipeline/ computes. Start it with gui.app.main."""
