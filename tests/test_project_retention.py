"""Tuning records do not pile up: the project keeps the tunings a re-edit is likely to need (the two used
last per inversion, and the newest edit's), drops the rest when a new one is saved, and `prune` frees
the rest on request, reporting the bytes it removed; a crash in the middle leaves a whole project."""

import signal

import pytest
import torch
from PIL import Image

from cli.commands import main as cli_main
from pipeline.engine import Engine
from pipeline.events import Done
from pipeline.methods import registry
from pipeline.project import Project, check_project
from pipeline.project.retention import KEEP_TUNINGS
from tests.helpers import demo_request, tree_digest
from tests.test_engine_tuning import QUICK, Tuned
from tests.test_project import MODEL, project_files, referenced, run_on_copies

KEYS = ("I", "J")


def _tensor(seed, size=1000):
    return {"t": torch.randn(size, generator=torch.Generator().manual_seed(seed))}


def _save(project, key, tuning_of=None, seed=0, size=1000):
    return project.save_inversion(key, _tensor(seed, size), method="toli", model_identity=MODEL.identity,
                                  source_prompt="a house", params={}, size=(64, 64), steps=5, tuning_of=tuning_of)


def _edit(project, inversion_key, tuning_key=None):
    return project.add_edit(target_prompt="a castle", source_prompt="a house", model=MODEL, method="toli",
                            params={}, seed=None, inversion_key=inversion_key, tuning_key=tuning_key,
                            result=Image.new("RGB", (8, 8), "red"))


def _keys(root):
    return [record.key for record in Project.open(root).inversions]


def _tuned(root, inversion="I"):
    return sorted(r.key for r in Project.open(root).inversions if r.tuning_of == inversion)


@pytest.fixture
def project(tmp_path):
    project = Project.create(tmp_path / "p", Image.new("RGB", (8, 8)))
    for key in KEYS:
        _save(project, key)
    return project


def test_a_new_tuning_drops_the_least_recently_used_beyond_two(project):
    root = project.path
    _save(project, "j1", tuning_of="J")
    for key in ("t1", "t2"):
        _save(project, key, tuning_of="I")
        _edit(project, "I", key)
    assert _tuned(root) == ["t1", "t2"]
    _save(project, "t3", tuning_of="I")
    assert _tuned(root) == ["t2", "t3"] and KEEP_TUNINGS == 2
    _edit(project, "I", "t3")
    _edit(project, "I", "t2")  # an older edit re-done: t2 is now the one used last
    _save(project, "t4", tuning_of="I")
    assert _tuned(root) == ["t2", "t4"]
    assert _tuned(root, "J") == ["j1"] and {"I", "J"} <= set(_keys(root))  # other inversions untouched
    assert project_files(root) == referenced(root)  # the dropped records' files are gone, nothing else


def test_the_newest_edits_tuning_is_never_dropped_automatically(project):
    root = project.path
    _save(project, "t1", tuning_of="I")
    _edit(project, "I", "t1")
    for key in ("t2", "t3", "t4"):  # tuned but never committed as an edit (a failed or cancelled run)
        _save(project, key, tuning_of="I")
    assert _tuned(root) == ["t1", "t3", "t4"]


def test_prune_keeps_what_the_newest_edit_used_and_reports_the_bytes_it_removed(project):
    root = project.path
    _save(project, "j1", tuning_of="J", size=3000)
    _save(project, "t1", tuning_of="I", size=5000)
    _save(project, "t2", tuning_of="I", size=7000)
    _edit(project, "I", "t1")
    assert "inversions: 2, tuning records: 3" in check_project(root).summary()
    before, size_before = tree_digest(root), _bytes(root)
    planned = project.prunable()
    assert tree_digest(root) == before  # a dry run writes nothing
    assert planned.tunings == ("j1", "t2") and planned.inversions == ()
    pruned = project.prune()
    assert pruned == planned
    assert pruned.freed_bytes == size_before - _bytes(root) > 40_000  # what left the disk, to the byte
    assert _keys(root) == ["J", "I", "t1"] and project_files(root) == referenced(root)
    assert pruned.summary() == f"Dropped 2 tuning records: freed {pruned.freed_bytes / 1e6:,.1f} MB."
    everything = project.prune(inversions=True)
    assert everything.tunings == () and everything.inversions == ("J",) and _keys(root) == ["I", "t1"]
    assert project.prune(inversions=True).freed_bytes == 0
    assert project.prune().summary().startswith("Nothing to free")


def test_prune_without_edits_keeps_the_newest_inversion_and_its_newest_tuning(project):
    root = project.path
    for key in ("t1", "t2"):
        _save(project, key, tuning_of="J")
    _save(project, "i1", tuning_of="I")
    project.prune(inversions=True)
    assert _keys(root) == ["J", "t2"]


def test_the_cli_prunes_and_says_how_much_it_freed(project, capsys):
    root = project.path
    _save(project, "t1", tuning_of="I", size=250_000)
    _save(project, "t2", tuning_of="I", size=250_000)
    _edit(project, "I", "t2")
    size = _bytes(root)
    assert cli_main(["project", "prune", str(root), "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == "Would drop 1 tuning record: would free 1.0 MB."
    assert _bytes(root) == size
    assert cli_main(["project", "prune", str(root), "--inversions"]) == 0
    assert capsys.readouterr().out.strip() == "Dropped 1 tuning record and 1 inversion: freed 1.0 MB."
    assert 1_000_000 < size - _bytes(root) < 1_010_000 and _keys(root) == ["I", "t2"]


def _bytes(root):
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name != "project.json")


# ---------------------------------------------------------------------------------------------------
# A crash in the middle of a prune


PRUNER = r"""
import os, pathlib, signal, sys
from pipeline.project import Project

root, point, when = sys.argv[1], sys.argv[2], sys.argv[3]
real_replace, real_unlink = os.replace, pathlib.Path.unlink
count = {"replace": 0, "unlink": 0}

def hooked(kind, do):
    count[kind] += 1
    here = f"{kind}{count[kind]}" == point
    if here and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    do()
    if here and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)

def replace(src, dst):  # the commit of project.json
    hooked("replace", lambda: real_replace(src, dst))

def unlink(self, missing_ok=False):  # the removal of a dropped record's file
    if self.parent.name != "inversions":
        return real_unlink(self, missing_ok)
    hooked("unlink", lambda: real_unlink(self, missing_ok))

os.replace, pathlib.Path.unlink = replace, unlink
print(Project.open(root).prune(inversions=True).freed_bytes)
"""
# The prune replaces project.json once, then removes the files of the three dropped records.
CRASHES = [("replace1", "before"), ("replace1", "after"), ("unlink1", "after"), ("unlink3", "before")]


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    base = tmp_path_factory.mktemp("prune-crashes")
    template = Project.create(base / "template", Image.new("RGB", (8, 8)))
    for key, parent in (("I", None), ("J", None), ("t1", "I"), ("t2", "I"), ("j1", "J")):
        _save(template, key, tuning_of=parent, size=200_000)
    _edit(template, "I", "t2")
    runs = {f"{point}-{when}": [PRUNER, point, when] for point, when in CRASHES} | {"whole": [PRUNER, "-", "never"]}
    return _keys(base / "template"), run_on_copies(base / "template", runs)


def test_the_prune_script_does_what_the_kill_points_assume(crashed):
    before, results = crashed
    root, code, out, err = results["whole"]
    assert code == 0 and before == ["J", "t1", "j1", "I", "t2"], err
    assert 3 * 200_000 * 4 < int(out) < 3 * 200_000 * 4 + 3000  # three files of 200,000 floats and a header
    assert _keys(root) == ["I", "t2"] and project_files(root) == referenced(root)


@pytest.mark.parametrize("point, when", CRASHES)
def test_a_crash_in_the_middle_of_a_prune_leaves_a_whole_project(crashed, point, when):
    before, results = crashed
    root, code, _, err = results[f"{point}-{when}"]
    assert code == -signal.SIGKILL, err
    project = Project.open(root)  # opens whole, whatever instant it died at
    for record in project.inversions:
        project.load_inversion(record.key)
    assert _keys(root) == (before if (point, when) == ("replace1", "before") else ["I", "t2"])
    extra = project_files(root) - referenced(root)
    assert all(f.startswith("inversions/") or f.endswith(".tmp") or f == ".lock" for f in extra), extra
    _edit(project, "I", "t2")  # the next save takes over the dead lock and removes what was left
    assert project_files(root) == referenced(root)


# ---------------------------------------------------------------------------------------------------
# Through the engine: what is kept is reused, what was dropped is tuned again on demand


@pytest.fixture
def tuned_method(monkeypatch):
    monkeypatch.setattr(registry, "_METHODS", (*registry._METHODS, Tuned))
    Tuned.calls.clear()
    Tuned.seen.clear()


def _run(engine, tmp_path, target, **kw):
    outcome = engine.run(demo_request(tmp_path, QUICK, method="tuned-test", target_prompt=target, **kw),
                         lambda event: None)
    assert isinstance(outcome, Done), outcome
    return outcome


def test_kept_tunings_are_reused_and_a_dropped_one_is_tuned_again(tuned_method, tmp_path):
    engine = Engine(cache_dir=tmp_path / "cache")
    targets = [f"a {what} in a meadow under a blue sky" for what in ("castle", "tower", "barn")]
    for target in targets:
        _run(engine, tmp_path, target)
    assert len(Tuned.calls) == 3 and len(_tuned(tmp_path / "p.retake", _inversion(tmp_path))) == 2
    first_tuned = Tuned.seen[0]["tuned"]
    for target in (targets[2], targets[1]):  # the newest edit, and the other kept one: no tuning
        _run(engine, tmp_path, target)
    assert len(Tuned.calls) == 3
    _run(engine, tmp_path, targets[0])  # dropped: tuned again, to the same tensors
    assert len(Tuned.calls) == 4 and torch.equal(Tuned.seen[-1]["tuned"], first_tuned)
    assert [call["target"] for call in Tuned.calls] == [*targets, targets[0]]
    project = Project.open(tmp_path / "p.retake")
    assert [edit.tuning_key for edit in project.edits][-1] == project.inversions[-1].key
    assert project.prune(inversions=True).tunings  # the tower's tuning goes; the castle's stays
    _run(engine, tmp_path, targets[0])
    assert len(Tuned.calls) == 4  # neither re-tuned nor re-inverted after a prune
    assert Project.open(tmp_path / "p.retake").edits[-1].tuning_key is not None


def _inversion(tmp_path):
    return next(r.key for r in Project.open(tmp_path / "p.retake").inversions if r.tuning_of is None)
