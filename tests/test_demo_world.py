"""The demo world (resources/demo_world/world.py): reproducible scenes whose ground truth is right.

A model trained on this world, and a benchmark of edits built from it, are only as good as the
world's ground truth: the caption must name what is drawn, the masks must be the subjects' pixels,
and an edit pair must differ in the edited attribute and nowhere else.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

WORLD_FILE = Path(__file__).resolve().parents[1] / "resources" / "demo_world" / "world.py"
_spec = importlib.util.spec_from_file_location("demo_world", WORLD_FILE)
world = importlib.util.module_from_spec(_spec)
sys.modules["demo_world"] = world  # dataclasses look their module up while the module loads
_spec.loader.exec_module(world)


def scenes(seed: int, n: int) -> list:
    rng = np.random.default_rng(seed)
    return [world.render_scene(rng) for _ in range(n)]


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    padded = np.pad(mask, r)
    h, w = mask.shape
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def test_same_seed_same_pixels_captions_and_masks():
    a, b = scenes(11, 20), scenes(11, 20)
    for x, y in zip(a, b):
        assert x.caption == y.caption and x.description == y.description
        assert np.array_equal(x.image, y.image)
        assert all(np.array_equal(m, n) for m, n in zip(x.masks, y.masks))
    assert [s.caption for s in scenes(12, 20)] != [s.caption for s in a]
    # rendering is a pure function of the description
    assert np.array_equal(world.render(a[3].description).image, a[3].image)


def test_every_attribute_word_is_in_the_caption():
    seen = set()
    rng = np.random.default_rng(1)
    for s in (world.sample_description(rng) for _ in range(1000)):  # captions need no pixels
        words = s.caption.split()
        assert s.background.phrase() in s.caption
        for sub in s.subjects:
            said = sub.words()
            assert sub.kind in said and sub.color in said
            assert (sub.pose is not None) == (sub.kind in world.FIGURES)
            for w in said:
                assert w in words, (w, s.caption)
            seen.update(said)
        assert set(words) <= vocabulary(), s.caption
    # the sample covers the whole vocabulary of attributes
    for group in (world.KINDS, world.ALL_COLORS, ("striped", "dotted"), ("small", "big"), ("left", "right"),
                  world.POSES["person"]):
        assert set(group) <= seen, set(group) - seen


def vocabulary() -> set[str]:
    words = {"a", "an", "and", "on", "the"}
    words |= set(world.KINDS) | set(world.ALL_COLORS) | set(world.TEXTURES) | set(world.SIZES) | set(world.POSITIONS)
    words |= {p for poses in world.POSES.values() for p in poses}
    for phrase in [g[0] for g in world.GROUNDS.values()] + [s[0] for s in world.SKIES.values()]:
        words |= set(phrase.split())
    return words


def test_masks_are_the_subjects_pixels():
    for s in scenes(2, 100):
        assert s.image.shape == (world.SIZE, world.SIZE, 3) and s.image.dtype == np.uint8
        union = np.zeros(s.image.shape[:2], bool)
        for sub, mask in zip(s.description.subjects, s.masks):
            assert mask.shape == s.image.shape[:2] and mask.dtype == bool
            assert mask.sum() >= 20, (sub, s.caption)
            assert not (union & mask).any(), "masks of two subjects overlap"
            union |= mask
            # the subject's own colour fills a good part of its mask (the rest: stripes, dots,
            # a roof, wheels, a sail, eyes) and is rare just outside it
            ref = np.asarray(world.COLORS[sub.color], np.float32)
            near = np.abs(s.image.astype(np.float32) / 255 - ref).max(axis=-1) < 0.12
            share = near[mask].mean()
            assert share >= (0.3 if sub.texture == "plain" else 0.15), (sub, share, s.caption)
            ring = dilate(mask, 3) & ~dilate(mask, 1) & ~union
            if ring.any() and sub.kind != "sun":
                assert near[ring].mean() < share


def test_action_edit_changes_the_pose_and_nothing_else():
    rng = np.random.default_rng(3)
    for _ in range(12):
        pair = world.edit_pair(rng, "pose")
        src, tgt, i = pair.source.description, pair.target.description, pair.subject
        assert src.background == tgt.background and len(src.subjects) == len(tgt.subjects)
        a, b = src.subjects[i], tgt.subjects[i]
        assert a.kind in world.FIGURES and a.pose != b.pose and replace(a, pose=b.pose) == b
        assert all(x == y for k, (x, y) in enumerate(zip(src.subjects, tgt.subjects)) if k != i)
        changed = [(x, y) for x, y in zip(pair.source.caption.split(), pair.target.caption.split()) if x != y]
        assert changed == [(a.pose, b.pose)]
        assert_only_mask_changed(pair)
        assert not (pair.mask & ~dilate(pair.source.masks[i] | pair.target.masks[i], 2)).any()
        # the pose is visibly different: the silhouettes overlap little
        m, n = pair.source.masks[i], pair.target.masks[i]
        assert (m & n).sum() / (m | n).sum() < 0.8


def test_every_kind_of_edit_has_a_ground_truth():
    rng = np.random.default_rng(4)
    for kind in world.EDIT_KINDS:
        for _ in range(4):
            pair = world.edit_pair(rng, kind)
            src, tgt = pair.source.description, pair.target.description
            assert src.background == tgt.background and pair.source.caption != pair.target.caption
            assert pair.mask.any()
            assert_only_mask_changed(pair)
            if kind == "add":
                assert tgt.subjects[:1] == src.subjects and len(tgt.subjects) == 2
                continue
            a, b = src.subjects[pair.subject], tgt.subjects[pair.subject]
            field = {"pose": "pose", "color": "color", "texture": "texture", "replace": "kind"}[kind]
            assert getattr(a, field) != getattr(b, field)
            keep = {"replace": ("texture", "size", "position", "facing", "seed")}.get(kind)
            if keep:
                assert all(getattr(a, f) == getattr(b, f) for f in keep)
            else:
                assert replace(a, **{field: getattr(b, field)}) == b


def assert_only_mask_changed(pair) -> None:
    """Outside the edit mask the two pictures are identical, and the mask is not much more than the
    subject (its soft one-pixel edge)."""
    outside = ~pair.mask
    assert np.array_equal(pair.source.image[outside], pair.target.image[outside])


def test_poses_of_one_identity_are_distinct():
    bg = world.Background("meadow", "blue", 0.45, seed=1)
    for kind in world.FIGURES:
        masks = {}
        for pose in world.POSES[kind]:
            sub = world.Subject(kind, "red", size="big", pose=pose, seed=5)
            scene = world.render(world.Description(bg, (sub,)))
            assert re.search(rf"\bred {kind} {pose}\b", scene.caption)
            masks[pose] = scene.masks[0]
        poses = list(masks)
        for p in poses:
            for q in poses[poses.index(p) + 1 :]:
                iou = (masks[p] & masks[q]).sum() / (masks[p] | masks[q]).sum()
                assert iou < 0.8, (kind, p, q, iou)


def test_rendering_is_fast():
    rng = np.random.default_rng(5)
    world.render_scene(rng)
    start = time.perf_counter()
    for _ in range(200):
        world.render_scene(rng)
    seconds = time.perf_counter() - start
    assert seconds < 10, f"200 scenes took {seconds:.1f}s"  # about 3 s on a busy 2-core machine


def test_unknown_edit_is_refused():
    with pytest.raises(ValueError):
        world.edit_pair(np.random.default_rng(0), "rotate")
