"""The command line as a user runs it: exit codes, one-line errors, files where it says."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "resources" / "demo" / "house.png"
QUICK = ["--steps", "5", "--param", "inner_steps=2", "--max-side", "64"]


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cli-cache")

    def run(*args, check_exit=None):
        env = {**os.environ, "RETAKE_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
        done = subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        if check_exit is not None:
            assert done.returncode == check_exit, done.stderr
        return done

    return run


def test_edit_writes_result_and_project_then_reedits(cli, tmp_path):
    project, out = tmp_path / "house.retake", tmp_path / "castle.png"
    done = cli("edit", DEMO, "--source", "a house in a meadow under a blue sky",
               "--target", "a castle in a meadow under a blue sky", "--project", project, "--out", out,
               *QUICK, check_exit=0)
    assert f"result: {out}" in done.stdout and f"project: {project}" in done.stdout
    assert out.is_file() and (project / "project.json").is_file()
    again = cli("edit", "--project", project, "--target", "a castle in a meadow under a blue sky",
                "--max-side", "64", "--out", tmp_path / "again.png", check_exit=0)
    assert "reused its inversion" in again.stdout
    # same pixels, byte for byte (the PNG's text differs only in the edit's id and time)
    first, second = Image.open(out), Image.open(tmp_path / "again.png")
    assert first.tobytes() == second.tobytes() and first.size == second.size == (64, 48)


@pytest.mark.parametrize("args, message", [
    (["edit", "/nope/missing.png", "--source", "a cat", "--target", "a dog"], "missing.png"),
    (["edit", DEMO, "--source", "a house", "--target", "a big castle", "--param", "mode=replace"],
     "same number of words"),
    (["edit", DEMO, "--source", "a house", "--target", "a castle", "--param", "blend_words=zebra"], "zebra"),
    (["edit", DEMO, "--source", "a house", "--target", "a castle", "--model", "org/not-cached"], "not-cached"),
    (["edit", "--project", "/nope/project.retake", "--target", "a castle"], "no Retake project"),
    (["edit", DEMO, "--source", "a house", "--target", "a castle", "--param", "steps"], "NAME=VALUE"),
])
def test_errors_are_one_line_on_stderr_with_nonzero_exit(cli, tmp_path, args, message):
    done = cli(*args, "--project", tmp_path / "p.retake", *QUICK) if "--project" not in args else cli(*args)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("retake: ") and message in lines[0], done.stderr
    assert not (tmp_path / "p.retake").exists()


def test_methods_json_lists_every_parameter_with_its_spec(cli):
    listing = json.loads(cli("methods", "--json", check_exit=0).stdout)
    p2p = next(m for m in listing if m["id"] == "p2p")
    specs = {p["name"]: p for p in p2p["params"]}
    assert specs["inversion"]["choices"] == ["null-text", "negative-prompt", "ddim"]
    assert specs["cross_replace"]["kind"] == "step_range" and specs["cross_replace"]["default"] == [0.0, 0.8]
    assert specs["blend_start"]["kind"] == "step_fraction"
    assert all(p["help"] for p in p2p["params"])


def test_info_and_self_test(cli):
    assert "diffusers 0.42.1" in cli("info", check_exit=0).stdout
    done = cli("self-test", check_exit=0)
    assert "self-test passed" in done.stdout and "FAIL" not in done.stdout
