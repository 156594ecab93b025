"""Retake's computing core: models, inversion, attention control, methods, projects.

Nothing in this package imports Qt (tests/test_layering.py enforces it), so the CLI, the GUI,
scripts and batch jobs all drive the same engine.
"""
