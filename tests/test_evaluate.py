"""compress.evaluate: the numbers of a plain loop, the model's normalisation, clear errors, and every shared
trained network evaluating to the accuracy its README gives; compress-bench eval."""

from __future__ import annotations

import copy
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

import compress
from compress.cli import main
from compress.data import synthetic
from compress.models import ResNetConfig, from_checkpoint, resnet_from_config, with_normalization
from compress.training.augment import normalize
from compress.normalization import CIFAR10_MEAN, CIFAR10_STD

from conftest import SHARED_WEIGHTS, needs_shared

STATS = ((0.3, 0.5, 0.7), (0.2, 0.25, 0.3))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = resnet_from_config(ResNetConfig.uniform((8, 16), (1, 1), (1, 2)))
    return with_normalization(model, *STATS), synthetic(16, 45)


def test_matches_a_plain_loop(tiny):
    model, data = tiny
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = compress.evaluate(model, data, batch_size=7, device="cpu", progress=False)
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with torch.no_grad():
        logits = model.eval()(normalize(data.test_x, *STATS))
    model.train()
    pred, y = logits.argmax(1), data.test_y
    assert result.correct == int((pred == y).sum()) and result.total == 45
    assert result.accuracy == result.correct / 45
    assert result.loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    for i, name in enumerate(data.classes):
        n = int((y == i).sum())
        want = None if n == 0 else int(((pred == y) & (y == i)).sum()) / n
        assert result.per_class[name] == want
    assert result.mean == STATS[0] and result.to_dict()["std"] == list(STATS[1])


def test_normalisation_model_then_override_then_default(tiny):
    model, data = tiny
    assert compress.evaluate(model, data, device="cpu", progress=False).mean == STATS[0]
    other = compress.evaluate(model, data, device="cpu", progress=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert other.mean == (0.5,) * 3
    bare = compress.evaluate(with_normalization(model, None, None), (data.test_x, data.test_y), device="cpu", progress=False)
    assert bare.mean == CIFAR10_MEAN and bare.std == CIFAR10_STD
    assert list(bare.per_class) == [str(i) for i in range(10)]


def test_clear_errors(tiny):
    model, data = tiny
    with pytest.raises(ValueError, match="uint8 NCHW"):
        compress.evaluate(model, (data.test_x.float(), data.test_y), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        compress.evaluate(model, data, batch_size=0, progress=False)
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.9"):
        compress.evaluate(model, (data.test_x, data.test_y + 10), device="cpu", progress=False)
    with pytest.raises(TypeError, match="ImageData or an"):
        compress.evaluate(model, [1, 2, 3], progress=False)
    with pytest.raises(ValueError, match="no val split"):
        compress.evaluate(model, data, split="val", progress=False)


# --- the shared trained networks on the real CIFAR-10 test set ----------------------------------------
# The two cheapest run in every test session (about 60 CPU-seconds together); the other three
# (about 4x that) run with COMPRESS_EVAL_ALL=1.
CHEAP = {"report003-b2x1x1x1-c16-k3.pth", "resnet20-12fca82f.th"}


@needs_shared
@pytest.mark.parametrize("name", sorted(SHARED_WEIGHTS))
def test_shared_weights_evaluate_to_their_readme_accuracy(name, cifar10_test):
    if name not in CHEAP and not os.environ.get("COMPRESS_EVAL_ALL"):
        pytest.skip("a larger network: set COMPRESS_EVAL_ALL=1 to evaluate it too")
    info = SHARED_WEIGHTS[name]
    result = compress.evaluate(from_checkpoint(info["path"]), cifar10_test, device="cpu", progress=False)
    assert result.total == 10_000
    assert abs(100 * result.accuracy - info["accuracy"]) <= 0.01 + 1e-9, (name, result.accuracy)


def test_trainer_uses_the_models_normalisation(tiny):
    import dataclasses

    from compress.training import NormalizeConfig, TrainConfig, train

    model, data = tiny
    cfg = TrainConfig(epochs=1, batch_size=16, amp="none", channels_last=False, eval_batch_size=64)

    def run(m, c):
        return train(m, data, c, max_steps_per_epoch=2, progress=False, device="cpu")

    carried = run(model, cfg)  # the model carries STATS; cfg.normalize is the CIFAR-10 default
    same = run(with_normalization(model, None, None), dataclasses.replace(cfg, normalize=NormalizeConfig(*STATS)))
    assert carried.history[0]["train_loss"] == same.history[0]["train_loss"]
    assert carried.history[0]["test_acc"] == same.history[0]["test_acc"]
    assert run(with_normalization(model, None, None), cfg).history[0]["train_loss"] != carried.history[0]["train_loss"]
    assert carried.model.config.input_mean == STATS[0]


# --- compress-bench eval ------------------------------------------------------------------------------
def test_cli_eval_saved_model_and_checkpoint(tiny, tmp_path, capsys):
    model, data = tiny
    path = compress.save(model, tmp_path / "m.pt")
    out = tmp_path / "r.json"
    assert main(["eval", str(path), "--data", "synthetic:16:45", "--device", "cpu", "--no-progress", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    want = compress.evaluate(model, synthetic(16, 45), device="cpu", progress=False)
    assert got["accuracy"] == want.accuracy and got["params"] == compress.count_params(model)
    assert got["kind"] == "compress.save file" and got["mean"] == list(STATS[0])
    assert "accuracy" in capsys.readouterr().out

    torch.save({"net": with_normalization(model, None, None).state_dict(), "acc": 12.5}, tmp_path / "ckpt.pth")
    assert main(["eval", str(tmp_path / "ckpt.pth"), "--data", "synthetic:16:45", "--device", "cpu",
                 "--no-progress", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["kind"] == "checkpoint (kuangliu layout)" and got["acc"] == 12.5 and got["mean"] == list(CIFAR10_MEAN)


def test_cli_eval_errors(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing.pt"), "--data", "synthetic:16:8"]) == 2
    assert "no saved model at" in capsys.readouterr().out
    torch.save({"net": {"weird.weight": torch.zeros(2)}}, tmp_path / "w.pth")
    assert main(["eval", str(tmp_path / "w.pth"), "--data", "synthetic:16:8"]) == 2
    assert "error" in capsys.readouterr().out


def test_refuses_what_it_cannot_measure(tiny):
    """No accuracy from an absent device, from images of another kind, or from NaN logits."""
    model, data = tiny
    with pytest.raises(ValueError, match="'tpu' is not a device"):
        compress.evaluate(model, data, device="tpu", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            compress.evaluate(model, data, device="cuda", progress=False)
    gray = (data.test_x[:, :1].contiguous(), data.test_y)
    with pytest.raises(ValueError, match=r"1 channel\(s\) but the normalisation has 3"):
        compress.evaluate(model, gray, device="cpu", progress=False)
    broken = copy.deepcopy(model)
    with torch.no_grad():
        for p in broken.parameters():
            p.fill_(math.nan)
    with pytest.raises(ValueError, match="NaN or infinite"):
        compress.evaluate(broken, data, device="cpu", progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the caller's model is untouched


def test_cli_eval_checks_flags_before_work(tiny, tmp_path, capsys):
    model, _ = tiny
    path = compress.save(model, tmp_path / "m.pt")
    syn = ["--data", "synthetic:16:8", "--no-progress"]
    for flags, words in ((["--device", "tpu"], "'tpu' is not a device"), (["--json", str(tmp_path)], "is a folder")):
        with pytest.raises(SystemExit) as e:
            main(["eval", str(path), *syn, *flags])
        assert e.value.code == 2 and words in capsys.readouterr().err
    payload = torch.load(path, weights_only=True)
    payload["state_dict"] = {k: (v.fill_(math.nan) if v.is_floating_point() else v) for k, v in payload["state_dict"].items()}
    payload.pop("checksum")  # as a file saved before checksums (with one, load() refuses the edit first)
    torch.save(payload, tmp_path / "nan.pt")
    assert main(["eval", str(tmp_path / "nan.pt"), *syn, "--json", str(tmp_path / "nan.json")]) == 2
    assert "NaN or infinite" in capsys.readouterr().out and not (tmp_path / "nan.json").exists()


def test_tta_flip_measures_what_the_trainer_reported(tiny):
    """evaluate(tta_flip=True, amp=...) gives the trainer's own final test accuracy and loss for a run with
    tta_flip, under the same precision; without it, the plain accuracy."""
    from compress.training import TrainConfig, train

    model, data = tiny
    for amp in ("none", "bf16"):
        cfg = TrainConfig(epochs=1, batch_size=16, amp=amp, channels_last=False, eval_batch_size=64, tta_flip=True)
        result = train(model, data, cfg, max_steps_per_epoch=2, progress=False, device="cpu")
        got = compress.evaluate(result.model, data, device="cpu", tta_flip=True, progress=False,
                                amp=None if amp == "none" or result.precision["autocast"] == "none" else "bf16")
        assert got.accuracy == result.history[-1]["test_acc"]
        assert got.loss == pytest.approx(result.history[-1]["test_loss"], rel=1e-6)
    with torch.no_grad():
        x = normalize(data.test_x, *STATS)
        net = model.eval()
        logits = (net(x) + net(x.flip(3))) / 2
    model.train()
    flipped = compress.evaluate(model, data, device="cpu", tta_flip=True, progress=False)
    assert flipped.correct == int((logits.argmax(1) == data.test_y).sum())
    assert flipped.loss == pytest.approx(float(F.cross_entropy(logits, data.test_y)), rel=1e-5)
    with pytest.raises(TypeError, match="tta_flip"):
        compress.evaluate(model, data, tta_flip="yes", progress=False)


def test_tta_effect_script(tiny, tmp_path):
    """benchmarks/tta_effect.py: per model of a run folder, the accuracy with and without flip TTA, as
    compress.evaluate measures them, beside what the run reported."""
    from scripts import load_script

    model, _ = tiny
    run = tmp_path / "run"
    (run / "a").mkdir(parents=True)
    compress.save(model, run / "a" / "model.pt")
    (run / "a" / "result.json").write_text(json.dumps({"test_acc": 0.125}))
    (run / "unfinished").mkdir()  # no model.pt: not a finished recipe, left out
    script = load_script("tta_effect")
    assert script.main([str(run), "--data", "synthetic:16:45", "--amp", "none", "--out", str(tmp_path / "out")]) == 0
    got = json.loads((tmp_path / "out" / "tta-effect-run.json").read_text())
    assert list(got["models"]) == ["a"] and got["models"]["a"]["reported"] == 0.125
    data = synthetic(16, 45)
    for key, tta in (("plain", False), ("tta", True)):
        want = compress.evaluate(model, data, device="cpu", tta_flip=tta, progress=False)
        assert got["models"]["a"][key]["accuracy"] == want.accuracy
    assert "| a | 12.50% |" in (tmp_path / "out" / "tta-effect-run.md").read_text()
    with pytest.raises(SystemExit):
        script.main([str(tmp_path / "out"), "--data", "synthetic:16:45"])  # no finished recipe in it
