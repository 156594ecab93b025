"""The demo-world model card's measures point at what they claim to (bench/demo_world_card.py,
resources/demo_world/judge_misses.py): a word map is read at the kind word's own token, a judge
miss is one reading that differs from the caption, and the tally splits the model's misses from
the judge's as the verdicts say."""

from __future__ import annotations

import numpy as np

from bench import demo_world_card as card

import judge as J  # noqa: E402  (resources/demo_world: bench.demo_world_card puts it on sys.path)
import judge_misses  # noqa: E402
import world  # noqa: E402


def test_word_maps_are_read_at_each_subjects_kind_token(clip_tokenizer) -> None:
    rng = np.random.default_rng(4)
    for _ in range(300):
        description = world.sample_description(rng)
        ids = clip_tokenizer(description.caption).input_ids
        positions = card.kind_positions(description)
        assert [clip_tokenizer.decode([ids[p]]) for _, p in positions] == [s.kind for s in description.subjects]
        assert [k for k, _ in positions] == list(range(len(description.subjects)))


class _Reads:
    """A judge stand-in that returns given readings."""

    def __init__(self, readings: list[J.Facts]) -> None:
        self.readings = readings

    def read(self, images: np.ndarray) -> list[J.Facts]:
        return self.readings


def test_misses_and_their_tally() -> None:
    rng = np.random.default_rng(5)
    truths = [J.facts(world.sample_description(rng)) for _ in range(3)]
    reads = [dict(t) for t in truths]
    first = next(s for s in J.SLOTS if truths[0][s] == "yes")
    reads[0][f"{first}.texture"] = "striped" if truths[0][f"{first}.texture"] != "striped" else "dotted"
    second = next(s for s in J.SLOTS if truths[1][s] == "yes")
    reads[1][second] = "no"  # the subject not seen: all four attributes miss
    misses = judge_misses.find_misses(np.zeros((3, 8, 8, 3), np.uint8), truths, _Reads(reads))
    assert [(m["picture"], m["attribute"]) for m in misses] == [
        (0, "texture"), (1, "kind"), (1, "color"), (1, "texture"), (1, "size")]
    assert all(m["judge"] == "EMPTY" for m in misses[1:]) and [m["n"] for m in misses] == list(range(5))

    result = judge_misses.tally(misses, truths, {"model": [1, 2, 3, 4], "judge": [0]})
    subjects = sum(t[s] == "yes" for t in truths for s in J.SLOTS)
    texture = result["texture"]
    assert (texture["readings"], texture["misses"], texture["model"], texture["judge"]) == (subjects, 2, 1, 1)
    assert texture["judge_accuracy_where_drawn"] == [round(1 - 1 / (subjects - 1), 4)] * 2
    assert result["kind"]["judge_accuracy_where_drawn"] == [1.0, 1.0]
    unclear = judge_misses.tally(misses, truths, {})["size"]
    assert unclear["unclear"] == 1 and unclear["judge_accuracy_where_drawn"] == [round(1 - 1 / subjects, 4), 1.0]
