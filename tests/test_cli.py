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
TINY = ["--model", "demo-tiny"]  # the fast demo model; `demo` (the default) is the demo-world one


def _assert_one_error_line(stderr, message=""):
    """stderr (a pipe, so progress comes as plain lines) ends with the one error line, no traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith("retake: ")]
    assert len(errors) == 1 and stderr.splitlines()[-1] == errors[0] and message in errors[0], stderr
    assert "Traceback" not in stderr


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
    done = cli("edit", DEMO, *TINY, "--source", "a house in a meadow under a blue sky",
               "--target", "a castle in a meadow under a blue sky", "--project", project, "--out", out,
               *QUICK, check_exit=0)
    assert f"result: {out}" in done.stdout and f"project: {project}" in done.stdout
    assert out.is_file() and (project / "project.json").is_file()
    again = cli("edit", "--project", project, "--target", "a castle in a meadow under a blue sky",
                "--max-side", "64", "--out", tmp_path / "again.png", check_exit=0)
    assert "reused its inversion" in again.stdout
    # same pixels, byte for byte (the PNG's text differs only in the edit's id and time)
    first, second = Image.open(out), Image.open(tmp_path / "again.png")
    assert first.tobytes() == second.tobytes() and first.size == second.size == (640, 480)  # the photo's own size


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
    # TINY first: a --model in args comes later and wins
    done = cli(args[0], *TINY, *args[1:], "--project", tmp_path / "p.retake", *QUICK) if "--project" not in args \
        else cli(*args)
    assert done.returncode == 1
    _assert_one_error_line(done.stderr, message)
    assert not (tmp_path / "p.retake").exists()


def test_methods_json_lists_every_parameter_with_its_spec(cli):
    listing = json.loads(cli("methods", "--json", check_exit=0).stdout)
    p2p = next(m for m in listing if m["id"] == "p2p")
    specs = {p["name"]: p for p in p2p["params"]}
    assert {"null-text", "negative-prompt", "ddim"} <= set(specs["inversion"]["choices"])
    assert specs["cross_replace"]["kind"] == "step_range" and specs["cross_replace"]["default"] == [0.0, 0.8]
    assert specs["blend_start"]["kind"] == "step_fraction"
    assert all(p["help"] for p in p2p["params"])


def test_info_and_self_test(cli):
    assert "diffusers 0.42.1" in cli("info", check_exit=0).stdout
    done = cli("self-test", check_exit=0)
    assert "self-test passed" in done.stdout and "FAIL" not in done.stdout


def _in_process(argv, capsys):
    """Run the CLI's main in this process (no start-up cost); returns (exit status, stdout, stderr)."""
    from cli.commands import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as leaving:
        code = leaving.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


EDIT = ["edit", DEMO, *TINY, "--source", "a house", "--target", "a castle"]


@pytest.mark.parametrize("args, code, message", [
    (["--steps", "5", "--param", "steps=6"], 2, "--steps/--param steps is given twice with different values (6 and 5)"),
    (["--param", "guidance=3", "--param", "guidance=4"], 2, "--param guidance is given twice"),
    (["--max-side", "100"], 2, "--max-side: The longest side (--max-side) must be a multiple of 64 between 64 "
                               "and 4096, e.g. 512, not 100; see `retake edit --help`."),
    (["--max-side", "big"], 2, "--max-side: must be a whole number, not big"),
    (["--max-side", "0"], 2, "not 0"),
    (["--max-side", "9" * 500], 2, "…"),
    (["--param", "guidance=nan"], 1, "Parameter guidance must be a finite number, not nan."),
    (["--param", "blend_threshold=nan"], 1, "Parameter blend_threshold must be a finite number"),
    (["--param", "cross_replace=nan,nan"], 1, "Parameter cross_replace must be a finite number"),
    (["--param", "guidance=inf"], 1, "finite number, not inf"),
])
def test_bad_values_fail_in_one_line_before_any_work(capsys, tmp_path, args, code, message):
    project = tmp_path / "p.retake"
    status, out, err = _in_process([*EDIT, "--project", project, "--max-side", "64", *args], capsys)
    assert status == code and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("retake: ") and message in lines[0], err
    assert len(lines[0]) < 300 and not project.exists()


def test_the_same_steps_twice_is_fine():
    from cli.commands import build_parser, request_from_args

    args = build_parser().parse_args([*map(str, EDIT), "--steps", "5", "--param", "steps=5.0", "--param", "steps=5"])
    assert request_from_args(args).params == {"steps": "5.0"}
    args = build_parser().parse_args([*map(str, EDIT), "--param", "guidance=nan", "--param", "guidance=nan"])
    assert request_from_args(args).params == {"guidance": "nan"}  # refused later, as not finite


@pytest.mark.parametrize("args, code", [(["--param", "guidance=nan"], 1), (["--max-side", "100"], 2)])
def test_bad_values_through_the_real_process_leave_no_traceback(cli, tmp_path, args, code):
    done = cli(*EDIT, "--project", tmp_path / "p.retake", *QUICK, *args)
    assert done.returncode == code and not (tmp_path / "p.retake").exists()
    _assert_one_error_line(done.stderr)


def test_project_check_and_repair(capsys, tmp_path):
    from tests.test_project import make_project, manifest

    root = tmp_path / "p"
    make_project(root)
    status, out, err = _in_process(["project", "check", root], capsys)
    assert status == 0 and out.startswith(f"Project {root}: sound") and "inversions: 1" in out and err == ""
    (root / manifest(root)["inversions"][0]["file"]).unlink()
    status, out, _ = _in_process(["project", "check", root], capsys)
    assert status == 1 and "damaged; `--repair` sets the damaged files aside" in out and "problem: " in out
    status, out, _ = _in_process(["project", "check", root, "--repair"], capsys)
    assert status == 0 and "sound" in out and "repaired: The stored inversion k1 was missing" in out
    status, out, _ = _in_process(["project", "check", tmp_path / "nowhere"], capsys)
    assert status == 1 and "not a folder" in out
