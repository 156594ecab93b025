"""Editing methods, one module each, listed in the registry (pipeline.methods.registry)."""
