"""pipeline.preflight: the request checks made before any model work, each one clear sentence."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.errors import ImageError, ParamError, ProjectError
from pipeline.preflight import check_max_side, check_output_path, check_project_folder


@pytest.mark.parametrize("n", [64, 128, 512, 768, 4096])
def test_max_side_accepts_multiples_of_64_in_range(n):
    assert check_max_side(n) == n


@pytest.mark.parametrize("n", [0, -64, 100, 63, 4160, 10**40, True, 512.0])
def test_max_side_refuses_others(n):
    with pytest.raises(ParamError) as error:
        check_max_side(n)
    message = str(error.value)
    assert "multiple of 64 between 64 and 4096" in message and "\n" not in message and len(message) < 200


@pytest.mark.parametrize("name", ["out.png", "out.JPG", "out.jpeg", "out.webp"])
def test_output_path_accepts_image_files_in_writable_folders(tmp_path, name):
    assert check_output_path(tmp_path / name) == tmp_path / name


def test_output_path_refusals(tmp_path):
    cases = {
        tmp_path / "result.txt": "must end in .png",
        tmp_path / "result": "must end in .png",
        tmp_path / "missing" / "out.png": "does not exist",
    }
    (tmp_path / "folder.png").mkdir()
    cases[tmp_path / "folder.png"] = "is a folder"
    for path, expected in cases.items():
        with pytest.raises(ImageError, match=expected):
            check_output_path(path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions, not root")
def test_output_path_in_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ImageError, match="may not write"):
            check_output_path(folder / "out.png")
    finally:
        folder.chmod(0o700)


def test_long_output_paths_are_shortened(tmp_path):
    with pytest.raises(ImageError) as error:
        check_output_path(tmp_path / ("x" * 300 + ".txt"))
    assert "…" in str(error.value) and len(str(error.value)) < 200


def test_project_folder_absent_empty_or_a_project_is_fine(tmp_path):
    check_project_folder(tmp_path / "new.retake")
    (tmp_path / "empty").mkdir()
    check_project_folder(tmp_path / "empty")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "project.json").write_text("{}")
    check_project_folder(tmp_path / "project")


def test_project_folder_with_other_files_or_a_file_is_refused(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ProjectError, match="holds other files and no project.json"):
        check_project_folder(tmp_path / "photos")
    (tmp_path / "file.retake").write_text("x")
    with pytest.raises(ProjectError, match="it is a file"):
        check_project_folder(tmp_path / "file.retake")
    assert [p.name for p in Path(tmp_path / "photos").iterdir()] == ["holiday.jpg"]
