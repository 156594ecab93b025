"""Retake's command line: `edit`, `methods`, `info`, `self-test`. A thin front end on pipeline.engine."""
