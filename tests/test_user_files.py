"""The user's own files: compress.load rebuilds a compress.save file of any importable model class without a
template; compress-bench eval / export / latency take one; a recipe's weights may be one."""

from __future__ import annotations

import json

import pytest
import torch

import compress
from compress import recipes
from compress.cli import main
from user_model import TinyNet


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = TinyNet(8, 10)
    small = compress.prune(model, 0.5, inputs=torch.randn(1, 3, 32, 32))
    return small, compress.save(small, tmp_path / "tiny.pt")


def test_load_rebuilds_any_importable_class_without_a_template(saved):
    small, path = saved
    back = compress.load(path)
    assert type(back) is TinyNet and back is not small and not back.training
    assert back.features[0].out_channels == small.features[0].out_channels < 8
    assert back.features[3].bias is None and back.act is torch.nn.functional.relu
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(back(x), small.eval()(x), atol=1e-6)


def test_a_class_that_cannot_be_imported_is_refused_in_one_line(tmp_path):
    class Local(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    path = compress.save(Local(), tmp_path / "local.pt")
    with pytest.raises(ValueError, match="defined inside a function.*pass model="):
        compress.load(path)
    assert isinstance(compress.load(path, model=Local()), Local)  # a template still works


def test_cli_eval_export_latency_take_the_users_file(saved, tmp_path, capsys):
    _, path = saved
    out = tmp_path / "eval.json"
    assert main(["eval", str(path), "--data", "synthetic:32:64", "--device", "cpu", "--no-progress",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["total"] == 64
    assert main(["export", str(path), "--out", str(tmp_path / "onnx")]) == 0
    assert (tmp_path / "onnx" / "tiny.onnx").is_file()
    assert main(["latency", str(path), "--batch-sizes", "1", "--repeats", "1", "--warmup", "1",
                 "--json", str(tmp_path / "lat.json")]) == 0
    rows = json.loads((tmp_path / "lat.json").read_text())["rows"]
    assert [r["recipe"] for r in rows] == ["tiny"] and rows[0]["flops"] > 0


def test_a_recipe_starts_from_the_users_file(saved, tmp_path):
    small, path = saved
    r = recipes.from_mapping({"name": "mine", "source": "s", "model": [], "finetune": False, "claims": {"params": 1},
                              "weights": {"path": str(path)}})
    model = r.initial_model()
    assert type(model) is TinyNet and compress.count_params(model) == compress.count_params(small)
    assert r.transforms_summary() == "weights(tiny.pt)"
