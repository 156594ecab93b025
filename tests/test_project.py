"""Projects: round trips, damage reported in one message without touching files, crash safety, locking."""

import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipeline import project as project_module
from pipeline.project import folder as folder_module
from pipeline.errors import ProjectError
from pipeline.images import read_png_metadata
from pipeline.project import (
    SCHEMA_VERSION, AreaSettings, ModelRecord, Project, SetAside, check_project, migrate_manifest, repair_project,
)
from bench.bench_project_io import counting_project_reads
from tests.helpers import tree_digest

ROOT = Path(__file__).resolve().parent.parent
MODEL = ModelRecord("demo", "sha256:" + "0" * 64)
TENSORS = {"latents": torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(0)),
           "null_embeddings": torch.randn(5, 77, 32, generator=torch.Generator().manual_seed(1))}


def add_edit(project, target="a castle", **kw):
    fields = dict(target_prompt=target, source_prompt="a house", model=MODEL, method="p2p", params={"steps": 5},
                  seed=None, inversion_key="k1", result=Image.new("RGB", (64, 48), "red"))
    fields.update(kw)
    return project.add_edit(**fields)


def save_inversion(project, key="k1", tensors=TENSORS, **kw):
    fields = dict(method="p2p", model_identity=MODEL.identity, source_prompt="a house", params={"steps": 5},
                  size=(64, 64), steps=5)
    fields.update(kw)
    return project.save_inversion(key, tensors, **fields)


def make_project(folder: Path) -> Project:
    project = Project.create(folder, Image.new("RGB", (80, 60), (10, 120, 200)))
    save_inversion(project)
    add_edit(project)
    return project


def manifest(root: Path) -> dict:
    return json.loads((root / "project.json").read_text())


def project_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def referenced(root: Path) -> set[str]:
    data = manifest(root)
    files = {"project.json", data["image"]["file"], *(inv["file"] for inv in data["inversions"]),
             *(item["file"]["file"] for item in data.get("inputs", []))}
    for edit in data["edits"]:
        files.add(edit["result"]["file"])
        if edit["mask"]:
            files.add(edit["mask"]["file"])
    return files


# ---------------------------------------------------------------------------------------------------
# Round trips


def test_create_save_open_round_trip(tmp_path):
    root = tmp_path / "p"
    photo = Image.effect_noise((80, 60), 50).convert("RGB")
    project = Project.create(root, photo)
    assert project.edits == () and project.inversions == () and project.settings.model is None
    params = {"steps": 50, "guidance": 7.5, "words": ["house", "roof"], "ranges": [[0, 0.4]], "reweight":
              {"chinese": 2.0}, "blend": None, "null_text": True, "prompt": "一座房子", "tuple": (1, 2)}
    project.update_settings(model_spec="demo", model_identity=MODEL.identity, source_prompt="a house",
                            method="p2p", params=params)
    reopened = Project.open(root)
    assert reopened.image().tobytes() == photo.tobytes()
    settings = reopened.settings
    assert settings.model == MODEL and settings.source_prompt == "a house" and settings.method == "p2p"
    assert settings.params == {**params, "tuple": [1, 2]}
    data = manifest(root)
    assert data["format"] == "retake-project" and data["schema_version"] == SCHEMA_VERSION
    assert data["app_version"] == project_module.app_version()
    source = (root / "source.png").read_bytes()
    assert data["image"] == {"file": "source.png", "sha256": hashlib.sha256(source).hexdigest(),
                             "bytes": len(source), "width": 80, "height": 60}


def test_images_are_stored_as_rgb_full_resolution(tmp_path):
    rgba = Image.new("RGBA", (30, 20), (255, 0, 0, 0))
    project = Project.create(tmp_path / "p", rgba)
    assert project.image().mode == "RGB" and project.image().getpixel((0, 0)) == (255, 255, 255)
    assert (project.image_record.width, project.image_record.height) == (30, 20)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
                                   torch.bool])
def test_inversions_round_trip_byte_identical(tmp_path, dtype):
    project = Project.create(tmp_path / "p", Image.new("RGB", (8, 8)))
    base = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(2)) * 10
    expected = base.to(dtype).clone()
    tensors = {"t": base.to(dtype), "view": base.to(dtype).transpose(0, 2)[:, 1:, :]}  # non-contiguous view
    record = save_inversion(project, "abc-123", tensors, params={"steps": 50, "inner_steps": 10},
                            size=(512, 384), steps=50, metadata={"scheduler": "ddim"})
    tensors["t"].fill_(0)  # the stored copy must not follow the caller's tensor
    loaded = Project.open(tmp_path / "p").load_inversion("abc-123")
    assert set(loaded) == {"t", "view"} and loaded["t"].dtype == dtype
    assert torch.equal(loaded["t"].flatten().view(torch.uint8), expected.flatten().view(torch.uint8))
    assert torch.equal(loaded["view"], expected.transpose(0, 2)[:, 1:, :])
    assert record.size == (512, 384) and record.params == {"steps": 50, "inner_steps": 10}
    header_len = struct.unpack("<Q", (tmp_path / "p" / record.file).read_bytes()[:8])[0]
    header = json.loads((tmp_path / "p" / record.file).read_bytes()[8:8 + header_len])
    described = json.loads(header["__metadata__"]["retake"])
    assert described == {"format": "retake-inversion", "key": "abc-123", "scheduler": "ddim"}


def test_an_inversion_saved_again_replaces_the_old_file(tmp_path):
    root = tmp_path / "p"
    project = make_project(root)
    old_file = project.find_inversion("k1").file
    same = save_inversion(project)  # identical tensors: identical file, nothing new written
    assert same.file == old_file and len(project.inversions) == 1
    new = save_inversion(project, tensors={"latents": torch.ones(2, 2)})
    assert new.file != old_file and not (root / old_file).exists()
    assert [inv.key for inv in Project.open(root).inversions] == ["k1"]
    assert torch.equal(Project.open(root).load_inversion("k1")["latents"], torch.ones(2, 2))
    assert project_files(root) == referenced(root)


def test_edit_history_order_masks_and_result_metadata(tmp_path):
    root = tmp_path / "p"
    project = make_project(root)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1
    second = add_edit(project, "a barn", seed=42, mask=mask, params={"steps": 5, "words": ["barn"]},
                      png_metadata={"working_size": [64, 64]})
    third = add_edit(project, "a tower", mask=Image.fromarray((mask[0, 0].numpy() * 255).astype("uint8")))
    reopened = Project.open(root)
    assert [e.id for e in reopened.edits] == ["e0001", "e0002", "e0003"]
    assert [e.target_prompt for e in reopened.edits] == ["a castle", "a barn", "a tower"]
    assert reopened.edits[1] == second and reopened.find_edit("e0003") == third
    assert second.mask == third.mask  # the same mask is stored once
    stored = Image.open(reopened.mask_path(second))
    assert stored.mode == "L" and stored.getpixel((0, 0)) == 255 and stored.getpixel((7, 0)) == 0
    assert reopened.mask_path("e0001") is None
    meta = read_png_metadata(reopened.result_path(second))
    assert meta["target_prompt"] == "a barn" and meta["seed"] == 42 and meta["params"]["words"] == ["barn"]
    assert meta["model_identity"] == MODEL.identity and meta["working_size"] == [64, 64]
    assert Image.open(reopened.result_path("e0002")).getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(ValueError, match="seed"):
        add_edit(project, png_metadata={"seed": 3})
    with pytest.raises(KeyError):
        project.result_path("e0099")
    assert project_files(root) == referenced(root)


@pytest.mark.parametrize("params, error", [
    ({"x": float("nan")}, ValueError), ({1: 2}, TypeError), ({"x": object()}, TypeError), ({"x": {3}}, TypeError),
    ([("x", 1)], TypeError), ({"x": "\ud800"}, ValueError), ({"\udfff": 1}, ValueError),
])
def test_parameters_must_be_json(tmp_path, params, error):
    project = Project.create(tmp_path / "p", Image.new("RGB", (8, 8)))
    before = tree_digest(tmp_path / "p")
    with pytest.raises(error):
        project.update_settings(model_spec=None, model_identity=None, source_prompt="", method=None, params=params)
    with pytest.raises(error):
        add_edit(project, params=params)
    assert tree_digest(tmp_path / "p") == before


def test_bad_keys_are_refused(tmp_path):
    project = Project.create(tmp_path / "p", Image.new("RGB", (8, 8)))
    for key in ["", "../evil", "a/b", "a.b", "x" * 200]:
        with pytest.raises(ValueError):
            save_inversion(project, key)


def test_returned_records_are_snapshots(tmp_path):
    project = make_project(tmp_path / "p")
    project.edits[0].params["steps"] = 999
    project.settings.params["x"] = 1
    assert project.edits[0].params == {"steps": 5} and project.settings.params == {}


# ---------------------------------------------------------------------------------------------------
# Validation on open


def _rewrite(root: Path, change) -> None:
    data = manifest(root)
    change(data)
    (root / "project.json").write_text(json.dumps(data))


def _flip_byte(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def _truncate(path: Path, n: int) -> None:
    path.write_bytes(path.read_bytes()[:-n])


def _append(path: Path, data: bytes) -> None:
    path.write_bytes(path.read_bytes() + data)


def _damage_safetensors_header(root: Path) -> None:
    """Change the header but keep the checksum right: only the header check can notice."""
    data = manifest(root)
    path = root / data["inversions"][0]["file"]
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = raw[8:8 + n].replace(b'"F32"', b'"F16"', 1)
    path.write_bytes(raw[:8] + header + raw[8 + n:])
    data["inversions"][0]["file_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (root / "project.json").write_text(json.dumps(data))


def _swap_inversion_files(root: Path) -> None:
    project = Project.open(root)
    save_inversion(project, "k2", {"latents": torch.zeros(1)})
    data = manifest(root)
    a, b = data["inversions"]
    for field in ("file", "file_sha256", "file_bytes"):
        a[field], b[field] = b[field], a[field]
    (root / "project.json").write_text(json.dumps(data))


DAMAGE = {
    # kind: (how, words the message must contain)
    "truncated manifest": (lambda r: (r / "project.json").write_bytes((r / "project.json").read_bytes()[:40]),
                           ["project.json", "not valid JSON"]),
    "empty manifest": (lambda r: (r / "project.json").write_bytes(b""), ["project.json", "not valid JSON"]),
    "binary manifest": (lambda r: (r / "project.json").write_bytes(b"\xff\xfe\x00garbage"), ["UTF-8"]),
    "NaN in manifest": (lambda r: (r / "project.json").write_text((r / "project.json").read_text().replace(
        '"steps": 5', '"steps": NaN', 1)), ["not valid JSON"]),
    "lone surrogate": (lambda r: (r / "project.json").write_text((r / "project.json").read_text().replace(
        '"a castle"', '"\\ud800"', 1)), ["not valid Unicode"]),
    "manifest is a list": (lambda r: (r / "project.json").write_text("[]"), ["not a Retake project"]),
    "other format": (lambda r: _rewrite(r, lambda d: d.update(format="photoshop")), ["not a Retake project"]),
    "altered field": (lambda r: _rewrite(r, lambda d: d["inversions"][0].update(steps="many")),
                      ["inversions[0].steps", "integer"]),
    "missing field": (lambda r: _rewrite(r, lambda d: d["edits"][0].pop("target_prompt")),
                      ["edits[0].target_prompt", "missing"]),
    "bool as int": (lambda r: _rewrite(r, lambda d: d["image"].update(width=True)), ["image.width"]),
    "bad date": (lambda r: _rewrite(r, lambda d: d.update(created="yesterday")), ["created"]),
    "bad checksum text": (lambda r: _rewrite(r, lambda d: d["image"].update(sha256="abc")), ["image.sha256"]),
    "path outside": (lambda r: _rewrite(r, lambda d: d["edits"][0]["result"].update(file="../../etc/passwd")),
                     ["edits[0].result.file"]),
    "absolute path": (lambda r: _rewrite(r, lambda d: d["inversions"][0].update(file="/etc/passwd")),
                      ["inversions[0].file"]),
    "duplicate edit": (lambda r: _rewrite(r, lambda d: d["edits"].append(d["edits"][0])), ["edits", "e0001"]),
    "empty part identity": (lambda r: _rewrite(r, lambda d: d["inversions"][0].update(parts={"image_encoder": ""})),
                            ["inversions[0].parts.image_encoder", "empty"]),
    "bad part name": (lambda r: _rewrite(r, lambda d: d["inversions"][0].update(parts={"a/b": "x"})),
                      ["inversions[0].parts", "a/b"]),
    "encoder as number": (lambda r: _rewrite(r, lambda d: d["settings"].update(image_encoder=5)),
                          ["settings.image_encoder"]),
    "tuning of itself": (lambda r: _rewrite(r, lambda d: d["inversions"][0].update(tuning_of="k1")),
                         ["inversions[0].tuning_of", "itself"]),
    "bad tuning key": (lambda r: _rewrite(r, lambda d: d["edits"][0].update(tuning_key="../x")),
                       ["edits[0].tuning_key"]),
    "newer schema": (lambda r: _rewrite(r, lambda d: d.update(schema_version=SCHEMA_VERSION + 1)),
                     ["newer Retake", "update Retake"]),
    "unknown old schema": (lambda r: _rewrite(r, lambda d: d.update(schema_version=0)), ["schema_version 0"]),
    "schema as text": (lambda r: _rewrite(r, lambda d: d.update(schema_version="1")), ["schema_version"]),
    "missing inversion": (lambda r: (r / manifest(r)["inversions"][0]["file"]).unlink(),
                          ["inversion", "missing"]),
    "missing result": (lambda r: (r / manifest(r)["edits"][0]["result"]["file"]).unlink(), ["results/e0001.png"]),
    "missing source": (lambda r: (r / "source.png").unlink(), ["source.png", "missing"]),
    "truncated inversion": (lambda r: _truncate(r / manifest(r)["inversions"][0]["file"], 5),
                            ["inversions/k1.", "damaged", "bytes"]),
    "truncated result": (lambda r: _truncate(r / "results/e0001.png", 1), ["results/e0001.png", "damaged", "bytes"]),
    "result grown": (lambda r: _append(r / "results/e0001.png", b"x"), ["results/e0001.png", "damaged", "bytes"]),
    "truncated source": (lambda r: _truncate(r / "source.png", 7), ["source.png", "damaged", "cannot repair"]),
    "source of another size": (lambda r: Image.new("RGB", (81, 60), "black").save(r / "source.png"),
                               ["source.png"]),
    "negative size": (lambda r: _rewrite(r, lambda d: d["edits"][0]["result"].update(bytes=-1)),
                      ["edits[0].result.bytes", "at least 0"]),
    "size as text": (lambda r: _rewrite(r, lambda d: d["inversions"][0].update(file_bytes="big")),
                     ["inversions[0].file_bytes", "integer"]),
    "damaged safetensors header": (_damage_safetensors_header, ["inversions/k1.", "size"]),
    "swapped inversion files": (_swap_inversion_files, ["does not hold the inversion"]),
    "result is a folder": (lambda r: ((r / "results/e0001.png").unlink(), (r / "results/e0001.png").mkdir()),
                           ["results/e0001.png", "not a regular file"]),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damage_is_one_clear_error_and_nothing_is_touched(tmp_path, kind):
    root = tmp_path / "p"
    make_project(root)
    how, words = DAMAGE[kind]
    how(root)
    before = tree_digest(root)
    with pytest.raises(ProjectError) as error:
        Project.open(root)
    message = str(error.value)
    assert "\n" not in message and len(message) < 400 and message.endswith(".")
    for word in words:
        assert word in message, message
    assert tree_digest(root) == before


def _rich_project(root: Path) -> Project:
    """A project with an inversion, two edits (the second with a mask) and an image input."""
    project = make_project(root)
    add_edit(project, "a barn", mask=torch.ones(1, 1, 8, 8))
    project.set_input("reference", Image.new("RGB", (4, 4), "red"), kind="image", prompt="a cat")
    return project


# Damage that keeps a file's size: only its checksum tells, which opening does not compute. Each entry:
# the checked read of that file, and its name in the project.
SAME_SIZE_DAMAGE = {
    "inversion": (lambda p: p.load_inversion("k1"), lambda data: data["inversions"][0]["file"]),
    "result": (lambda p: p.result_bytes("e0001"), lambda data: data["edits"][0]["result"]["file"]),
    "result image": (lambda p: p.result_image("e0002"), lambda data: data["edits"][1]["result"]["file"]),
    "mask": (lambda p: p.mask_image("e0002"), lambda data: data["edits"][1]["mask"]["file"]),
    "input": (lambda p: p.input_image("reference"), lambda data: data["inputs"][0]["file"]["file"]),
    "source": (lambda p: p.image(), lambda data: "source.png"),
}


@pytest.mark.parametrize("kind", list(SAME_SIZE_DAMAGE))
def test_damage_that_keeps_the_size_is_found_when_read_and_by_check(tmp_path, kind):
    root = tmp_path / "p"
    window = _rich_project(root)  # opened before the damage, like a window left open
    read, name = SAME_SIZE_DAMAGE[kind]
    rel = name(manifest(root))
    _flip_byte(root / rel, -5)
    before = tree_digest(root)
    for project in (window, Project.open(root)):  # opening looks at sizes and headers only
        with pytest.raises(ProjectError) as error:
            read(project)
        message = str(error.value)
        assert rel in message and "damaged" in message and "\n" not in message, message
        assert ("cannot repair" if kind == "source" else "--repair") in message, message
    assert tree_digest(root) == before
    health = check_project(root)  # checking hashes every file
    assert not health.ok and health.repairable == (kind != "source") and rel in health.summary()
    repaired = repair_project(root)  # and so does repairing
    assert repaired.ok == (kind != "source") and len(repaired.repaired) == (kind != "source")


def test_opening_reads_headers_not_contents(tmp_path):
    root = tmp_path / "p"
    project = _rich_project(root)
    save_inversion(project, "big", {"t": torch.zeros(1 << 20)})  # 4 MiB
    sizes = {rel: (root / rel).stat().st_size for rel in referenced(root)}
    with counting_project_reads() as reads:
        opened = Project.open(root)
    assert reads["project.json"] == sizes["project.json"]
    big = opened.find_inversion("big").file
    assert 0 < reads[big] < 1024  # its safetensors header
    assert all(reads[rel] == 0 for rel in sizes if rel.startswith(("results/", "masks/", "inputs/")))
    with counting_project_reads() as reads:
        assert torch.equal(opened.load_inversion("big")["t"], torch.zeros(1 << 20))
    assert dict(reads) == {big: sizes[big]}  # read once, and hashed from the same bytes


def test_a_project_opened_with_recovery_sets_aside_what_a_read_finds_damaged(tmp_path):
    root = tmp_path / "p"
    _rich_project(root)
    data = manifest(root)
    _flip_byte(root / data["inversions"][0]["file"], -5)
    _flip_byte(root / data["edits"][1]["mask"]["file"], -5)
    project = Project.open(root, recover=True)
    assert project.recovered == ()  # opening saw nothing: the sizes are right
    with pytest.raises(SetAside) as error:
        project.load_inversion("k1")
    assert str(error.value).startswith("The stored inversion k1 was damaged and moved to quarantine/")
    assert str(error.value).endswith("it will be recomputed on the next edit.")
    assert project.find_inversion("k1") is None and Project.open(root).find_inversion("k1") is None
    with pytest.raises(SetAside, match="The mask of edit e0002 was damaged"):
        project.mask_image("e0002")
    assert project.mask_image("e0002") is None and len(project.recovered) == 2
    moved = {p.relative_to(place).as_posix() for place in (root / "quarantine").iterdir() for p in place.rglob("*")
             if p.is_file()}
    assert moved == {"NOTE.txt", data["inversions"][0]["file"], data["edits"][1]["mask"]["file"]}
    assert check_project(root).ok and project.input_image("reference").size == (4, 4)
    _flip_byte(root / "source.png", -5)
    with pytest.raises(ProjectError, match="cannot repair"):  # the photo is never set aside
        project.image()
    assert (root / "source.png").is_file()


def test_folders_that_are_not_projects(tmp_path):
    holiday = tmp_path / "holiday"
    holiday.mkdir()
    (holiday / "notes.txt").write_text("mine")
    before = tree_digest(holiday)
    with pytest.raises(ProjectError, match="not a Retake project"):
        Project.open(holiday)
    with pytest.raises(ProjectError, match="not empty"):
        Project.create(holiday, Image.new("RGB", (8, 8)))
    assert tree_digest(holiday) == before
    with pytest.raises(ProjectError, match="does not exist"):
        Project.open(tmp_path / "nowhere")
    with pytest.raises(ProjectError, match="is a file"):
        Project.open(holiday / "notes.txt")
    with pytest.raises(ProjectError, match="is a file"):
        Project.create(holiday / "notes.txt", Image.new("RGB", (8, 8)))
    make_project(tmp_path / "p")
    before = tree_digest(tmp_path / "p")
    with pytest.raises(ProjectError, match="already holds a Retake project"):
        Project.create(tmp_path / "p", Image.new("RGB", (8, 8)))
    assert tree_digest(tmp_path / "p") == before


def test_create_accepts_an_empty_folder_or_the_remains_of_an_interrupted_create(tmp_path):
    (tmp_path / "empty").mkdir()
    Project.create(tmp_path / "empty", Image.new("RGB", (8, 8)))
    Project.open(tmp_path / "empty")
    remains = tmp_path / "remains"
    remains.mkdir()
    (remains / "source.png").write_bytes(b"half a png")
    (remains / ".source.png.0123456789ab.tmp").write_bytes(b"junk")
    (remains / ".DS_Store").write_bytes(b"finder")
    Project.create(remains, Image.new("RGB", (8, 8)))
    assert Project.open(remains).image().size == (8, 8)
    assert sorted(p.name for p in remains.iterdir()) == [".DS_Store", ".source.png.0123456789ab.tmp",
                                                         "project.json", "source.png"]


def test_leftovers_of_a_killed_save_are_ignored_by_open_and_removed_by_the_next_save(tmp_path):
    root = tmp_path / "p"
    make_project(root)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(root, dead.pid, journal=["inversions/k9.0123456789abcdef.safetensors", "results/e0042.png",
                                         "project.json", "notes.txt", "results/favourite.png"])  # forged: kept
    (root / ".project.json.0123456789ab.tmp").write_bytes(b"{half a manif")
    (root / "inversions" / ".k9.0123456789abcdef.safetensors.aaaaaaaaaaaa.tmp").write_bytes(b"x" * 100)
    (root / "results" / "e0042.png").write_bytes(b"an orphan from a killed save")
    (root / "results" / "e0099.png").write_bytes(b"no save journaled it: not Retake's to delete")
    (root / "results" / "favourite.png").write_bytes(b"a file the user put here")
    (root / "notes.txt").write_text("the user's")
    before = tree_digest(root)
    project = Project.open(root)
    assert tree_digest(root) == before
    add_edit(project, "a barn")
    assert project_files(root) == referenced(root) | {"results/favourite.png", "results/e0099.png", "notes.txt"}


# ---------------------------------------------------------------------------------------------------
# Migrations


def test_migrations_run_in_order_without_touching_the_input():
    def one_to_two(data):
        data["settings"]["params"]["upgraded"] = True
        return data

    def two_to_three(data):
        data["settings"]["params"]["order"] = list(data["settings"]["params"])
        return data

    original = {"schema_version": 1, "settings": {"params": {}}}
    upgraded = migrate_manifest(original, {1: one_to_two, 2: two_to_three}, target=3)
    assert upgraded == {"schema_version": 3, "settings": {"params": {"upgraded": True, "order": ["upgraded"]}}}
    assert original == {"schema_version": 1, "settings": {"params": {}}}
    current = {"schema_version": SCHEMA_VERSION, "settings": {"params": {}}}
    assert migrate_manifest(current) == current  # current version: nothing to do
    with pytest.raises(ProjectError, match="newer Retake"):
        migrate_manifest({"schema_version": 4}, {}, target=3)
    with pytest.raises(ProjectError):
        migrate_manifest({"schema_version": 2}, {1: one_to_two}, target=3)
    assert SCHEMA_VERSION == 6 and set(project_module.MIGRATIONS) == {1, 2, 3, 4, 5}


def _as_version_5(data):
    data.update(schema_version=5)
    del data["settings"]["area"]
    for inversion in data["inversions"]:
        del inversion["crop"]
    for edit in data["edits"]:
        del edit["crop"], edit["feather"]


def _as_version_4(data):
    _as_version_5(data)
    data.update(schema_version=4)
    del data["image"]["bytes"]
    for inversion in data["inversions"]:
        del inversion["file_bytes"]
    for edit in data["edits"]:
        for reference in (edit["result"], edit["mask"]):
            if reference is not None:
                del reference["bytes"]
    for item in data["inputs"]:
        del item["file"]["bytes"]


def _as_version_3(data):
    _as_version_4(data)
    data.update(schema_version=3)
    for inversion in data["inversions"]:
        del inversion["tuning_of"]
    for edit in data["edits"]:
        del edit["tuning_key"]


def _as_version_2(data):
    _as_version_3(data)
    data.update(schema_version=2)
    del data["settings"]["image_encoder"]
    for inversion in data["inversions"]:
        del inversion["parts"]


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
def test_an_older_project_opens_and_the_next_save_writes_the_current_version(tmp_path, version):
    root = tmp_path / "p"
    make_project(root)

    def as_older(data):
        {5: _as_version_5, 4: _as_version_4, 3: _as_version_3}.get(version, _as_version_2)(data)
        if version == 1:
            data.update(schema_version=1)
            del data["settings"]["max_side"], data["inputs"]

    _rewrite(root, as_older)
    before = tree_digest(root)
    project = Project.open(root)
    assert tree_digest(root) == before  # upgraded in memory only
    assert project.settings.max_side is None and project.input_names() == ()
    assert project.settings.area is None and project.inversions[0].crop is None
    assert project.edits[0].crop is None and project.edits[0].feather is None
    if version < 3:
        assert project.settings.image_encoder is None and project.inversions[0].parts == {}
    assert project.inversions[0].tuning_of is None and project.edits[0].tuning_key is None
    project.update_settings(model_spec="demo", model_identity=MODEL.identity, source_prompt="a house",
                            method="p2p", params={}, max_side=384)
    data = manifest(root)
    assert data["schema_version"] == SCHEMA_VERSION and data["settings"]["max_side"] == 384 and data["inputs"] == []
    assert data["settings"]["image_encoder"] is None and data["inversions"][0]["parts"] == {}
    assert data["inversions"][0]["tuning_of"] is None and data["edits"][0]["tuning_key"] is None
    assert data["settings"]["area"] is None and data["inversions"][0]["crop"] is None
    assert data["edits"][0]["crop"] is None and data["edits"][0]["feather"] is None
    # The sizes of files from before format 5 stay unknown (null): opening checks them by presence,
    # reading by checksum; files saved from now on record theirs.
    if version < 5:
        assert data["image"]["bytes"] is None and data["edits"][0]["result"]["bytes"] is None
        assert data["inversions"][0]["file_bytes"] is None
    reopened = Project.open(root)
    assert reopened.settings.max_side == 384 and reopened.image().size == (80, 60)
    new = add_edit(reopened, "after the upgrade")
    assert new.result.nbytes == (root / new.result.file).stat().st_size
    assert manifest(root)["edits"][-1]["result"]["bytes"] == new.result.nbytes


def test_the_image_encoder_and_the_parts_of_an_inversion_round_trip(tmp_path):
    root = tmp_path / "p"
    project = make_project(root)
    identity = "sha256:" + "e" * 64
    save_inversion(project, "k2", parts={"image_encoder": identity})
    settings = dict(model_spec="demo", model_identity=MODEL.identity, source_prompt="a house", method="p2p",
                    params={})
    project.update_settings(**settings, image_encoder="/models/clip")
    project.update_settings(**settings)  # None keeps the one named before
    again = Project.open(root)
    assert again.settings.image_encoder == "/models/clip" and again.find_inversion("k2").parts == {
        "image_encoder": identity}
    again.update_settings(**settings, image_encoder="")  # "" forgets it
    assert Project.open(root).settings.image_encoder is None and manifest(root)["settings"]["image_encoder"] is None
    with pytest.raises(ValueError, match="part"):
        save_inversion(project, "k3", parts={"../x": identity})


def test_the_area_and_the_crops_round_trip_and_a_crop_outside_the_photo_is_damage(tmp_path):
    root = tmp_path / "p"
    project = make_project(root)  # an 80x60 photo
    area = AreaSettings("region", 16, 3)
    project.update_settings(model_spec="demo", model_identity=MODEL.identity, source_prompt="a house", method="p2p",
                            params={}, area=area)
    project.update_settings(model_spec="demo", model_identity=MODEL.identity, source_prompt="a house", method="p2p",
                            params={})  # None keeps the one stored
    save_inversion(project, "cropped", crop=(10, 5, 74, 59))
    edit = project.add_edit(target_prompt="a castle", source_prompt="a house", model=MODEL, method="p2p", params={},
                            seed=None, inversion_key="cropped", result=Image.new("RGB", (80, 60)),
                            crop=(10, 5, 74, 59), feather=3)
    again = Project.open(root)
    assert again.settings.area == area and again.find_inversion("cropped").crop == (10, 5, 74, 59)
    assert again.edits[-1].crop == (10, 5, 74, 59) and again.edits[-1].feather == 3
    assert read_png_metadata(again.result_path(edit))["crop"] == [10, 5, 74, 59]
    for bad in ((10, 5, 81, 59), (10, 5, 10, 59), (-1, 0, 5, 5)):
        with pytest.raises(ValueError, match="crop"):
            save_inversion(project, "bad", crop=bad)
    _rewrite(root, lambda d: d["edits"][-1].update(crop=[10, 5, 90, 59]))
    with pytest.raises(ProjectError, match=r"edits\[1\]\.crop .* outside the 80x60 photo"):
        Project.open(root)
    _rewrite(root, lambda d: d["edits"][-1].update(crop=[10, 5, 4, 59]))
    with pytest.raises(ProjectError, match=r"crop must be \[left, top, right, bottom\]"):
        Project.open(root)


# ---------------------------------------------------------------------------------------------------
# Crash safety: a saving process is killed at every step of a save, and at random instants.

CRASHER = r"""
import os, signal, sys
import torch
from PIL import Image
from pipeline.project import ModelRecord, Project

root, point, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
real_replace, calls = os.replace, 0

def replace(src, dst):  # the commit point of every file write
    global calls
    calls += 1
    if calls == point and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
    if calls == point and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace
project = Project.open(root)
model = ModelRecord("demo", "sha256:" + "0" * 64)
project.save_inversion("k1", {"latents": torch.ones(64, 4, 64, 64)}, method="p2p", model_identity=model.identity,
                       source_prompt="a house", params={"steps": 5}, size=(64, 64), steps=5)
project.add_edit(target_prompt="a new edit", source_prompt="a house", model=model, method="p2p", params={},
                 seed=1, inversion_key="k1", result=Image.new("RGB", (64, 48), "blue"), mask=torch.ones(1, 1, 8, 8))
print(calls)
"""
# The save above replaces: 1 the new inversion file, 2 project.json, 3 the mask, 4 the result, 5 project.json.
REPLACES = 5


SAVER = """
import os, signal, sys, threading, torch
from pipeline.project import Project
project = Project.open(sys.argv[1])
threading.Timer(float(sys.argv[2]), lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
i = 0
while True:  # big inversions, so most instants fall inside a write
    i += 1
    project.save_inversion(f"k{i % 3 + 2}", {"latents": torch.randn(51, 4, 64, 96)}, method="p2p",
                           model_identity="sha256:" + "0" * 64, source_prompt=f"a house {i}",
                           params={"steps": 50}, size=(768, 512), steps=50)
"""
# Killed just before or just after the Nth replace. Between them these cover: nothing committed
# (temporary or new files only), the first commit done but its superseded file not yet removed,
# the second save half written, and everything committed but not cleaned up.
KILL_POINTS = [(1, "before"), (2, "before"), (2, "after"), (4, "before"), (5, "before"), (5, "after")]
RANDOM_KILLS = [0.15, 0.45]


def _file_bytes(root: Path, files: set[str]) -> dict[str, bytes]:
    return {f: (root / f).read_bytes() for f in files}


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """Copies of one project, each with a save killed at a different instant (run in parallel: each
    process spends most of its time importing torch)."""
    base = tmp_path_factory.mktemp("crashes")
    template = base / "template"
    make_project(template)
    runs = {f"{when}-{point}": [CRASHER, str(point), when] for point, when in KILL_POINTS}
    runs.update({f"random-{delay}": [SAVER, str(delay)] for delay in RANDOM_KILLS})
    runs["count"] = [CRASHER, "0", "never"]
    return _file_bytes(template, referenced(template)), run_on_copies(template, runs)


def run_on_copies(template: Path, runs: dict[str, list[str]]) -> dict[str, tuple[Path, int, bytes, str]]:
    """Run each script (`[code, arguments...]`) in its own process on its own copy of the project
    `template` (beside it, under the run's name), all at once; (folder, exit status, stdout, stderr) by name."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = {}
    for name, (script, *args) in runs.items():
        shutil.copytree(template, template.parent / name)
        processes[name] = subprocess.Popen([sys.executable, "-c", script, str(template.parent / name), *args],
                                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = {}
    for name, process in processes.items():
        out, err = process.communicate(timeout=120)
        results[name] = (template.parent / name, process.returncode, out, err.decode())
    return results


def _check_recovery(root: Path, baseline: dict[str, bytes], expect: str) -> None:
    project = Project.open(root)  # whatever instant it died at, the project opens whole
    for record in project.inversions:
        project.load_inversion(record.key)
    if expect == "old":  # nothing committed: every file of the old project is byte-identical
        assert _file_bytes(root, set(baseline)) == baseline
    if expect in ("old", "any"):
        assert torch.equal(project.load_inversion("k1")["latents"], TENSORS["latents"])
    else:
        assert torch.equal(project.load_inversion("k1")["latents"], torch.ones(64, 4, 64, 64))
    assert [e.target_prompt for e in project.edits] == ["a castle"] + (["a new edit"] if expect == "edit" else [])
    extra = project_files(root) - referenced(root)
    assert all(Path(f).name.endswith(".tmp") or f.startswith(("inversions/", "results/", "masks/")) or f == ".lock"
               for f in extra), extra
    # The next save succeeds (taking over the dead process's lock) and leaves no debris.
    add_edit(project, "after the crash")
    assert project_files(root) == referenced(root)
    assert Project.open(root).edits[-1].target_prompt == "after the crash"


def test_the_crash_script_does_what_the_kill_points_assume(crashed):
    _, results = crashed
    root, code, out, err = results["count"]
    assert code == 0 and int(out) == REPLACES, err
    assert [e.target_prompt for e in Project.open(root).edits] == ["a castle", "a new edit"]


@pytest.mark.parametrize("point, when", KILL_POINTS)
def test_killing_a_save_at_each_step_leaves_the_old_or_the_new_project(crashed, point, when):
    baseline, results = crashed
    root, code, _, err = results[f"{when}-{point}"]
    assert code == -signal.SIGKILL, err
    committed = point - (when == "before")  # project.json is replaced by the 2nd and the 5th
    _check_recovery(root, baseline, "old" if committed < 2 else "inversion" if committed < 5 else "edit")


@pytest.mark.parametrize("delay", RANDOM_KILLS)
def test_killing_a_busy_saver_at_a_random_instant(crashed, delay):
    baseline, results = crashed
    root, code, _, err = results[f"random-{delay}"]
    assert code == -signal.SIGKILL, err
    _check_recovery(root, baseline, "any")


def test_a_failed_write_changes_nothing_and_releases_the_lock(tmp_path, monkeypatch):
    root = tmp_path / "p"
    project = make_project(root)
    before = tree_digest(root)
    real = folder_module.write_atomically

    def disk_full(path, data):
        if Path(path).name.startswith("e0002"):
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(folder_module, "write_atomically", disk_full)
    with pytest.raises(ProjectError, match="No space left on device"):
        add_edit(project, "a barn", mask=torch.ones(1, 1, 4, 4))
    monkeypatch.undo()
    assert not (root / ".lock").exists()
    assert Project.open(root).edits == project.edits
    add_edit(project, "a barn")
    assert project_files(root) == referenced(root)  # the mask written before the failure was removed
    assert tree_digest(root) != before


# ---------------------------------------------------------------------------------------------------
# Locking and concurrent writers


def _write_lock(root: Path, pid: int, host: str | None = None, journal: tuple[str, ...] = ()) -> None:
    """A lock as another process leaves it: a header line, then the files it journaled."""
    lock = {"pid": pid, "host": host or socket.gethostname(), "token": "someone-else", "since": "now"}
    (root / ".lock").write_text("\n".join(json.dumps(line) for line in [lock, *journal]) + "\n")


def test_a_live_lock_holder_makes_a_save_wait_then_fail_clearly(tmp_path):
    root = tmp_path / "p"
    project = Project.open(make_project(root).path, lock_timeout=0.3)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(root, holder.pid)
        before = tree_digest(root)
        started = time.monotonic()
        with pytest.raises(ProjectError, match=f"being saved by another Retake process \\(pid {holder.pid}\\)"):
            add_edit(project, "a barn")
        assert time.monotonic() - started >= 0.3
        assert tree_digest(root) == before
    finally:
        holder.kill()
        holder.wait()
    add_edit(project, "a barn")  # the holder died: its lock is taken over
    assert not (root / ".lock").exists() and len(Project.open(root).edits) == 2


def test_the_claim_on_making_a_project_is_waited_for_kept_fresh_and_released(tmp_path, monkeypatch):
    from pipeline.project import abandon_claim, making_project
    from pipeline.project import lock as lock_module

    root = tmp_path / "new" / "p.retake"
    monkeypatch.setattr(lock_module, "HEARTBEAT_S", 0.05)
    with making_project(root, waiting=lambda holder: pytest.fail("nobody holds it")):
        claim = root / ".creating"
        first = claim.stat().st_mtime_ns
        time.sleep(0.3)
        assert claim.stat().st_mtime_ns > first  # the heartbeat: a long inversion never looks stale
        waited: list[str] = []

        def second():
            with making_project(root, waiting=waited.append):
                (root / "second").write_text("made under the claim")

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        assert waited and waited[0] == f"another Retake process (pid {os.getpid()})" and not (root / "second").exists()
    thread.join(10)
    assert (root / "second").exists() and not claim.exists()  # the folder is kept: it is not empty
    (root / "second").unlink()
    with making_project(root, waiting=lambda holder: None):
        pass
    assert root.is_dir()  # not made by that claim: left as it was
    root.rmdir()
    with making_project(root, waiting=lambda holder: None):
        assert claim.exists()
    assert not root.exists()  # a first edit that wrote nothing leaves nothing
    other = tmp_path / "other"
    with making_project(other, waiting=lambda holder: None):
        abandon_claim(other)  # what a process leaving at once does
        assert not other.exists()
    other.mkdir()
    (other / ".creating").write_text(json.dumps({"pid": 1, "host": socket.gethostname()}) + "\n")
    abandon_claim(other)  # not ours: left alone
    assert (other / ".creating").exists()


def test_a_lock_released_while_waiting_is_taken(tmp_path):
    root = tmp_path / "p"
    project = Project.open(make_project(root).path, lock_timeout=10)
    _write_lock(root, os.getpid())  # looks alive: it is us
    threading.Timer(0.3, lambda: (root / ".lock").unlink()).start()
    add_edit(project, "a barn")
    assert len(Project.open(root).edits) == 2


def test_stale_locks_are_taken_over(tmp_path):
    root = tmp_path / "p"
    project = Project.open(make_project(root).path, lock_timeout=0.2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(root, dead.pid)
    add_edit(project, "dead owner")
    _write_lock(root, 1, host="another-machine")  # can't check the pid: only its age says it is stale
    with pytest.raises(ProjectError, match="on another-machine"):
        add_edit(project, "fresh foreign lock")
    old = time.time() - project_module.LOCK_STALE_AFTER_S - 5
    os.utime(root / ".lock", (old, old))
    add_edit(project, "old foreign lock")
    (root / ".lock").write_bytes(b"\x00\x00")  # a process killed between creating and writing its lock
    os.utime(root / ".lock", (time.time() - 10,) * 2)
    add_edit(project, "garbage lock")
    assert [e.target_prompt for e in Project.open(root).edits][1:] == ["dead owner", "old foreign lock", "garbage lock"]
    assert not (root / ".lock").exists()


def test_two_writers_on_one_project_keep_both_histories(tmp_path):
    root = tmp_path / "p"
    make_project(root)
    first, second = Project.open(root), Project.open(root)  # two windows on the same project
    add_edit(first, "from the first")
    add_edit(second, "from the second")  # second's view is stale: the save merges, it does not overwrite
    save_inversion(first, "k2", {"x": torch.zeros(2)})
    second.update_settings(model_spec="demo", model_identity=MODEL.identity, source_prompt="a house",
                           method="p2p", params={})
    final = Project.open(root)
    assert [e.target_prompt for e in final.edits] == ["a castle", "from the first", "from the second"]
    assert [e.id for e in final.edits] == ["e0001", "e0002", "e0003"]
    assert {inv.key for inv in final.inversions} == {"k1", "k2"} and final.settings.method == "p2p"


def test_concurrent_threads_lose_nothing(tmp_path):
    root = tmp_path / "p"
    make_project(root)
    writers = [Project.open(root) for _ in range(3)]
    errors = []

    def work(project, n):
        try:
            for i in range(4):
                add_edit(project, f"writer {n} edit {i}")
        except Exception as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w, n)) for n, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    edits = Project.open(root).edits
    assert len(edits) == 13 and len({e.id for e in edits}) == 13
    for n in range(3):  # each writer's edits in its own order
        mine = [e.target_prompt for e in edits if e.target_prompt.startswith(f"writer {n}")]
        assert mine == [f"writer {n} edit {i}" for i in range(4)]
    assert project_files(root) == referenced(root)


def test_opening_while_another_writer_saves_sees_a_whole_project(tmp_path):
    root = tmp_path / "p"
    make_project(root)
    writer, errors = Project.open(root), []

    def write():
        try:
            for i in range(8):
                save_inversion(writer, "k1", {"latents": torch.full((4, 4), float(i))})
                add_edit(writer, f"edit {i}", mask=torch.full((1, 1, 4, 4), i / 8))
        except Exception as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    opened = 0
    while thread.is_alive():
        Project.open(root)  # the audit and the file checks must not trip over the writer's files
        opened += 1
    thread.join()
    assert errors == [] and opened > 0 and len(Project.open(root).edits) == 9
