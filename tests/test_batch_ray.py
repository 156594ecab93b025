"""`retake batch` on a local Ray of two CPU workers with the tiny demo model: a folder with a broken photo,
the report and contact sheet, a rerun that does no work, a worker killed mid-run, and a driver stopped
by Ctrl-C and killed outright, each restarted until every photo is done with only in-flight photos redone.

One Ray is started for the module (about ten seconds here); the runs in the test process use it. The
driver test runs `main.py batch` as the user does: once joining that Ray as a cluster (`--address`), twice
starting its own embedded Ray.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from cli.commands import main as cli_main
from tests.batch_photos import make_photos, write_recipe

ray = pytest.importorskip("ray", reason="the batch extra (ray) is not installed")

from pipeline.batch.ledger import Ledger, read_records  # noqa: E402
from pipeline.batch.progress import BatchStatus, PhotoFinished  # noqa: E402
from pipeline.batch.runner import Cluster, RunOptions, run_plan  # noqa: E402
from pipeline.events import CancelToken  # noqa: E402
from pipeline.project.lock import pid_alive  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cache = tmp_path_factory.mktemp("retake-cache")
    previous = os.environ.get("RETAKE_CACHE_DIR")
    os.environ["RETAKE_CACHE_DIR"] = str(cache)  # the workers inherit it: the model's hashes go there
    with Cluster(RunOptions(workers=2)) as started:
        yield started
    if previous is None:
        del os.environ["RETAKE_CACHE_DIR"]
    else:
        os.environ["RETAKE_CACHE_DIR"] = previous


def _ledger_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / ".retake-batch" / "ledger.jsonl").read_text().splitlines()]


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_with_a_broken_photo_then_a_rerun_that_does_no_work(cluster, tmp_path, capsys, monkeypatch):
    photos = make_photos(tmp_path / "photos", 4, broken=True)
    recipe, out = write_recipe(tmp_path / "recipe.json"), tmp_path / "out"
    argv = ["batch", "--recipe", str(recipe), "--inputs", str(tmp_path / "photos"), "--out", str(out), "--workers", "2"]
    assert cli_main(argv) == 1  # one photo failed
    captured = capsys.readouterr()
    assert "batch: 4 done, 1 failed" in captured.out
    assert "failed: broken: Cannot open" in captured.err and "retake: 1 of 5 edits failed" in captured.err

    report = json.loads((out / "report.json").read_text())
    rows = {row["name"]: row for row in report["photos"]}
    assert {name: row["status"] for name, row in rows.items()} == {**{p.stem: "done" for p in photos}, "broken": "failed"}
    assert rows["broken"]["reason"].startswith("Cannot open") and rows["broken"]["reason"].count(". ") == 0
    for photo in photos:
        row = rows[photo.stem]
        assert (out / row["result"]).is_file() and (out / row["project"] / "project.json").is_file()
        assert row["seconds"] > 0 and row["stages"]["editing"] > 0 and row["worker"] in ("cpu0", "cpu1")
    # (which of the two workers did what depends on which loaded the model first: not checked here)
    assert report["run"]["photos_per_min"] > 0 and {w["device"] for w in report["run"]["workers"]} == {"cpu"}
    csv_lines = (out / "report.csv").read_text().splitlines()
    assert len(csv_lines) == 6 and csv_lines[0].startswith("name,photo,status,reason")
    sheet = (out / "contact-sheet.html").read_text()
    for photo in photos:
        assert f'src="thumbs/{photo.stem}.after.jpg"' in sheet and (out / "thumbs" / f"{photo.stem}.after.jpg").is_file()
    assert "it is not an image file Retake can read" in sheet

    before, lines = _mtimes(out / "results") | _mtimes(out / "projects"), _ledger_lines(out)
    monkeypatch.setitem(sys.modules, "pipeline.batch.runner", None)  # a rerun with work to do would fail here
    assert cli_main(argv) == 1
    assert "Nothing to do: all 5 edits of this batch were finished earlier." in capsys.readouterr().out
    assert _mtimes(out / "results") | _mtimes(out / "projects") == before and _ledger_lines(out) == lines


def test_a_worker_killed_mid_run_loses_only_its_edits_in_flight(cluster, tmp_path):
    """Three photos with four targets each: the worker is killed as it reports a photo's first edit, with
    the second in flight and the others not yet begun (the fourth not yet handed to it); exactly those
    three are done again, nothing else is."""
    from cli.batch import plan_batch

    photos = make_photos(tmp_path / "photos", 3)
    targets = ("a castle in a meadow under a blue sky", "a tower in a meadow under a blue sky",
               "a barn in a meadow under a blue sky", "a church in a meadow under a blue sky")
    (tmp_path / "m.csv").write_text("photo,target\n" + "".join(f"photos/{p.name},{t}\n" for p in photos for t in targets))
    plan = plan_batch(write_recipe(tmp_path / "recipe.json"), tmp_path / "m.csv", tmp_path / "out")
    killed: list[str] = []
    latest: dict[str, BatchStatus] = {}

    def emit(event):
        if isinstance(event, BatchStatus):
            latest["status"] = event
        elif isinstance(event, PhotoFinished) and not killed and event.name.endswith("-1"):
            worker = next(w for w in latest["status"].workers if w.worker == event.worker)
            os.kill(worker.pid, signal.SIGKILL)
            killed.append(event.name)

    with Ledger(plan.layout) as ledger:
        summary = run_plan(plan, ledger, cluster, emit, CancelToken(), set())
    assert killed and (summary.done, summary.failed, summary.pending) == (12, 0, 0)
    lines = _ledger_lines(plan.layout.out)
    assert Counter(line["key"] for line in lines) == Counter(item.key for item in plan.items)  # each recorded once
    photo = killed[0].removesuffix("-1")
    redone = sorted(line["name"] for line in lines if line["attempts"] > 1)
    assert redone == [f"{photo}-2", f"{photo}-3", f"{photo}-4"]  # in flight, or waiting behind it


def test_many_targets_for_one_photo_share_its_inversion_and_are_reported_one_by_one(cluster, tmp_path):
    from cli.batch import plan_batch
    from pipeline.project import Project

    (photo,) = make_photos(tmp_path / "photos", 1)
    targets = ["a castle in a meadow under a blue sky", "a tower in a meadow under a blue sky",
               "a barn in a meadow under a blue sky"]
    (tmp_path / "m.csv").write_text("photo,target\n" + "".join(f"photos/{photo.name},{t}\n" for t in targets))
    plan = plan_batch(write_recipe(tmp_path / "recipe.json"), tmp_path / "m.csv", tmp_path / "out")
    finished, heard = [], []

    def emit(event):
        if isinstance(event, PhotoFinished):
            finished.append(event.name)
            heard.append(time.time())

    with Ledger(plan.layout) as ledger:
        summary = run_plan(plan, ledger, cluster, emit, CancelToken(), set())
        records = [ledger.records[item.key] for item in plan.items]
    assert summary.done == 3 and finished == ["photo00-1", "photo00-2", "photo00-3"]
    assert heard[0] < records[2].started  # each edit is reported as it ends, not when the photo's last one does
    assert [r.reused_inversion for r in records] == [False, True, True] and len({r.worker for r in records}) == 1
    project = Project.open(plan.layout.project("photo00"))
    assert len(project.inversions) == 1 and [e.target_prompt for e in project.edits] == targets


def _batch_process(tmp_path: Path, out: Path, address: str | None = None) -> subprocess.Popen:
    """`main.py batch` as a user runs it: its own embedded Ray, or joining the cluster at `address`."""
    env = {**os.environ, "RETAKE_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    where = ["--address", address] if address else []
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"), "batch", "--recipe", str(tmp_path / "recipe.json"),
                             "--inputs", str(tmp_path / "photos"), "--out", str(out), "--workers", "2",
                             "--progress", "json", *where], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # as from a terminal: a test runner started in the background passes SIGINT on ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _finished_events(process: subprocess.Popen, stop_after: int | None) -> list[str]:
    """The names of the photos the run reports finished, reading until `stop_after` of them (then the
    caller stops the process) or until it exits."""
    names = []
    for line in process.stdout:
        event = json.loads(line)
        if event["event"] == "PhotoFinished":
            names.append(event["name"])
            if stop_after is not None and len(names) >= stop_after:
                return names
    return names


@pytest.mark.skipif(os.name != "posix", reason="sends POSIX signals")
def test_a_driver_stopped_by_ctrl_c_then_killed_goes_on_where_it_stopped(cluster, tmp_path):
    """The first run joins the module's Ray as a cluster (--address); the others start their own."""
    photos = make_photos(tmp_path / "photos", 8)
    write_recipe(tmp_path / "recipe.json")
    out, address = tmp_path / "out", ray.get_runtime_context().gcs_address

    first = _batch_process(tmp_path, out, address)
    finished_first = _finished_events(first, stop_after=2)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130 and err.splitlines()[-1].startswith("retake: batch cancelled;"), err
    done_first = {r.name for r in read_records(out / ".retake-batch" / "ledger.jsonl").values()}
    assert set(finished_first) <= done_first and len(done_first) < len(photos)

    second = _batch_process(tmp_path, out)
    finished_second = _finished_events(second, stop_after=1)
    second.kill()  # SIGKILL: no report, no cleanup, the ledger as it was at that instant
    second.communicate(timeout=60)
    done_second = {r.name for r in read_records(out / ".retake-batch" / "ledger.jsonl").values()}
    assert not set(finished_second) & done_first and len(done_second) > len(done_first)

    third = _batch_process(tmp_path, out)
    finished_third = _finished_events(third, stop_after=None)
    _, err = third.communicate(timeout=120)
    assert third.returncode == 0, err
    assert set(finished_third) == {p.stem for p in photos} - done_second  # only what was not recorded
    lines = _ledger_lines(out)
    assert Counter(line["name"] for line in lines) == Counter(p.stem for p in photos)
    assert all((out / "results" / f"{p.stem}.png").is_file() for p in photos)
    report = json.loads((out / "report.json").read_text())
    assert {row["status"] for row in report["photos"]} == {"done"}
    # the killed run's Ray folder was removed by the next run; the others' by themselves
    assert all(pid_alive(int(p.read_text())) for p in Path(tempfile.gettempdir()).glob("retake-ray-*/pid"))
