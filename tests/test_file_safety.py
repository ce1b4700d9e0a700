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


# --- integrity of saved models (issue 29, class 3) ------------------------------------------------------
def _saved(tmp_path):
    import compress
    from compress.models import ResNet, ResNetConfig

    model = ResNet(ResNetConfig.uniform((8,), (1,), (1,), input_mean=(0.5, 0.5, 0.5), input_std=(0.25, 0.25, 0.25)))
    return compress.save(model, tmp_path / "m.pt", metadata={"accuracy": 0.91})


def _rewrite(path, change):
    import torch

    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


def test_a_saved_model_loads_while_it_is_as_written(tmp_path):
    import compress

    model, meta = compress.load(_saved(tmp_path), with_metadata=True)
    assert meta == {"accuracy": 0.91}


def _flip_exponent_bit(payload):
    w = payload["state_dict"]["conv1.weight"]
    w.view(-1).view(__import__("torch").int32)[0] ^= 1 << 30  # the top exponent bit of one float


@pytest.mark.parametrize("change", [
    _flip_exponent_bit,
    lambda p: p["config"].update(input_mean=[0.4, 0.5, 0.5]),
    lambda p: p["metadata"].update(accuracy=0.99),
], ids=["flipped-bit", "edited-input-mean", "edited-metadata"])
def test_a_changed_saved_model_is_refused_in_one_line(tmp_path, change):
    import compress

    path = _saved(tmp_path)
    _rewrite(path, change)
    with pytest.raises(ValueError, match="was changed after compress.save wrote it") as e:
        compress.load(path)
    assert "\n" not in str(e.value)


def test_a_file_saved_before_checksums_still_loads(tmp_path):
    import compress

    path = _saved(tmp_path)
    _rewrite(path, lambda p: p.pop("checksum"))
    compress.load(path)


# --- a run folder's rows are what was measured (issue 29, class 3) ----------------------------------------
def _finished_run(tmp_path):
    from compress.cli import main
    from recipe_text import tiny_recipe

    (tmp_path / "r").mkdir()
    recipe = tmp_path / "r" / "tiny.yaml"
    recipe.write_text(tiny_recipe("tiny", extra="fast: {epochs: 1, batch_size: 16, amp: none, channels_last: false}\n"))
    out = tmp_path / "run"
    cmd = [str(recipe), "--out", str(out), "--data", "synthetic:48:16", "--device", "cpu", "--max-steps-per-epoch", "1",
           "--no-progress"]
    assert main(cmd) == 0
    return out, cmd


@pytest.mark.parametrize("edit", [{"measured_accuracy": 93.0}, {"measured_accuracy": "93%"},
                                  {"measured_accuracy": 120.0}, {"epochs_run": 50}])
def test_an_edited_row_is_refused_when_the_folder_is_resumed(tmp_path, capsys, edit):
    import json

    from compress.cli import main

    out, cmd = _finished_run(tmp_path)
    row = out / "tiny" / "row.json"
    row.write_text(json.dumps({**json.loads(row.read_text()), **edit}))
    capsys.readouterr()
    assert main(cmd) != 0
    text = capsys.readouterr().out
    assert "row.json" in text and "Traceback" not in text
    assert not any("93.00%" in line for line in text.splitlines())


def test_a_results_file_with_an_accuracy_out_of_range_is_refused(tmp_path):
    import json

    from compress.report import load_results

    (tmp_path / "results.json").write_text(json.dumps({"rows": [{"recipe": "a", "measured_accuracy": 930.0}]}))
    with pytest.raises(ValueError, match=r"rows\[0\] \(a\): measured_accuracy is 930.0, outside 0..100"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"rows": [{"recipe": "a", "measured_accuracy": "high"}]}))
    with pytest.raises(ValueError, match="not a number"):
        load_results(tmp_path)


# --- bounded memory and one-line errors (issue 29, classes 4 and 5) -----------------------------------------
def test_an_alias_bomb_in_a_recipe_is_refused_quickly_and_in_one_line(tmp_path):
    import time
    import tracemalloc

    levels = ['  - &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    text = "name: bomb\nsource:\n" + "\n".join(levels) + "\nmodel: []\n"  # 9**9 'lol's when expanded
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(RecipeError) as e:
        load(path)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 5 and peak < 300e6, (seconds, peak)
    assert "\n" not in str(e.value) and len(str(e.value)) < 1000


def test_a_recipe_nested_a_hundred_thousand_levels_is_refused_in_one_line(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: deep\nmodel: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(RecipeError, match="nested too deeply|not valid YAML"):
        load(path)


def test_a_config_asking_for_a_huge_network_is_refused_before_anything_is_built():
    from compress.models import BlockConfig, ResNetConfig, StageConfig

    with pytest.raises(ValueError, match="blocks is more than"):
        ResNetConfig(stages=(StageConfig(16, 1, tuple(BlockConfig(16) for _ in range(200_000))),), stem_width=16)
    with pytest.raises(ValueError, match="conv weights is more than"):
        ResNetConfig.uniform((100_000,), (1,), (1,))


def test_save_of_a_model_with_nan_outputs_is_one_line(tmp_path):
    import torch

    import compress
    from compress.models import ResNet, ResNetConfig

    model = ResNet(ResNetConfig.uniform((8,), (1,), (1,)))
    with torch.no_grad():
        model.linear.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN or infinite") as e:
        compress.save(model, tmp_path / "m.pt")
    assert "\n" not in str(e.value) and not (tmp_path / "m.pt").exists()


def test_evaluate_on_no_images_is_one_line():
    import torch

    import compress
    from compress.models import ResNet, ResNetConfig

    model = ResNet(ResNetConfig.uniform((8,), (1,), (1,)))
    empty = (torch.zeros(0, 3, 32, 32, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="no images to evaluate"):
        compress.evaluate(model, empty, progress=False)


def test_huge_synthetic_data_and_latency_batches_are_refused_before_allocating():
    from compress import bench
    from compress.data import DatasetError
    from compress.deploy import measure_latency
    from compress.models import ResNet, ResNetConfig

    with pytest.raises(DatasetError, match="image counts from 1 to"):
        bench.resolve_data("synthetic:20000000")
    with pytest.raises(ValueError, match="more than 8,192 images at once"):
        measure_latency(ResNet(ResNetConfig.uniform((8,), (1,), (1,))), batch_sizes=(100_000_000,))


def test_weights_are_hashed_in_pieces_and_a_refused_file_is_not_described(tmp_path):
    from compress.recipes import _sha256
    import hashlib

    big = tmp_path / "w.bin"
    big.write_bytes(b"x" * (3 << 20) + b"tail")
    assert _sha256(big) == hashlib.sha256(big.read_bytes()).hexdigest()


# --- recorded is what was applied (issue 29, class 6) -----------------------------------------------------
def test_a_batch_size_flag_larger_than_the_training_set_is_refused_not_recorded(tmp_path, capsys):
    from compress.cli import main
    from recipe_text import tiny_recipe

    (tmp_path / "r").mkdir()
    recipe = tmp_path / "r" / "tiny.yaml"
    recipe.write_text(tiny_recipe("tiny"))
    out = tmp_path / "run"
    assert main([str(recipe), "--out", str(out), "--data", "synthetic:48:16", "--device", "cpu", "--no-progress",
                 "--batch-size", "10000000"]) == 2
    text = capsys.readouterr().out
    assert "--batch-size 10,000,000 is larger than the 48 training images" in text and not out.exists()


def test_a_resume_with_changed_claims_keeps_the_file_it_reports(tmp_path, capsys):
    from compress.cli import main

    out, cmd = _finished_run(tmp_path)
    recipe = tmp_path / "r" / "tiny.yaml"
    (out / "tiny" / "row.json").unlink()  # as if killed before the row: the same command resumes the checkpoint
    recipe.write_text(recipe.read_text().replace("accuracy: 50.0", "accuracy: 60.0"))
    assert main(cmd) == 0
    assert (out / "tiny" / "recipe.yaml").read_text() == recipe.read_text()
    assert "changed since the run started" in capsys.readouterr().out


def test_an_edited_finished_checkpoint_is_refused_not_reported(tmp_path):
    import torch

    from compress.data import synthetic
    from compress.models import ResNet, ResNetConfig
    from compress.training import TrainConfig, train

    model, data = ResNet(ResNetConfig.uniform((8,), (1,), (1,))), synthetic(64, 16)
    cfg = TrainConfig(epochs=1, batch_size=32, amp="none", channels_last=False)
    train(model, data, cfg, out_dir=tmp_path, device="cpu", progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state["history"][-1]["test_acc"] = 0.93
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="the checkpoint was edited"):
        train(model, data, cfg, out_dir=tmp_path, resume=True, device="cpu", progress=False)


def test_a_recipe_folder_that_is_a_link_out_of_the_run_is_refused(tmp_path, capsys):
    from compress.cli import main

    out, cmd = _finished_run(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (out / "tiny").rename(elsewhere)
    (out / "tiny").symlink_to(elsewhere)
    assert main(cmd) != 0
    assert "is a symbolic link" in capsys.readouterr().out
