"""Which stored inversions and tunings a project keeps, so that it does not grow without bound.

A tuning record (a method's tuned tensors, stored beside the inversions: SpecRef's reference K/V,
about 1.1 GiB at 512 px; TOLI's embedding, one per target prompt) is learned from one inversion
(`InversionRecord.tuning_of`), and an edit names the tuning it used (`EditRecord.tuning_key`).
`project.json` lists the inversions and tunings in the order they were last used, oldest first: a
save appends its record, and an edit moves the records it used to the end. The policy reads only
that order and the newest edit, never a clock:

* after a new tuning is saved, the `KEEP_TUNINGS` most recently used tunings of its inversion stay,
  and so does the tuning of the project's newest edit; older ones are dropped in the same commit
  (their files are removed after it, through the journal, like every file a commit stops naming);
* `prune` (`retake project prune`, the app's Project > Free disk space) drops every tuning but the
  current one, and on request every inversion but the current one; "current" is what the newest edit
  used (with no edit yet: the newest inversion and its newest tuning), so re-editing the newest
  edit never recomputes anything.

Results in the history are never dropped: their PNGs carry every parameter, and re-editing an older
one whose tuning was dropped tunes again (same key, so it is found again afterwards).
docs/project-format.md states the policy for people.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.project.records import Manifest

KEEP_TUNINGS = 2
"""Tunings kept per inversion after a new one is saved: the new one and the one used before it."""


@dataclass(frozen=True)
class Pruned:
    """What a prune dropped (or would drop): the keys of the tuning and inversion records, and the
    bytes of their files that were removed (or would be)."""

    tunings: tuple[str, ...]
    inversions: tuple[str, ...]
    freed_bytes: int

    def summary(self, done: bool = True) -> str:
        """One sentence for people: what was (or would be) dropped and how many MB (10^6 bytes) it frees."""
        if not self.tunings and not self.inversions:
            return "Nothing to free: every stored inversion and tuning is in use."
        counted = [f"{n} {what}{'s' if n != 1 else ''}" for n, what in
                   ((len(self.tunings), "tuning record"), (len(self.inversions), "inversion")) if n]
        verb = ("Dropped", "freed") if done else ("Would drop", "would free")
        return f"{verb[0]} {' and '.join(counted)}: {verb[1]} {self.freed_bytes / 1e6:,.1f} MB."


def current_keys(manifest: Manifest) -> set[str]:
    """The inversion and tuning a re-edit of the project starts from: the newest edit's, or, with no
    edit yet, the newest inversion and its newest tuning."""
    if manifest.edits:
        newest = manifest.edits[-1]
        return {key for key in (newest.inversion_key, newest.tuning_key) if key is not None}
    inversions = [record for record in manifest.inversions if record.tuning_of is None]
    if not inversions:
        return set()
    newest_inversion = inversions[-1].key
    tunings = [record.key for record in manifest.inversions if record.tuning_of == newest_inversion]
    return {newest_inversion, *tunings[-1:]}


def superseded_tunings(manifest: Manifest, inversion_key: str, keep: int = KEEP_TUNINGS) -> set[str]:
    """The tunings of `inversion_key` beyond its `keep` most recently used (the current one excepted)."""
    tunings = [record.key for record in manifest.inversions if record.tuning_of == inversion_key]
    return set(tunings[: max(len(tunings) - keep, 0)]) - current_keys(manifest)


def unneeded(manifest: Manifest, inversions: bool = False) -> tuple[set[str], set[str]]:
    """(tunings, inversions) a prune drops: every tuning but the current one and, if `inversions`,
    every inversion but the current one and those the kept tunings were learned from."""
    current = current_keys(manifest)
    tunings = {record.key for record in manifest.inversions if record.tuning_of is not None} - current
    if not inversions:
        return tunings, set()
    parents = {record.tuning_of for record in manifest.inversions if record.key in current and record.tuning_of}
    return tunings, {record.key for record in manifest.inversions if record.tuning_of is None} - current - parents
