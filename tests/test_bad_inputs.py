"""Fixes from the second pass of bad inputs over the API and the CLI (issue 13, ``tests/bad_inputs.py``).

Each test is one input that used to end in a traceback or a silent wrong result: now it is one line
naming the problem and the accepted values (exit status 2 for a usage mistake, 1 for a runtime
failure), found before anything is written. Nothing here trains a model.
"""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import compress
from compress import bench, deploy, files, recipes, report
from compress.cli import main
from compress.data import DatasetError
from compress.training import TrainConfig

TINY = """\
name: {name}
source: a tiny recipe for tests
model:
  - remove_stage: {{index: 3}}
  - scale_width: {{factor: 0.0625}}
  - redistribute_blocks: {{blocks: [1, 1, 1]}}
train: {{epochs: 1, batch_size: 16, amp: none, channels_last: false}}
claims: {{params: {params}, accuracy: {accuracy}, accuracy_basis: made up}}
"""


def _recipe(folder: Path, name: str = "tiny", params: str = "1", accuracy: str = "50.0") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(TINY.format(name=name, params=params, accuracy=accuracy))
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
    with pytest.raises(ValueError, match="input_size must be a sequence"):  # was: "'int' object is not iterable"
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
        compress.benchmark(tiny, image_shape=(1, 32, 32), batch_sizes=[1], repeats=1, warmup=1)
    with pytest.raises(ValueError, match="min_block_s must be a positive number"):  # was: "cannot convert float NaN"
        compress.benchmark(tiny, batch_sizes=[1], min_block_s=math.nan)
    with pytest.raises(ValueError, match="batch_sizes must be a list"):  # was: "'int' object is not iterable"
        compress.benchmark(tiny, batch_sizes=1)
    with pytest.raises(TypeError, match=r"models\['a'\] must be an nn.Module"):  # was: AttributeError
        deploy.measure({"a": 3}, reference=False)
    assert isinstance(tiny, nn.Module)
