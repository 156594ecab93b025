"""Retake's command line: `edit`, `methods`, `info`, `self-test`, `project check`. A thin front end on the pipeline."""
