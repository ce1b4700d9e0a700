"""Nothing is written outside the folder it belongs to, no user file is taken for a leftover, and files get
the user's umask (issue 29, classes 1 and 2; issue 27, the umask)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from compress import files
from compress.recipes import RecipeError, load


def test_a_symlinked_lock_is_refused_and_its_target_left_alone(tmp_path):
    important = tmp_path / "important"
    important.write_text("precious\n")
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / files.LOCK).symlink_to(important)
    with pytest.raises(OSError, match="is a symbolic link"):
        with files.lock_folder(folder):
            pass
    assert important.read_text() == "precious\n"


def test_a_lock_that_is_not_a_plain_file_is_refused(tmp_path):
    folder = tmp_path / "f"
    (folder / files.LOCK).mkdir(parents=True)
    with pytest.raises(OSError, match="not a plain file|Is a directory"):
        with files.lock_folder(folder):
            pass


def test_the_lock_still_holds_the_pid(tmp_path):
    with files.lock_folder(tmp_path / "f") as folder:
        assert (folder / files.LOCK).read_text().strip() == str(os.getpid())


@pytest.mark.parametrize("name", ["draft.md.tmp", "paper.md.v2.tmp", "row.json.tmp", ".notes.md.tmp", "x.md.tmp"])
def test_a_users_tmp_file_is_not_a_leftover(tmp_path, name):
    (tmp_path / name).write_text("mine")
    assert not files.is_leftover(name)
    assert files.remove_leftovers(tmp_path) == []
    assert (tmp_path / name).read_text() == "mine"


def test_a_killed_writers_temp_file_is_a_leftover(tmp_path):
    tmp = files.reserve_temp(tmp_path / "row.json")
    assert files.is_leftover(tmp.name)
    assert files.remove_leftovers(tmp_path) == [tmp] and not tmp.exists()


def test_a_folder_holding_a_users_tmp_file_or_a_link_is_not_an_empty_run_folder(tmp_path):
    from compress.bench import RunFolderError, _check_manifest

    for name, make in (("draft.md.tmp", lambda p: p.write_text("x")), (files.LOCK, lambda p: p.symlink_to(tmp_path))):
        out = tmp_path / f"out-{name.strip('.')}"
        out.mkdir()
        make(out / name)
        with pytest.raises(RunFolderError, match="is not empty"):
            _check_manifest(out, {})


def test_temporary_files_never_follow_a_planted_link(tmp_path):
    target = tmp_path / "victim"
    target.write_text("precious")
    for i in range(20):  # whatever name a temp file gets, it is created exclusively next to the target
        tmp = files.reserve_temp(tmp_path / "model.onnx")
        assert not tmp.is_symlink() and tmp.stat().st_size == 0 and tmp.parent == tmp_path
        tmp.unlink()
    (tmp_path / ".model.tmp.onnx").symlink_to(target)  # the fixed name the exporter used to write through
    files.atomic_write(tmp_path / "model.onnx", b"new")
    assert target.read_text() == "precious" and (tmp_path / "model.onnx").read_bytes() == b"new"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = files.write_json(tmp_path / f"r{umask:o}.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("stem", ["..", ".hidden"])
def test_a_recipe_whose_name_is_not_a_plain_name_is_refused(tmp_path, stem):
    from recipe_text import tiny_recipe

    path = tmp_path / f"{stem}.yaml"
    path.write_text(tiny_recipe(stem).replace(f"name: {stem}", f"name: '{stem}'"))
    with pytest.raises(RecipeError, match="is not a plain name"):
        load(path)


def test_onnx_export_writes_through_no_planted_link(tmp_path):
    pytest.importorskip("onnxruntime")
    import compress
    from compress.models import ResNet, ResNetConfig

    target = tmp_path / "victim"
    target.write_text("precious")
    (tmp_path / ".m.tmp.onnx").symlink_to(target)  # the fixed temporary name export() wrote through before
    model = ResNet(ResNetConfig.uniform((8,), (1,), (1,)))
    result = compress.export(model, tmp_path / "m.onnx")
    assert target.read_text() == "precious"
    assert result.path.is_file() and not result.path.is_symlink()
    assert [p.name for p in tmp_path.iterdir() if files.is_leftover(p.name)] == []
