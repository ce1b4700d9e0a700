"""compress.export (ONNX, checked with ONNX Runtime) and compress.benchmark (measured latency), on tiny models."""

from __future__ import annotations

import datetime as dt

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision

import compress
from compress import deploy
from compress.models import BlockConfig, ResNet, ResNetConfig, StageConfig

from conftest import assert_unchanged, snapshot


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
    pruned = compress.prune(net, 0.6)  # odd widths (e.g. 26 of 64 channels)
    assert pruned.conv1.out_channels == 26
    result = compress.export(pruned, tmp_path / "tv.onnx", image_shape=(3, 48, 48), dynamic_batch=False)
    assert result.max_abs_diff <= result.tolerance and result.checked_batch == 2
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = pruned.eval()(x).numpy()
    np.testing.assert_allclose(_ort_logits(result.path, x), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="Got invalid dimensions|Invalid rank|dimension"):  # the batch is fixed
        _ort_logits(result.path, torch.randn(3, 3, 48, 48))


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
        compress.benchmark(tiny, **kwargs)


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
        assert 0 < t.min_ms <= t.median_ms <= t.max_ms < 10_000
        assert 0 <= t.iqr_ms <= t.max_ms - t.min_ms
        assert t.repeats == 3 and t.calls_per_repeat >= 1 and t.first_call_s > 0
        assert t.images_per_s == pytest.approx(t.batch_size / (t.median_ms / 1e3))
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
    result = compress.benchmark(model, batch_sizes=(1, 32), backend=backend, threads=1, repeats=3, warmup=1,
                                min_block_s=0.01)
    assert torch.get_num_threads() == threads_before  # the caller's setting is restored
    _check_sane(result, model, backend, (1, 32), threads=1)
    assert (result.onnxruntime == ort.__version__) if backend == "onnxruntime" else result.onnxruntime is None
    assert result.timing(32).median_ms > result.timing(1).median_ms  # 32 images take longer than one


def test_compiled_backend_measures_after_compiling():
    model = small()
    result = compress.benchmark(model, batch_sizes=(2,), backend="compile", threads=1, repeats=3, warmup=2,
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
