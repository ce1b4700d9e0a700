"""Fixes from the second pass of bad inputs over the API and the CLI (issue 13, ``tests/bad_inputs.py``).

Each test is one input that used to end in a traceback or a silent wrong result: now it is one line
naming the problem and the accepted values (exit status 2 for a usage mistake, 1 for a runtime
failure), found before anything is written. Nothing here trains a model.
"""

from __future__ import annotations

import errno
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import compress
from compress import bench, deploy, files, recipes
from compress.cli import main
from compress.data import DatasetError
from compress.training import TrainConfig

from recipe_text import tiny_recipe


def _recipe(folder: Path, name: str = "tiny", params: str = "1", accuracy: str = "50.0") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(tiny_recipe(name, params=params, accuracy=accuracy))
    return path


def _one_error(text: str) -> str:
    """The single error line of a command's output (and no traceback)."""
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if ln.startswith("error:") or ": error:" in ln]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = compress.redistribute_blocks(compress.scale_width(compress.remove_stage(compress.resnet18(), 3), 0.0625), [1, 1, 1])
    return m.eval()


# --- compress-bench flags ------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value, says", [
    ("--time-budget", "inf", "positive number of minutes"),  # was: a traceback (NaN-refusing manifest write), folder made
    ("--time-budget", "nan", "positive number of minutes"),
    ("--lr", "inf", "positive finite"),            # was: accepted, then refused as the recipe's lr
    ("--seed", "4294967296", "0..4294967295"),      # was: an overflow mid-training (seed * 100003 + epoch)
    ("--seed", "99999999999999999999999", "0..4294967295"),
])
def test_non_finite_or_out_of_range_flags_are_usage_errors(tmp_path, capsys, flag, value, says):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main([str(_recipe(tmp_path)), "--data", "synthetic:16:8", "--device", "cpu", "--out", str(out), flag, value])
    assert e.value.code == 2
    line = _one_error(capsys.readouterr().err)
    assert flag in line and says in line
    assert not out.exists()


def test_time_budget_is_checked_before_the_folder_is_made(tmp_path):
    with pytest.raises(ValueError, match="positive finite"):
        bench.run([recipes.load(_recipe(tmp_path))], tmp_path / "run", bench.resolve_data("synthetic:16:8"),
                  time_budget=math.inf, device="cpu")
    assert not (tmp_path / "run").exists()


def test_a_path_that_starts_with_synthetic_is_a_path(tmp_path, monkeypatch):
    # was: `--data synthetic10` or `--data synthetic_cifar.npz` silently trained on generated data
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match="no dataset at synthetic10"):
        bench.resolve_data("synthetic10")
    rng = np.random.default_rng(0)
    np.savez("synthetic_cifar.npz", train_x=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), train_y=np.arange(8),
             test_x=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), test_y=np.arange(4))
    data = bench.resolve_data("synthetic_cifar.npz")
    assert len(data.train_y) == 8 and data.source.endswith("synthetic_cifar.npz")
    assert len(bench.resolve_data("synthetic:8:4").train_y) == 8


def test_an_unwritable_json_target_is_found_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = tmp_path / "run"
    code = main([str(_recipe(tmp_path)), "--data", "synthetic:16:8", "--device", "cpu", "--out", str(out),
                 "--json", str(blocker / "rows.json")])
    assert code == 2 and "is a file, not a folder" in _one_error(capsys.readouterr().out)
    assert not out.exists()


def test_error_lines_print_text_as_it_is(tmp_path, capsys):
    # rich turned ":x:" (as in /etc/passwd's "root:x:0") into an emoji
    assert main(["report", str(tmp_path / "a:x:b")]) == 2
    assert f"{tmp_path}/a:x:b" in _one_error(capsys.readouterr().out)


# --- export and latency sub-commands -------------------------------------------------------------

def test_export_out_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    target = tmp_path / "onnx"
    target.write_text("not a folder")
    assert main(["export", str(_recipe(tmp_path)), "--out", str(target)]) == 2  # was: FileExistsError traceback
    assert "is a file" in _one_error(capsys.readouterr().out)


def test_export_onto_a_folder_is_one_line_and_leaves_nothing(tmp_path, capsys):
    (tmp_path / "onnx" / "tiny.onnx").mkdir(parents=True)
    assert main(["export", str(_recipe(tmp_path)), "--out", str(tmp_path / "onnx")]) == 1  # was: a traceback
    assert "it is a folder" in _one_error(capsys.readouterr().out)
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["tiny.onnx"]


def test_latency_flags_are_checked_before_measuring(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["latency", "--repeats", "0"])  # was: found after building every model
    assert e.value.code == 2 and "--repeats" in _one_error(capsys.readouterr().err)
    assert main(["latency", str(_recipe(tmp_path)), "--json", str(tmp_path)]) == 2  # was: a traceback after measuring
    assert "is a folder" in _one_error(capsys.readouterr().out)


def test_latency_of_a_run_with_a_damaged_row_is_one_line(tmp_path, capsys):
    (tmp_path / "run" / "tiny").mkdir(parents=True)
    (tmp_path / "run" / "tiny" / bench.RESULT).write_text("[1, 2]")
    assert main(["latency", "--run", str(tmp_path / "run"), "--repeats", "1", "--warmup", "1"]) == 2
    assert "row.json" in _one_error(capsys.readouterr().out)


# --- reports and run folders ---------------------------------------------------------------------

@pytest.mark.parametrize("content, says", [
    ('{"rows": [', "cannot be read"),                                  # was: the JSON error alone, no file named
    ('{"rows": [{"recipe": "x", "measured_accuracy": NaN}]}', "NaN"),   # was: rendered as "nan%"
    ('{"rows": ["x", 3]}', "rows[0] is a str"),                         # was: AttributeError traceback
])
def test_report_of_a_damaged_results_file(tmp_path, capsys, content, says):
    (tmp_path / "results.json").write_text(content)
    assert main(["report", str(tmp_path)]) == 2
    line = _one_error(capsys.readouterr().out)
    assert says in line and "results.json" in line
    assert not (tmp_path / "report.md").exists()


def test_report_of_another_file_is_refused(tmp_path, capsys):
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    assert main(["report", str(other)]) == 2  # was: "no results in <its folder>"
    assert "is a file, not a run folder" in _one_error(capsys.readouterr().out)


def _folder(tmp_path: Path, **manifest_changes) -> tuple[list, Path, object]:
    recipe = recipes.load(_recipe(tmp_path / "r"))
    data = bench.resolve_data("synthetic:16:8")
    out = tmp_path / "run"
    out.mkdir()
    manifest = {**bench._manifest([recipe], "fast", 1, 1, bench.describe_data(data)), **manifest_changes}
    files.write_json(out / bench.MANIFEST, manifest)
    return [recipe], out, data


def test_a_finished_row_that_is_not_an_object_is_refused(tmp_path):
    rs, out, data = _folder(tmp_path)
    files.write_json(out / "tiny" / bench.RESULT, [1, 2])  # was: AttributeError in the report after the run
    with pytest.raises(bench.RunFolderError, match="row.json .* not an object"):
        bench.run(rs, out, data, epochs=1, max_steps_per_epoch=1, device="cpu", progress=False)


def test_a_manifest_with_mistyped_fields_is_refused(tmp_path):
    rs, out, data = _folder(tmp_path, data="x")
    (out / "tiny").mkdir()
    files.write_json(out / "tiny" / bench.RESULT, {"recipe": "tiny"})
    with pytest.raises(bench.RunFolderError, match="not a compress-bench manifest"):  # was: AttributeError
        bench.run(rs, out, data, epochs=1, max_steps_per_epoch=1, device="cpu", progress=False)


def test_a_malicious_checkpoint_is_refused_in_one_line(tmp_path):
    rs, out, data = _folder(tmp_path)
    (out / "tiny").mkdir()
    with open(out / "tiny" / "checkpoint.pt", "wb") as f:
        pickle.dump(_Payload(), f)
    with pytest.raises(bench.TrainingError, match="other than plain data") as e:  # was: torch's advice to load it unsafely
        bench.run(rs, out, data, epochs=1, max_steps_per_epoch=1, device="cpu", progress=False)
    assert "weights_only" not in str(e.value) and "\n" not in str(e.value)
    assert not (out / "owned.txt").exists() and not Path("owned.txt").exists()


def test_a_damaged_time_budget_plan_is_refused(tmp_path):
    recipe = recipes.load(_recipe(tmp_path / "r"))
    (tmp_path / "tiny").mkdir()
    files.write_json(tmp_path / "tiny" / bench.PLAN, {"minutes": 1.0})  # was: KeyError traceback
    config = bench.train_config(recipe, "fast", 1.0)
    with pytest.raises(bench.RunFolderError, match="lacks epochs"):
        bench._plan(recipe, tmp_path / "tiny", bench.resolve_data("synthetic:16:8"), config, 1.0, "cpu", print)


def test_atomic_open_names_the_target_when_no_temporary_can_be_made(tmp_path, monkeypatch):
    target = tmp_path / "rows.json"

    def refuse(dir, prefix, suffix):  # noqa: A002 - what a read-only folder does to mkstemp
        raise OSError(errno.EROFS, "Read-only file system", os.path.join(dir, f"{prefix}abc123{suffix}"))

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    with pytest.raises(OSError) as e:
        files.write_json(target, {"a": 1})
    assert str(e.value.filename) == str(target) and "cannot write" in e.value.strerror  # was: the temporary's name


# --- recipes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("params, accuracy, says", [
    ("1", ".nan", "accuracy must be a percentage"),  # was: a ValueError traceback after training (NaN in row.json)
    ("1", "150", "accuracy must be a percentage"),
    ("0", "50.0", "params must be a positive integer"),
])
def test_claims_are_range_checked_when_the_recipe_loads(tmp_path, params, accuracy, says):
    with pytest.raises(recipes.RecipeError, match=says):
        recipes.load(_recipe(tmp_path, params=params, accuracy=accuracy))


@pytest.mark.parametrize("field", ["seed", "val_split.seed"])
@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seeds_are_32_bit(field, seed):
    section = {"seed": seed} if field == "seed" else {"val_split": {"size": 4, "seed": seed}}
    with pytest.raises(ValueError, match=r"seed must be an integer in 0\.\.4294967295"):
        TrainConfig.from_dict(section)
    with pytest.raises(ValueError, match="seed"):
        TrainConfig().with_overrides(seed=seed)
    assert TrainConfig.from_dict({"seed": 2**32 - 1}).seed == 2**32 - 1


def test_a_mapping_as_a_yaml_key_is_a_recipe_error(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("{{name: tiny}}\n")  # was: TypeError: unhashable type: 'dict'
    with pytest.raises(recipes.RecipeError, match="a key must be a name or a number"):
        recipes.load(path)


def test_schema_errors_quote_a_short_value(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("x" * 5000 + "\n")
    with pytest.raises(recipes.RecipeError) as e:
        recipes.load(path)
    assert len(str(e.value)) < 300


# --- compress.prune, count_flops -----------------------------------------------------------------

def test_prune_argument_types(tiny):
    with pytest.raises(TypeError, match="pruning_ratio_dict maps modules"):  # was: AttributeError
        compress.prune(tiny, pruning_ratio_dict="layer1")
    with pytest.raises(TypeError, match="ignore takes layer names or glob patterns"):  # was: "object of type 'int' has no len()"
        compress.prune(tiny, 0.5, ignore=[3])


@pytest.mark.parametrize("data, says", [
    ((torch.zeros(2, 3, 32, 32), torch.tensor([0, 99])), r"labels are class indices in 0\.\.9"),  # was: IndexError
    (torch.zeros(2, 3, 32, 32), r"an \(inputs, labels\) pair"),  # was: "too many values to unpack"
    ([torch.zeros(2, 3, 32, 32)], "batch 0 is a Tensor"),
])
def test_taylor_data_is_checked(tiny, data, says):
    with pytest.raises(ValueError, match=says):
        compress.prune(tiny, 0.5, importance="taylor", data=data)


def test_sequential_mode_leaves_the_classifier_alone_as_one_shot_does(tiny):
    # was: "linear cannot be pruned: its channels are the model output" for any float ratio or budget
    pruned = compress.prune(tiny, 0.5, mode="sequential")
    assert pruned.linear.out_features == 10 and pruned.config.widths[0] < tiny.config.widths[0]
    budget = compress.count_params(tiny) * 3 // 4
    assert compress.count_params(compress.prune(tiny, target_params=budget, mode="sequential")) <= budget
    with pytest.raises(ValueError, match="linear cannot be pruned"):  # named on purpose: still an error
        compress.prune(tiny, {"linear": 0.5}, mode="sequential")


def test_count_flops_of_an_input_the_model_cannot_take(tiny):
    with pytest.raises(ValueError, match="example_input must be a shape"):  # was: "'int' object is not iterable"
        compress.count_flops(tiny, 32)
    for size in [(1, 1, 32, 32), (1, 1, 3, 32, 32)]:  # was: a RuntimeError traceback from inside fvcore's trace
        with pytest.raises(ValueError, match="cannot run on an input of") as e:
            compress.count_flops(tiny, size)
        assert "\n" not in str(e.value)


# --- compress.save / load ------------------------------------------------------------------------

def _tampered(tmp_path: Path, tiny, name: str, change) -> Path:
    payload = {"format": "compress.model/2", "config": tiny.config.to_dict(), "metadata": {},
               "state_dict": {k: v.clone() for k, v in tiny.state_dict().items()}}
    change(payload)
    torch.save(payload, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("change", [
    lambda p: p.update(config={"bogus": 1}),                               # was: KeyError 'stages'
    lambda p: p.update(state_dict={}),                                     # was: RuntimeError, 50 missing keys
    lambda p: p["state_dict"].update({"conv1.weight": torch.zeros(1)}),     # was: RuntimeError size mismatch
    lambda p: p.pop("state_dict"),                                         # was: KeyError 'state_dict'
])
def test_load_of_a_tampered_file_is_one_value_error(tmp_path, tiny, change):
    path = _tampered(tmp_path, tiny, "m.pt", change)
    with pytest.raises(ValueError, match="is damaged or was changed after compress.save") as e:
        compress.load(path)
    assert str(path) in str(e.value) and len(str(e.value)) < 600


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo owned > owned.txt",))


def test_load_of_a_malicious_file_does_not_advise_loading_it_unsafely(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "compress.model/2", "x": _Payload()}, "evil.pt")
    with open("raw.pt", "wb") as f:
        pickle.dump(_Payload(), f)
    for name in ("evil.pt", "raw.pt"):
        with pytest.raises(ValueError, match="other than plain data and was not loaded") as e:
            compress.load(name)
        assert "weights_only" not in str(e.value) and "\n" not in str(e.value)
    assert not Path("owned.txt").exists()


def test_save_onto_a_folder_is_refused_before_the_check(tmp_path, tiny):
    with pytest.raises(IsADirectoryError, match="it is a folder"):  # was: "Device or resource busy" for "" / "."
        compress.save(tiny, tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- compress.export / benchmark -----------------------------------------------------------------

def test_export_arguments_are_checked_first(tmp_path, tiny):
    (tmp_path / "m.onnx").mkdir()
    with pytest.raises(IsADirectoryError, match="it is a folder"):  # was: IsADirectoryError after exporting, temp left
        compress.export(tiny, tmp_path / "m.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    for tol in ({"atol": -1}, {"rtol": math.nan}):  # was: "differs from PyTorch by 9e-10 (> tolerance -1)"
        with pytest.raises(ValueError, match="must be a finite number >= 0"):
            compress.export(tiny, tmp_path / "x.onnx", **tol)
    with pytest.raises(ValueError, match="cannot run on images of shape 1x32x32") as e:  # was: ANSI-coloured ExportError
        compress.export(tiny, tmp_path / "x.onnx", image_shape=(1, 32, 32))
    assert "\n" not in str(e.value) and not (tmp_path / "x.onnx").exists()


def test_benchmark_arguments_are_checked_first(tiny):
    with pytest.raises(ValueError, match="cannot run on images of shape 1x32x32"):  # was: RuntimeError traceback
        compress.measure_latency(tiny, image_shape=(1, 32, 32), batch_sizes=[1], repeats=1, warmup=1)
    with pytest.raises(ValueError, match="min_block_s must be a positive number"):  # was: "cannot convert float NaN"
        compress.measure_latency(tiny, batch_sizes=[1], min_block_s=math.nan)
    with pytest.raises(ValueError, match="batch_sizes must be a list"):  # was: "'int' object is not iterable"
        compress.measure_latency(tiny, batch_sizes=1)
    with pytest.raises(TypeError, match=r"models\['a'\] must be an nn.Module"):  # was: AttributeError
        deploy.measure({"a": 3}, reference=False)
    assert isinstance(tiny, nn.Module)
