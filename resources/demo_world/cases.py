"""The cases of the semantic editing benchmark: seeded demo-world edits whose right answer is known.

Why: "did the edit work?" can only be answered where the right result is known. Every case here is a
source picture with its caption, a target caption, the region the edit may change, and the target
picture the edit should produce (world.edit_pair / world.reference_pair render both from one
description), so a judge (judge.py) can check the result's attributes and pixel metrics can check
what lies outside the region.

Tasks, each with the methods issue 8 names for it (`TASKS`): every method still runs on every case it
can take, and the table shows each task against each method.

    pose       action or pose change ("a cat sitting" -> "a cat jumping"): kv-inversion, toli, masactrl
    color      attribute change ("a red house" -> "a blue house"): p2p
    replace    object replacement ("a red cat" -> "a red dog"): p2p
    add        adding an object ("a tree on the left" -> "... and a car on the right"): p2p (refine)
    texture    style change: in this world the only style there is, a subject's texture (plain,
               striped, dotted): stylediffusion
    reference  replacement by the specific subject of a reference picture (with its caption and
               mask): specref

Case k of a task is a pure function of (seed, task, k), so the first N cases of a task are the same
whatever N is asked for, and a short run is a prefix of the full one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from world import REFERENCE, EditPair, Scene, edit_pair, reference_pair

TASKS: dict[str, tuple[str, ...]] = {
    "pose": ("kv-inversion", "toli", "masactrl"),
    "color": ("p2p",),
    "replace": ("p2p",),
    "add": ("p2p",),
    "texture": ("stylediffusion",),
    REFERENCE: ("specref",),
}
SEED = 20261124
PER_TASK = 30  # 6 tasks x 30 = 180 cases in the full benchmark


@dataclass(frozen=True)
class Case:
    """One benchmark case: an edit pair and its name."""

    id: str  # "<task>-<k>", e.g. "pose-007"
    task: str
    pair: EditPair

    @property
    def source(self) -> Scene:
        return self.pair.source

    @property
    def target(self) -> Scene:
        return self.pair.target

    @property
    def mask(self) -> np.ndarray:
        """The edit region: bool [H, W]; outside it the source and target pictures are identical."""
        return self.pair.mask

    @property
    def reference(self) -> Scene | None:
        return self.pair.reference

    @property
    def reference_mask(self) -> np.ndarray | None:
        pair = self.pair
        return None if pair.reference is None else pair.reference.masks[pair.reference_subject]

    def subject_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """The edited subject's pixels in the source (empty for "add") and in the target."""
        i = self.pair.subject
        source = self.source.masks[i] if i < len(self.source.masks) else np.zeros_like(self.mask)
        return source, self.target.masks[i]


def make_cases(per_task: int = PER_TASK, tasks: tuple[str, ...] = tuple(TASKS), seed: int = SEED) -> list[Case]:
    """`per_task` cases of each task, in the order of TASKS."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; tasks: {', '.join(TASKS)}")
    cases = []
    for index, task in enumerate(TASKS):
        if task not in tasks:
            continue
        rng = np.random.default_rng([seed, index])
        for k in range(per_task):
            pair = reference_pair(rng) if task == REFERENCE else edit_pair(rng, task)
            cases.append(Case(f"{task}-{k:03d}", task, pair))
    return cases

