"""Save is one commit: a real saving app (the window over the FakeEngine, saving through its project-I/O
thread) is killed at each file rename of a save and at random instants, and every project it leaves
reopens whole, as it was before that save or after it, never the new prompt with the old mask
(tests/gui/save_killer.py forks the apps and checks what each kill left; scripts/kill_app_saves.py
does many more kills)."""

from __future__ import annotations

import random
import shutil
import signal

import pytest

from tests.gui.save_killer import Killer, check, make_template

RENAMES = [(1, "before"), (1, "after"), (2, "before"), (2, "after")]
"""A save of the prompt, the parameters and a new mask renames two files into place: the new mask file,
then project.json (the commit). Killed before the second rename is done, the project is as before."""
RANDOM_KILLS = 30
MAX_DELAY_S = 0.3  # after the app reported its first save; it saves one state after another meanwhile


@pytest.fixture(scope="module")
def killer():
    with Killer() as zygote:
        yield zygote


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("kills") / "template.retake"
    make_template(root)
    return root


def copy(template, tmp_path, name):
    shutil.copytree(template, tmp_path / name)
    return tmp_path / name


def test_a_save_renames_two_files_into_place(killer, template, tmp_path):
    root = copy(template, tmp_path, "count.retake")
    result = killer.kill(root, "replace-before", 3)  # no third rename: the save completes
    assert result == {"ready": True, "saved": 1, "signal": None, "exit": 0}
    assert check(root, 1) == (1, [])


@pytest.mark.parametrize("point, when", RENAMES)
def test_a_save_killed_at_each_rename_leaves_the_state_before_or_after_it(killer, template, tmp_path, point, when):
    root = copy(template, tmp_path, f"{when}-{point}.retake")
    result = killer.kill(root, f"replace-{when}", point)
    assert result["ready"] and result["signal"] == signal.SIGKILL and result["saved"] == 0, result
    committed = point == 2 and when == "after"
    assert check(root, 0) == (1 if committed else 0, [])


def test_saves_killed_at_random_instants_leave_a_whole_state(killer, template, tmp_path):
    rng = random.Random(18)
    for i in range(RANDOM_KILLS):
        root = copy(template, tmp_path, f"random-{i}.retake")
        result = killer.kill(root, "random", rng.uniform(0, MAX_DELAY_S))
        assert result["ready"] and result["signal"] == signal.SIGKILL and result["saved"] >= 1, result
        state, problems = check(root, result["saved"])
        assert problems == [], (i, result, problems)
    # A kill after a commit and before its report (state == saved + 1) is a window of microseconds that
    # random instants hit only now and then; the rename test above kills there every time.
