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
    (["--seed", "18446744073709551616"], 2, "--seed: The seed (--seed) must be a whole number from 0 to "
                                            "18446744073709551615, not 18446744073709551616"),
    (["--seed", "-1"], 2, "not -1"),
    (["--seed", "9" * 5000], 2, "--seed: must be a whole number"),
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


def test_the_fast_path_is_the_default_and_eager_turns_it_off():
    from cli.commands import build_parser, request_from_args

    assert request_from_args(build_parser().parse_args(list(map(str, EDIT)))).fast
    assert not request_from_args(build_parser().parse_args([*map(str, EDIT), "--eager"])).fast


@pytest.mark.parametrize("args, code", [(["--param", "guidance=nan"], 1), (["--max-side", "100"], 2)])
def test_bad_values_through_the_real_process_leave_no_traceback(cli, tmp_path, args, code):
    done = cli(*EDIT, "--project", tmp_path / "p.retake", *QUICK, *args)
    assert done.returncode == code and not (tmp_path / "p.retake").exists()
    _assert_one_error_line(done.stderr)


def _hostile_model_folder(folder: Path) -> Path:
    import shutil

    shutil.copytree(ROOT / "resources" / "demo_model" / "weights", folder)
    (folder / "unet" / "config.json").write_text("[" * 100000 + "]" * 100000)
    return folder


def _pickled_encoder(folder: Path) -> Path:
    from safetensors.torch import load_file
    import torch

    folder.mkdir()
    encoder = ROOT / "resources" / "demo_model" / "weights" / "image_encoder"
    (folder / "config.json").write_bytes((encoder / "config.json").read_bytes())
    torch.save({**load_file(encoder / "model.safetensors"), "x": _Print()}, folder / "pytorch_model.bin")
    return folder


class _Print:
    def __reduce__(self):
        return (print, ("a pickle ran",))


@pytest.mark.parametrize("case, code, message", [
    ("deep config", 1, "config.json' is not a readable JSON config: it is nested too deeply."),
    ("pickled encoder", 1, "holds Python objects besides tensors, which Retake will not unpickle even with "
                           "--allow-pickle"),
    ("lone surrogate", 1, "The target prompt is not valid text (it holds a lone surrogate"),
    ("huge seed", 2, "--seed: The seed (--seed) must be a whole number from 0 to 18446744073709551615"),
])
def test_the_last_tracebacks_are_one_sentence(tmp_path, case, code, message):
    args = [*EDIT, "--project", tmp_path / "p.retake", *QUICK]
    if case == "deep config":
        args += ["--model", _hostile_model_folder(tmp_path / "model")]
    elif case == "pickled encoder":
        args += ["--method", "stylediffusion", "--image-encoder", _pickled_encoder(tmp_path / "enc"), "--allow-pickle"]
    elif case == "lone surrogate":
        args += ["--target", b"a \xff castle"]  # bytes that are not UTF-8: Python's argv holds a lone surrogate
    else:
        args += ["--seed", str(2 ** 64)]
    argv = [a if isinstance(a, bytes) else str(a).encode() for a in [sys.executable, ROOT / "main.py", *args]]
    done = subprocess.run(argv, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                          timeout=300)
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == code, stderr
    _assert_one_error_line(stderr, message)
    assert "weights_only" not in stderr and b"a pickle ran" not in done.stdout
    assert not (tmp_path / "p.retake").exists()


def test_a_reedit_reads_each_project_file_at_most_once(capsys, tmp_path):
    import torch

    from bench.bench_project_io import counting_project_reads
    from pipeline.project import Project

    project = tmp_path / "p.retake"
    assert _in_process([*EDIT, "--project", project, *QUICK], capsys)[0] == 0
    opened = Project.open(project)
    (inversion,) = opened.inversions
    for n in range(2):  # tunings a p2p re-edit does not need, as a specref project keeps them
        opened.save_inversion(f"tuning{n}", {"kv": torch.zeros(1 << 20)}, method="specref", model_identity="m",
                              source_prompt="a house", params={}, size=(64, 64), steps=5, tuning_of=inversion.key)
    sizes = {p.relative_to(project).as_posix(): p.stat().st_size for p in project.rglob("*") if p.is_file()}
    with counting_project_reads() as reads:
        status, out, _ = _in_process(["edit", "--project", project, "--target", "a barn", "--max-side", "64"], capsys)
    assert status == 0 and "reused its inversion" in out
    for rel, size in sizes.items():  # each file whole once at most, and headers (project.json: every commit
        if rel != "project.json":    # re-reads it under the lock, so that no other writer's change is lost)
            assert reads[rel] <= size + 4096, (rel, reads[rel], size)
    assert sizes[inversion.file] <= reads[inversion.file] < sizes[inversion.file] + 4096
    assert all(reads[r.file] < 4096 for r in Project.open(project).inversions if r.key.startswith("tuning"))


def test_project_check_escapes_what_the_manifest_says(capsys, tmp_path):
    from tests.test_project import _rewrite, make_project

    root = tmp_path / "p"
    make_project(root)
    hostile = "\x1b]0;pwned\x07\x1b[2J\x1b[31mRED \x9b31m \u202egpj.exe"

    def poison(data):
        data["settings"].update(source_prompt=hostile, method="p2p\x1b[5m", model={"spec": "demo\x07",
                                                                                  "identity": "sha256:0"})

    _rewrite(root, poison)
    status, out, _ = _in_process(["project", "check", root], capsys)
    assert status == 0 and not any(c in out for c in "\x1b\x07\x9b\u202e"), out
    assert "\\u001b]0;pwned\\u0007" in out and "\\u009b31m" in out and "\\u202egpj.exe" in out
    assert "method p2p\\u001b[5m" in out and "model demo\\u0007" in out


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
    status, out, err = _in_process(["project", "check", tmp_path / "nowhere"], capsys)
    assert (status, out, err) == (2, "", f"retake: There is no project at {tmp_path / 'nowhere'}.\n")
    (tmp_path / "a-file").write_bytes(b"")
    status, out, _ = _in_process(["project", "check", tmp_path / "a-file"], capsys)
    assert status == 1 and "not a folder" in out
