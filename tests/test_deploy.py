"""compress.export (ONNX, checked with ONNX Runtime) and compress.measure_latency (measured latency), on tiny models."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import matplotlib.image
import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision
from rich.console import Console

import compress
from compress import bench, deploy
from compress.cli import main
from compress.models import BlockConfig, ResNet, ResNetConfig, StageConfig

from conftest import SHARED_WEIGHTS, assert_unchanged, needs_shared, snapshot
from recipe_text import tiny_recipe


def _scaled(model: torch.nn.Module) -> torch.nn.Module:
    """Give BN layers random running statistics and affine parameters, so eval outputs are O(1) and differ
    per image (a fresh net's near-constant logits would make any comparison weak)."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model


@pytest.fixture(scope="module")
def tiny() -> ResNet:
    """Every feature the recipes use, small: stem SE, block SE, 5x5 kernels, a projection, odd widths."""
    torch.manual_seed(0)
    cfg = ResNetConfig(
        stages=(StageConfig(6, 1, (BlockConfig(5, (5, 3), se=2), BlockConfig(7))),
                StageConfig(11, 2, (BlockConfig(9, (3, 3), se=3),)),
                StageConfig(13, 2, (BlockConfig(13),), projection=True)),
        stem_width=6, stem_se=2,
    )
    return _scaled(ResNet(cfg)).train()  # left in training mode: export must use eval mode, not change it


def _ort_logits(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


def test_exported_model_matches_pytorch_at_any_batch(tiny, tmp_path):
    snap = snapshot(tiny)
    result = compress.export(tiny, tmp_path / "tiny.onnx")
    assert_unchanged(tiny, snap)
    assert result.path == tmp_path / "tiny.onnx" and result.path.is_file()
    assert result.size_bytes == result.path.stat().st_size and not list(tmp_path.glob("*.data"))  # one file
    assert 0 <= result.max_abs_diff <= result.tolerance < 1e-3
    assert result.checked_batch == 3 and result.dynamic_batch and result.opset >= 18
    assert result.onnxruntime == ort.__version__
    net = ResNet(tiny.config)
    net.load_state_dict(tiny.state_dict())
    net.eval()
    for batch in (1, 5):  # our own check, on other images and batch sizes than export's
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want = net(x).numpy()
        assert np.abs(want).max() > 0.1  # outputs of a real size, not a near-zero constant
        np.testing.assert_allclose(_ort_logits(result.path, x), want, rtol=1e-4, atol=1e-5)


def test_pruned_torchvision_model_exports_and_matches(tmp_path):
    torch.manual_seed(0)
    net = _scaled(torchvision.models.resnet18(num_classes=10))
    pruned = compress.prune(net, 0.6)  # odd widths (e.g. 25 of 64 channels: int(64 * 0.4))
    assert pruned.conv1.out_channels == 25
    result = compress.export(pruned, tmp_path / "tv.onnx", image_shape=(3, 48, 48), dynamic_batch=False)
    assert result.max_abs_diff <= result.tolerance and result.checked_batch == 2
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = pruned.eval()(x).numpy()
    np.testing.assert_allclose(_ort_logits(result.path, x), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="Got invalid dimensions|Invalid rank|dimension"):  # the batch is fixed
        _ort_logits(result.path, torch.randn(3, 3, 48, 48))


@needs_shared
@pytest.mark.parametrize("name", ["resnet20-12fca82f.th", "report003-b2x1x1x1-c16-k3.pth"])
def test_imported_trained_model_exports_and_matches(name, tmp_path):
    """A trained network imported by from_checkpoint (option-A shortcuts as fixed convs, normalisation inside)."""
    model = compress.models.from_checkpoint(SHARED_WEIGHTS[name]["path"])
    result = compress.export(model, tmp_path / "trained.onnx")
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(3))  # images in [0, 1]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(want).max() > 1.0  # a trained classifier's logits
    got = _ort_logits(result.path, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == want.argmax(1)).all() and result.max_abs_diff <= result.tolerance


def test_export_mismatch_is_an_error_and_leaves_no_file(tiny, tmp_path, monkeypatch):
    class Drifting(torch.nn.Module):  # after the export, the PyTorch model adds 1
        def __init__(self) -> None:
            super().__init__()
            self.net, self.exported = tiny, False

        def forward(self, x):
            y = self.net(x)
            return y + 1.0 if self.exported else y

    drifting = Drifting()
    real = torch.onnx.export

    def export_then_drift(model, *args, **kwargs):
        out = real(model, *args, **kwargs)
        model.exported = True
        return out

    monkeypatch.setattr(torch.onnx, "export", export_then_drift)
    with pytest.raises(deploy.ExportError, match=r"differs from PyTorch by 1 \(> tolerance"):
        compress.export(drifting, tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": "tensorrt"}, "backend must be one of eager, compile, onnxruntime"),
    ({"batch_sizes": ()}, "at least one batch size"),
    ({"batch_sizes": (1, 0)}, "each batch size must be an int >= 1"),
    ({"threads": 0}, "threads must be an int >= 1"),
    ({"repeats": 0}, "repeats must be an int >= 1"),
    ({"image_shape": (32, 32)}, "image_shape must be three positive ints"),
    ({"backend": "onnxruntime", "device": "cuda"}, "runs on the CPU only"),
    ({"device": "gpu0"}, "device must be a torch device"),
])
def test_benchmark_rejects_bad_arguments(tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compress.measure_latency(tiny, **kwargs)


def test_benchmark_is_the_deprecated_name_of_measure_latency(tiny):
    with pytest.warns(DeprecationWarning, match="use compress.measure_latency"):
        result = compress.benchmark(tiny, batch_sizes=(1,), repeats=1, warmup=1, min_block_s=0.001)
    assert isinstance(result, compress.deploy.LatencyResult) and result.timing(1).batch_size == 1
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="runs on the CPU only"):
        compress.benchmark(tiny, backend="onnxruntime", device="cuda")  # the same checks: it is the same function


def test_export_rejects_bad_arguments(tiny, tmp_path):
    with pytest.raises(ValueError, match="must end in .onnx"):
        compress.export(tiny, tmp_path / "model.pt")
    with pytest.raises(TypeError, match="expected an nn.Module"):
        compress.export("model", tmp_path / "m.onnx")


def _check_sane(result: deploy.LatencyResult, model, backend: str, sizes: tuple[int, ...], threads: int) -> None:
    assert result.backend == backend and result.device == "cpu" and result.threads == threads
    assert result.device_name.startswith("CPU") and result.torch == torch.__version__
    assert result.image_shape == (3, 32, 32) and result.params == compress.count_params(model)
    date = dt.datetime.strptime(result.date, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert abs((dt.datetime.now(dt.timezone.utc) - date).total_seconds()) < 600
    assert [t.batch_size for t in result.timings] == list(sizes)
    for t in result.timings:
        assert 0 < t.min_ms <= t.median_ms <= t.max_ms < 60_000
        assert 0 <= t.iqr_ms <= t.max_ms - t.min_ms
        assert t.repeats == 3 and t.calls_per_repeat >= 1 and t.first_call_s > 0
        assert t.images_per_s == pytest.approx(t.batch_size / (t.median_ms / 1e3))
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()  # plain JSON types
    again = deploy.LatencyResult.from_dict(result.to_dict())
    assert again == result and result.timing(sizes[-1]) is result.timings[-1]
    with pytest.raises(KeyError, match="batch size 999 was not measured"):
        result.timing(999)


def small() -> ResNet:
    return ResNet(ResNetConfig.uniform((8, 16), (1, 1), (1, 2)))


@pytest.mark.parametrize("backend", ["eager", "onnxruntime"])
def test_latency_result_has_its_fields_and_sane_values(backend):
    model = small()
    threads_before = torch.get_num_threads()
    result = compress.measure_latency(model, batch_sizes=(1, 32), backend=backend, threads=1, repeats=3, warmup=1,
                                min_block_s=0.01)
    assert torch.get_num_threads() == threads_before  # the caller's setting is restored
    _check_sane(result, model, backend, (1, 32), threads=1)
    assert (result.onnxruntime == ort.__version__) if backend == "onnxruntime" else result.onnxruntime is None
    assert result.timing(32).median_ms > result.timing(1).median_ms  # 32 images take longer than one


def test_compiled_backend_measures_after_compiling():
    model = small()
    result = compress.measure_latency(model, batch_sizes=(2,), backend="compile", threads=1, repeats=3, warmup=2,
                                min_block_s=0.01)
    _check_sane(result, model, "compile", (2,), threads=1)
    (t,) = result.timings
    assert t.first_call_s > 10 * t.median_ms / 1e3  # the first call compiled; the timed ones did not


def test_measure_rows_carry_the_reference_of_the_same_session():
    models = {"a": small(), "b": ResNet(ResNetConfig.uniform((4, 8), (1, 1), (1, 2)))}
    rows = deploy.measure(models, backends=("eager",), batch_sizes=(1,), threads=1, repeats=3, warmup=1,
                          min_block_s=0.01)
    assert [r["recipe"] for r in rows] == ["a", "b"]
    ref_flops = compress.count_flops(compress.resnet18())
    for row, model in zip(rows, models.values()):
        assert row["params"] == compress.count_params(model) and row["flops"] == compress.count_flops(model)
        entry = row["latency"]["eager"]
        assert entry["backend"] == "eager" and entry["timings"][0]["median_ms"] > 0
        ref = entry["reference"]
        assert ref["name"] == "resnet18" and ref["flops"] == ref_flops and ref["params"] == 11_173_962
        assert ref["median_ms"]["1"] > 0
    assert rows[0]["latency"]["eager"]["reference"] == rows[1]["latency"]["eager"]["reference"]


# the report's latency columns -----------------------------------------------------------------------
def _entry(backend: str, times: dict[int, float], ref: dict[int, float]) -> dict:
    return {"backend": backend, "device": "cpu", "device_name": "CPU Test (2 cores, 2 threads)", "threads": 2,
            "image_shape": [3, 32, 32], "params": 1, "torch": "2.14.1", "onnxruntime": None, "date": "2026-12-01T10:00:00Z",
            "git_commit": "0123456789abcdef", "timings": [
                {"batch_size": b, "median_ms": ms, "iqr_ms": ms / 10, "min_ms": ms * 0.9, "max_ms": ms * 1.2, "repeats": 10,
                 "calls_per_repeat": 1, "images_per_s": b / ms * 1e3, "first_call_s": 0.1} for b, ms in times.items()],
            "reference": {"name": "resnet18", "flops": 556_651_520, "params": 11_173_962,
                          "median_ms": {str(b): ms for b, ms in ref.items()}}}


def _latency_rows() -> list[dict]:
    ref = {1: 20.0, 256: 2560.0}
    return [
        {"recipe": "resnet18", "params": 11_173_962, "flops": 556_651_520, "measured_accuracy": 95.0,
         "latency": {"eager": _entry("eager", ref, ref)}},
        {"recipe": "000", "params": 4_903_210, "flops": 367_127_040, "measured_accuracy": 94.0, "claimed_accuracy": 94.5,
         "latency": {"eager": _entry("eager", {1: 10.0, 256: 2048.0}, ref),
                     "onnxruntime": {**_entry("onnxruntime", {1: 5.0}, {1: 8.0}), "onnxruntime": "1.32.0"}}},
        {"recipe": "004", "params": 1_050_202, "flops": 155_400_000, "claimed_accuracy": 90.14},  # not measured
    ]


def test_report_shows_latency_where_measured_and_nothing_where_not(tmp_path):
    from compress import report

    (tmp_path / "results.json").write_text(json.dumps({"run": "hand", "budget": "fast", "rows": _latency_rows()}))
    report.write_report(tmp_path, console=Console(file=io.StringIO(), width=250))
    md = (tmp_path / "report.md").read_text()
    head = ("| latency b1 (eager) | inference img/s b256 (eager) | speed-up b1 / b256 vs ResNet-18 | FLOP reduction |")
    assert head in md
    assert md.count("| 000 | 4,903,210 | 367.13 M | 94.00% | - | 94.50% |") == 1
    assert "| 10.0 ms | 125 | 2.00x / 1.25x | 1.52x |" in md  # 20/10, 2560/2048, 556.65/367.13
    assert "| 20.0 ms | 100 | 1.00x / 1.00x | 1.00x |" in md
    assert "| 004 | 1,050,202 | 155.40 M | - | - | 90.14% | - | - | - | - | - | - | - | - | - |" in md  # no number invented
    section = md[md.index("## Measured inference speed"):]
    assert "| 000 | eager | 4,903,210 | 367.13 M | 1.52x | 10.0 ms ± 1.0 | 2.00x | 125 | 1.25x | 0.82 |" in section
    assert "| 000 | onnxruntime | 4,903,210 | 367.13 M | 1.52x | 5.00 ms ± 0.50 | 1.60x | - | - | - |" in section
    assert "| 004 |" not in section.split("\n\n")[1]
    assert "CPU Test (2 cores, 2 threads); torch 2.14.1, onnxruntime 1.32.0; 2026-12-01; 10 timed repeats" in section
    assert "](accuracy_vs_latency.png)" in md
    img = matplotlib.image.imread(tmp_path / "accuracy_vs_latency.png")
    assert img.shape[0] >= 400 and img.shape[1] >= 600

    # without any latency the report keeps its old columns and draws no latency plot
    rows = [{k: v for k, v in r.items() if k != "latency"} for r in _latency_rows()]
    (tmp_path / "results.json").write_text(json.dumps({"run": "hand", "budget": "fast", "rows": rows}))
    (tmp_path / "accuracy_vs_latency.png").unlink()
    report.write_report(tmp_path, console=Console(file=io.StringIO(), width=250))
    md = (tmp_path / "report.md").read_text()
    assert "latency" not in md and not (tmp_path / "accuracy_vs_latency.png").exists()


# compress-bench export / latency --------------------------------------------------------------------
def test_cli_export_of_a_recipe_and_of_a_saved_model(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(tiny_recipe("tiny", width="0.125", accuracy="null"))
    saved = compress.save(_scaled(compress.scale_width(compress.resnet18(), 0.1)), tmp_path / "run" / "x" / "model.pt")
    out = tmp_path / "onnx"
    assert main(["export", "tiny", str(saved), "--recipes-dir", str(tmp_path), "--out", str(out)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    for name in ("tiny", "x"):
        assert f"{name}: {out / name}.onnx" in said
    assert said.count("max abs diff") == 2
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = compress.load(saved)(x).numpy()
    np.testing.assert_allclose(_ort_logits(out / "x.onnx", x), want, rtol=1e-4, atol=1e-5)

    assert main(["export", "nope", "--recipes-dir", str(tmp_path), "--out", str(out)]) == 2
    assert "no recipe 'nope'" in capsys.readouterr().out


def _hand_run(tmp_path) -> Path:
    """A run folder as compress-bench writes it, for two tiny models (one named resnet18: the reference)."""
    run = tmp_path / "run"
    rows = []
    for name, width in (("tiny", 0.0625), ("resnet18", 0.125)):
        model = compress.scale_width(compress.resnet18(), width)
        compress.save(model, run / name / "model.pt")
        row = {"recipe": name, "params": compress.count_params(model), "flops": compress.count_flops(model),
               "measured_accuracy": 50.0}
        (run / name / bench.RESULT).write_text(json.dumps(row))
        rows.append(row)
    (run / bench.MANIFEST).write_text(json.dumps({"recipes": {"tiny": "x", "resnet18": "y"}, "budget": "fast"}))
    bench.collect(run, rows)
    return run


def test_cli_latency_of_a_run_folder_goes_into_its_report(tmp_path, capsys):
    run = _hand_run(tmp_path)
    args = ["latency", "--run", str(run), "--batch-sizes", "1,4", "--repeats", "2", "--warmup", "1", "--threads", "1"]
    assert main(args) == 0
    assert "measuring tiny: eager" in capsys.readouterr().out
    rows = json.loads((run / "results.json").read_text())["rows"]
    assert [r["recipe"] for r in rows] == ["tiny", "resnet18"]  # the run's order is kept
    for r in rows:
        assert r["latency"]["eager"]["threads"] == 1
        assert [t["batch_size"] for t in r["latency"]["eager"]["timings"]] == [1, 4]
        assert json.loads((run / r["recipe"] / bench.RESULT).read_text())["latency"] == r["latency"]
    ref = rows[1]["latency"]["eager"]
    assert rows[0]["latency"]["eager"]["reference"]["median_ms"]["1"] == ref["timings"][0]["median_ms"]
    md = (run / "report.md").read_text()
    assert "## Measured inference speed" in md and (run / "accuracy_vs_latency.png").is_file()

    # a second backend is added next to the first one, for one recipe
    assert main([*args, "--backend", "onnxruntime", "tiny"]) == 0
    rows = json.loads((run / "results.json").read_text())["rows"]
    assert sorted(rows[0]["latency"]) == ["eager", "onnxruntime"]
    assert sorted(rows[1]["latency"]) == ["eager", "onnxruntime"]  # the run's resnet18 is always the reference
    assert rows[0]["latency"]["onnxruntime"]["onnxruntime"] == ort.__version__

    capsys.readouterr()
    assert main(["latency", "--run", str(run), "nope"]) == 2
    assert "no finished recipe 'nope'; finished: resnet18, tiny" in capsys.readouterr().out
    assert main(["latency", "--run", str(run), "--backend", "tensorrt"]) == 2
    assert "choose from eager, compile, onnxruntime" in capsys.readouterr().out
    assert main(["latency", "--run", str(run), "--batch-sizes", "one"]) == 2
    assert "--batch-sizes takes comma-separated integers" in capsys.readouterr().out
    from compress.files import lock_folder

    with lock_folder(run, "run folder"):  # e.g. a training run still writing into it
        assert main(["latency", "--run", str(run)]) == 2
    assert "in use by another process" in " ".join(capsys.readouterr().out.split())


def test_cli_latency_of_recipes_writes_json(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(tiny_recipe("tiny", width="0.125", accuracy="null"))
    out = tmp_path / "latency.json"
    assert main(["latency", "tiny", "--recipes-dir", str(tmp_path), "--batch-sizes", "1", "--repeats", "2",
                 "--warmup", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["recipe"] == "tiny" and row["params"] == 19_954
    entry = row["latency"]["eager"]
    assert entry["reference"]["params"] == 11_173_962 and entry["reference"]["median_ms"]["1"] > 0
    assert "measured inference speed" in capsys.readouterr().out


def test_latency_benchmark_script_writes_json_and_markdown(tmp_path):
    """benchmarks/latency.py on a tiny setting: one recipe, one backend, batch 1, two repeats."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("latency", Path(__file__).resolve().parent.parent / "benchmarks" / "latency.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = script.main(["--recipes", "004", "--round-to", "", "--backends", "eager", "--batch-sizes", "1",
                       "--repeats", "2", "--warmup", "1", "--threads", "1", "--out", str(tmp_path), "--tag", "t"])
    (path,) = tmp_path.glob("latency-cpu-*-t.json")
    assert json.loads(path.read_text()) == out
    assert out["backends_done"] == ["eager"] and out["settings"]["threads"] == 1
    (run,) = out["runs"]
    assert len(run["load_average_before"]) == 3 and run["backends"] == ["eager"] and run["elapsed_s"] > 0
    for key in ("command", "git_commit", "device_name", "torch", "date"):
        assert run[key], key
    (row,) = out["rows"]
    assert row["recipe"] == "004" and row["group"] == "recipe" and row["params"] == 1_050_202
    assert row["latency"]["eager"]["timings"][0]["repeats"] == 2
    md = path.with_suffix(".md").read_text()
    assert "| 004 | eager | 1,050,202 |" in md and "load average (1 min)" in md and "round_to" not in md
    assert script.main(["--recipes", "004", "--round-to", "", "--backends", "eager", "--batch-sizes", "1",
                        "--repeats", "2", "--warmup", "1", "--threads", "1", "--out", str(tmp_path), "--tag", "t"]) == out
    with pytest.raises(SystemExit):  # other settings never go into the same file
        script.main(["--recipes", "004", "--round-to", "", "--repeats", "3", "--threads", "1", "--out", str(tmp_path),
                     "--tag", "t"])
