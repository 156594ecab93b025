"""The batch's plain-Python half (no Ray): recipes and manifests checked as the CLI checks its arguments,
one sentence per mistake and before any worker starts; the plan's names and keys; the ledger; the
report and the contact sheet; one worker driven directly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cli.commands import main as cli_main
from pipeline.batch.ledger import Ledger, Record
from pipeline.batch.manifest import read_inputs
from pipeline.batch.plan import Layout, make_plan
from pipeline.batch.recipe import RecipeError, Template, read_recipe, recipe_from_json
from pipeline.batch.sheet import contact_sheet_html
from pipeline.batch.work import BatchWorker, task_json
from pipeline.area import DEFAULT_PADDING
from pipeline.errors import ParamError
from pipeline.images import DEFAULT_FEATHER
from pipeline.methods.registry import get_method
from pipeline.models import FileHashes, model_identity
from pipeline.params import params_from_dict
from pipeline.preflight import check_max_side
from pipeline.project import AreaSettings
from pipeline.request import resolve
from tests.batch_photos import RECIPE, make_photos, write_recipe

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RETAKE_CACHE_DIR", str(tmp_path / "cache"))


def _plan(tmp_path: Path, inputs: Path, recipe: dict | None = None):
    layout = Layout(tmp_path / "out")
    parsed = recipe_from_json(recipe or RECIPE)
    return make_plan(parsed, read_inputs(inputs), layout, model_identity(parsed.model),
                     FileHashes(tmp_path / "hashes.json"))


def _one_sentence(text: str) -> None:
    assert "\n" not in text and text.endswith(".") and "Traceback" not in text, text


# -- the recipe ---------------------------------------------------------------------------------------

def test_the_issues_recipe_is_read_with_every_default_filled_in(tmp_path):
    recipe = read_recipe(write_recipe(tmp_path / "r.json", source="...", target="..."))
    assert (recipe.model, recipe.method, recipe.max_side) == ("demo-tiny", "p2p", 64)
    assert recipe.params["inversion"] == "direct" and recipe.params["steps"] == 5
    assert recipe.params["guidance"] == 7.5  # the method's default, so a changed default is a changed key
    assert recipe_from_json(recipe.to_json()) == recipe


@pytest.mark.parametrize("params", [{"steps": 0}, {"steps": "many"}, {"guidance": float("nan")}, {"inversion": "magic"},
                                    {"stepz": 5}, {"cross_replace": [0.9, 0.1]}])
def test_params_are_refused_in_the_words_of_the_command_lines_own_check(params):
    with pytest.raises(ParamError) as cli_error:  # what `--param` meets: pipeline.params on the method's Params
        params_from_dict(get_method("p2p").Params, params)
    with pytest.raises(RecipeError) as recipe_error:
        recipe_from_json({**RECIPE, "params": params})
    assert str(recipe_error.value) == f"The recipe: {cli_error.value}"
    _one_sentence(str(recipe_error.value))


def test_max_side_and_method_are_checked_by_the_command_lines_checks():
    with pytest.raises(ParamError) as expected:
        check_max_side(100)
    with pytest.raises(RecipeError, match=str(expected.value).replace("(", r"\(").replace(")", r"\)")):
        recipe_from_json({**RECIPE, "max_side": 100})
    with pytest.raises(RecipeError, match="Unknown method 'pix2pix'"):
        recipe_from_json({**RECIPE, "method": "pix2pix"})


@pytest.mark.parametrize("change, message", [
    ({"trget": "a castle"}, "unknown key 'trget'"),
    ({"max_side": "512"}, "not the text '512'"),
    ({"source": "a {stem"}, "unmatched brace"),
    ({"target": "a {0} castle"}, "not a plain name"),
    ({"target": "a {stem!r} castle"}, "not a plain name"),
    ({"target": 5}, "must be text"),
    ({"inputs": {"reference": "r.png"}}, "takes no input 'reference'"),
    ({"seed": -1}, "seed must be a whole number"),
    ({"dtype": "fp8"}, "dtype must be one of"),
    ({"format": "retake-recipe-9"}, "this Retake reads retake-recipe-1"),
    ({"params": ["steps=5"]}, "params must be an object"),
])
def test_recipe_mistakes_are_one_sentence_each(change, message):
    with pytest.raises(RecipeError, match=message) as error:
        recipe_from_json({**RECIPE, **change})
    _one_sentence(str(error.value))


def test_a_recipe_file_that_is_not_json_or_holds_nan(tmp_path):
    (tmp_path / "a.json").write_text('{"model": "demo-tiny",')
    (tmp_path / "b.json").write_text('{"params": {"guidance": NaN}}')
    for name in ("a.json", "b.json"):
        with pytest.raises(RecipeError, match="is not JSON") as error:
            read_recipe(tmp_path / name)
        _one_sentence(str(error.value))


def test_templates_fill_fields_and_keep_literal_braces():
    template = Template.parse("a {colour} house {{not a field}}", "t")
    assert template.fields == {"colour"} and template.fill({"colour": "red"}) == "a red house {not a field}"


# -- manifests and the plan ------------------------------------------------------------------------

def test_a_csv_manifest_fills_templates_names_repeated_photos_and_shares_their_project(tmp_path):
    a, b = make_photos(tmp_path / "photos", 2)
    manifest = tmp_path / "edits.csv"
    manifest.write_text("photo,colour,param.steps\n"
                        f"photos/{a.name},red,\nphotos/{a.name},blue,6\nphotos/{b.name},green,\n")
    plan = _plan(tmp_path, manifest, {**RECIPE, "target": "a {colour} {stem}"})
    assert [i.name for i in plan.items] == ["photo00-1", "photo00-2", "photo01"]
    assert [i.target for i in plan.items] == ["a red photo00", "a blue photo00", "a green photo01"]
    assert [i.params["steps"] for i in plan.items] == [5, 6, 5]
    tasks = plan.tasks()
    assert [(t.project_name, len(t.items)) for t in tasks] == [("photo00", 2), ("photo01", 1)]
    request = plan.request(plan.items[0])
    # every parameter and input is given, so nothing is inherited from a project an earlier recipe left
    assert request.params == plan.items[0].params and request.inputs == {"edit_mask": ""}
    assert request.project == str(tmp_path / "out" / "projects" / "photo00.retake")
    assert request.output == str(tmp_path / "out" / "results" / "photo00-1.png")


def test_a_jsonl_manifest_with_a_mask_and_per_photo_prompts(tmp_path):
    (photo,) = make_photos(tmp_path, 1)
    Image.new("L", (64, 64), 255).save(tmp_path / "mask.png")
    manifest = tmp_path / "edits.jsonl"
    manifest.write_text(json.dumps({"photo": photo.name, "target": "a castle", "mask": "mask.png", "name": "x"}) + "\n")
    (item,) = _plan(tmp_path, manifest).items
    assert (item.name, item.target, item.inputs) == ("x", "a castle", {"edit_mask": str(tmp_path / "mask.png")})


@pytest.mark.parametrize("rows, message", [
    ("photo,colr\nphotos/photo00.png,red\n", "column 'colr' is neither one Retake knows"),
    ("photo\nphotos/nothere.png\n", "the photo .*nothere.png does not exist"),
    ("target\na castle\n", "there is no photo"),
    ("photo,param.steps\nphotos/photo00.png,0\n", "line 2: Parameter steps must lie between"),
    ("photo,input.subject_mask\nphotos/photo00.png,m.png\n", "takes no input 'subject_mask'"),
    ("photo,mask\nphotos/photo00.png,missing-mask.png\n", "the edit_mask file .*missing-mask.png does not exist"),
    ("photo,name\nphotos/photo00.png,x\nphotos/photo01.png,X\n", "Two results would be called 'X'"),
    ("photo,name\nphotos/photo00.png,../x\n", "cannot be a file name"),
    ("photo,photo\nphotos/photo00.png,photos/photo01.png\n", "column 'photo' twice"),
    ("photo\nphotos/photo00.png,extra\n", "2 cells for 1 columns"),
])
def test_manifest_mistakes_are_one_sentence_each(tmp_path, rows, message):
    make_photos(tmp_path / "photos", 2)
    (tmp_path / "m.csv").write_text(rows)
    with pytest.raises(RecipeError, match=message) as error:
        _plan(tmp_path, tmp_path / "m.csv")
    _one_sentence(str(error.value))


def test_a_template_field_a_photo_does_not_give_and_a_missing_prompt(tmp_path):
    make_photos(tmp_path / "photos", 1)
    with pytest.raises(RecipeError, match=r"name \{colour\}, which it does not give"):
        _plan(tmp_path, tmp_path / "photos", {**RECIPE, "target": "a {colour} house"})
    without_target = {k: v for k, v in RECIPE.items() if k != "target"}
    with pytest.raises(RecipeError, match="there is no target prompt"):
        _plan(tmp_path, tmp_path / "photos", without_target)


def test_two_photos_whose_names_differ_only_in_case_or_ending_are_refused(tmp_path):
    (photo,) = make_photos(tmp_path / "photos", 1)
    Image.open(photo).save(tmp_path / "photos" / "PHOTO00.jpg")
    with pytest.raises(RecipeError, match="Two projects would be called"):
        _plan(tmp_path, tmp_path / "photos")


def test_keys_change_with_what_the_edit_depends_on_and_only_with_it(tmp_path):
    photos = make_photos(tmp_path / "photos", 2)

    def keys(recipe=None):
        return [item.key for item in _plan(tmp_path, tmp_path / "photos", recipe).items]

    first = keys()
    assert first == keys() and len(set(first)) == 2
    assert keys({**RECIPE, "params": {**RECIPE["params"], "guidance": 7.5}}) == first  # the default, spelt out
    assert keys({**RECIPE, "params": {**RECIPE["params"], "steps": "5"}}) == first  # as --param writes it
    assert keys({**RECIPE, "target": "a tower"}) != first
    assert keys({**RECIPE, "params": {**RECIPE["params"], "guidance": 5}}) != first
    assert keys({**RECIPE, "model": "demo"}) != first
    Image.open(photos[1]).rotate(90).save(photos[1])
    changed = keys()
    assert changed[0] == first[0] and changed[1] != first[1]


def test_the_output_folder_must_be_new_empty_or_a_batchs(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(RecipeError, match="holds other files"):
        Layout(tmp_path / "out").check()


# -- the ledger ----------------------------------------------------------------------------------------

def test_the_ledger_ignores_torn_and_forged_lines_and_knows_what_to_skip(tmp_path):
    layout = Layout(tmp_path / "out")
    layout.make()
    (layout.results / "a.png").write_bytes(b"png")
    done, gone = Record("a" * 64, "a", "done", result="results/a.png"), Record("b" * 64, "b", "done", result="results/b.png")
    broken = Record("c" * 64, "c", "failed", "Cannot open c.png.", kind="ImageError")
    oom = Record("d" * 64, "d", "failed", "The GPU ran out of memory.", kind="OutOfMemoryError")
    forged = Record("e" * 64, "e", "done", result="../../etc/passwd")
    lines = [r.to_json() for r in (done, gone, broken, oom, forged)]
    (layout.state / "ledger.jsonl").write_text("\n".join(lines) + '\n{"key": "f' + "0" * 63 + '", "na')
    with Ledger(layout) as ledger:
        assert set(ledger.records) == {"a" * 64, "b" * 64, "c" * 64, "d" * 64}
        assert ledger.finished() == {"a" * 64, "c" * 64}  # b's result is gone; d may succeed another time
        assert ledger.finished(retry_failed=True) == {"a" * 64}
        with pytest.raises(RecipeError, match="Another retake batch"):
            Ledger(layout).__enter__()


# -- what the CLI checks before any worker starts -----------------------------------------------------------

def _batch(argv, capsys):
    status = cli_main(["batch", *map(str, argv)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("recipe, rows, message", [
    ({"trget": "x"}, None, "unknown key 'trget'"),
    ({"params": {"steps": 0}}, None, "Parameter steps must lie between"),
    ({"model": str(Path("/nowhere/model"))}, None, "There is no model at"),
    ({}, "photo,colr\nphotos/photo00.png,red\n", "column 'colr'"),
    ({}, "photo\nphotos/missing.png\n", "does not exist"),
])
def test_validation_errors_are_one_line_and_come_before_ray(tmp_path, capsys, monkeypatch, recipe, rows, message):
    monkeypatch.setitem(sys.modules, "pipeline.batch.runner", None)  # importing the Ray runner now fails loudly
    make_photos(tmp_path / "photos", 2)
    inputs = tmp_path / "photos"
    if rows is not None:
        inputs = tmp_path / "m.csv"
        inputs.write_text(rows)
    status, out, err = _batch(["--recipe", write_recipe(tmp_path / "r.json", **recipe), "--inputs", inputs,
                               "--out", tmp_path / "out", "--workers", "2"], capsys)
    assert status == 1 and out == "" and err.count("\n") == 1 and err.startswith("retake: ") and message in err, err
    assert not (tmp_path / "out").exists()


def test_without_ray_installed_the_batch_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    make_photos(tmp_path / "photos", 1)
    status, _, err = _batch(["--recipe", write_recipe(tmp_path / "r.json"), "--inputs", tmp_path / "photos",
                             "--out", tmp_path / "out"], capsys)
    assert status == 1 and "needs Ray, which is not installed" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_gpus_and_workers_together_is_a_usage_error(tmp_path, capsys):
    status, _, err = _batch(["--recipe", tmp_path / "r.json", "--inputs", tmp_path, "--out", tmp_path / "o",
                             "--gpus", "1", "--workers", "2"], capsys)
    assert status == 2 and "give one of them" in err


def test_only_the_runner_names_ray_in_its_imports():
    from tests.test_layering import _imports

    importing = sorted(module for module, names in {**_imports("pipeline"), **_imports("cli"), **_imports("gui")}.items()
                       if "ray" in names)
    assert importing == ["pipeline/batch/runner.py"]


def test_nothing_of_the_batch_but_its_runner_imports_ray():
    code = ("import sys, cli.commands, pipeline.batch.plan, pipeline.batch.ledger, pipeline.batch.report, "
            "pipeline.batch.work, pipeline.batch.progress, cli.batch_progress; "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


# -- one worker, driven directly (what a Ray actor runs) ----------------------------------------------------

def test_a_worker_edits_photo_after_photo_and_a_refused_prompt_fails_only_its_own(tmp_path):
    make_photos(tmp_path / "photos", 2)
    (tmp_path / "m.csv").write_text("photo,param.blend_words\nphotos/photo00.png,zebra\nphotos/photo01.png,\n")
    plan = _plan(tmp_path, tmp_path / "m.csv")
    plan.layout.make()
    worker = BatchWorker("cpu0", "cpu")
    assert worker.ready("demo-tiny", None, False, str(plan.layout.out))["identity"] == plan.model_identity
    outcomes = [o for task in plan.tasks() for o in worker.run(task_json(plan, task))]
    assert [o["status"] for o in outcomes] == ["failed", "done"]
    assert outcomes[0]["kind"] == "PromptError" and "zebra" in outcomes[0]["reason"]
    assert (plan.layout.out / outcomes[1]["result"]).is_file()
    assert plan.layout.after_thumb("photo01").is_file() and plan.layout.before_thumb("photo01").is_file()
    assert outcomes[1]["stages"]["DDIM inversion"] > 0 and outcomes[1]["stages"]["editing"] > 0
    worker.cancel()
    assert [o["status"] for o in worker.run(task_json(plan, plan.tasks()[1]))] == ["cancelled"]


def test_a_worker_that_cannot_see_the_output_folder_says_so(tmp_path):
    answer = BatchWorker("cpu0", "cpu").ready("demo-tiny", None, False, str(tmp_path / "elsewhere"))
    assert "is not visible on" in answer["error"]


# -- the contact sheet --------------------------------------------------------------------------------------

def test_the_contact_sheet_escapes_what_users_wrote(tmp_path):
    row = {"name": "a<b", "source": "<script>x</script>", "target": "t & u", "status": "failed",
           "reason": "Cannot open \"a\".", "before": "thumbs/a b.before.jpg", "after": "", "result": "",
           "seconds": 0.0, "worker": "", "this_run": True}
    (tmp_path / "thumbs").mkdir()
    (tmp_path / "thumbs" / "a b.before.jpg").write_bytes(b"jpg")
    page = contact_sheet_html("t", "s", [row], tmp_path)
    assert "<script>" not in page and "&lt;script&gt;" in page and "a&lt;b" in page
    assert 'src="thumbs/a%20b.before.jpg"' in page and 'class="card failed"' in page


# -- the area: which part of each photo is edited, as `retake edit --area/--area-padding/--feather` ------------

def test_a_recipes_area_reaches_every_edit_and_its_key(tmp_path):
    """`area`, `area_padding` and `feather` are what `retake edit --area --area-padding --feather` take; left
    out, each edit takes its project's, else the defaults (as the command line does), and the keys of a
    recipe without them are those of before."""
    make_photos(tmp_path / "photos", 1)
    area = {"area": "whole", "area_padding": 48, "feather": 0}
    recipe = recipe_from_json({**RECIPE, **area})
    assert (recipe.area, recipe.area_padding, recipe.feather) == ("whole", 48, 0)
    assert recipe_from_json(recipe.to_json()) == recipe and {**RECIPE, **area}.items() <= recipe.to_json().items()
    plain = recipe_from_json(RECIPE)
    assert (plain.area, plain.area_padding, plain.feather) == (None, None, None)
    assert not {"area", "area_padding", "feather"} & set(plain.to_json())
    plan = _plan(tmp_path, tmp_path / "photos", {**RECIPE, **area})
    request = plan.request(plan.items[0])
    assert (request.area, request.area_padding, request.feather) == ("whole", 48, 0)
    plan.layout.make()
    job = resolve(request)
    assert (job.area.mode, job.area.padding, job.area.feather) == ("whole", 48, 0)
    default = _plan(tmp_path, tmp_path / "photos")
    request = default.request(default.items[0])
    assert (request.area, request.area_padding, request.feather) == (None, None, None)
    assert resolve(request).area == AreaSettings(None, DEFAULT_PADDING, DEFAULT_FEATHER)
    keys = {json.dumps(change): _plan(tmp_path, tmp_path / "photos", {**RECIPE, **change}).items[0].key
            for change in ({}, {"area": "whole"}, {"area": "region"}, {"area_padding": 8}, {"feather": 9})}
    assert len(set(keys.values())) == len(keys)  # each changes what is made: its own key
    assert keys["{}"] == default.items[0].key


@pytest.mark.parametrize("change, cli_args", [
    ({"area": "crop"}, ["--area", "crop"]),
    ({"area_padding": -1}, ["--area-padding", "-1"]),
    ({"area_padding": 100_000}, ["--area-padding", "100000"]),
    ({"feather": 2.5}, ["--feather", "2.5"]),
    ({"feather": "4"}, None),
    ({"feather": True}, None),
    ({"area": 1}, None),
])
def test_a_recipes_area_is_refused_where_the_command_line_refuses_it(tmp_path, capsys, change, cli_args):
    with pytest.raises(RecipeError) as error:
        recipe_from_json({**RECIPE, **change})
    _one_sentence(str(error.value))
    assert next(iter(change)) in str(error.value)
    if cli_args is not None:  # the command line refuses the same value
        with pytest.raises(SystemExit):
            cli_main(["edit", str(tmp_path / "p.png"), "--target", "t", *cli_args])
        assert next(iter(change)).replace("_", "-") in capsys.readouterr().err
