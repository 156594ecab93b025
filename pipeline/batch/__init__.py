"""Batch editing: one recipe applied to many photos, on one machine or a Ray cluster.

The modules here are plain Python and never import Ray: recipe (the edit, checked as the CLI checks
it), manifest (which photos, and what varies per photo), plan (every edit resolved, checked and
keyed; where results go), ledger (what is finished, how a run resumes), work (one worker: the
engine's stages for photo after photo), progress (what a run reports), report and sheet (the CSV/JSON
report and the contact sheet). runner.py is the one module that imports Ray; it is imported only
when a batch runs. docs/architecture.md ("Batch") tells how they fit together.
"""
