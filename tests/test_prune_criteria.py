"""benchmarks/prune_criteria.py: the network it measures computes what the checkpoint computes, a
tiny end-to-end run writes one result per setting, each at >= the asked FLOP reduction, and
--torch-pruning sets plain Torch-Pruning's result beside each."""

import json

import numpy as np
import torch
import torch.nn.functional as F
from scripts import load_script


def _script():
    return load_script("prune_criteria")


def _option_a_checkpoint(path, n=1, seed=0):
    """A random akamaster-layout ResNet-(6n+2) checkpoint, and a reference forward written from its code."""
    g = torch.Generator().manual_seed(seed)
    state = {"conv1.weight": torch.randn(16, 3, 3, 3, generator=g) * 0.3}

    def bn(prefix, c):
        state.update({f"{prefix}.weight": torch.rand(c, generator=g) + 0.5, f"{prefix}.bias": torch.randn(c, generator=g) * 0.1,
                      f"{prefix}.running_mean": torch.randn(c, generator=g) * 0.1, f"{prefix}.running_var": torch.rand(c, generator=g) + 0.5,
                      f"{prefix}.num_batches_tracked": torch.tensor(1)})

    bn("bn1", 16)
    cin = 16
    for s, w in enumerate((16, 32, 64)):
        for b in range(n):
            p = f"layer{s + 1}.{b}"
            state[f"{p}.conv1.weight"] = torch.randn(w, cin if b == 0 else w, 3, 3, generator=g) * 0.2
            bn(f"{p}.bn1", w)
            state[f"{p}.conv2.weight"] = torch.randn(w, w, 3, 3, generator=g) * 0.2
            bn(f"{p}.bn2", w)
        cin = w
    state["linear.weight"] = torch.randn(10, 64, generator=g) * 0.3
    state["linear.bias"] = torch.randn(10, generator=g) * 0.1
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "best_prec1": 0.0}, path)

    def reference(x):
        def bnf(t, p):
            return F.batch_norm(t, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"], state[f"{p}.bias"])
        out = F.relu(bnf(F.conv2d(x, state["conv1.weight"], padding=1), "bn1"))
        for s, w in enumerate((16, 32, 64)):
            for b in range(n):
                p, stride = f"layer{s + 1}.{b}", (2 if s > 0 and b == 0 else 1)
                y = F.relu(bnf(F.conv2d(out, state[f"{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1"))
                y = bnf(F.conv2d(y, state[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
                short = out if stride == 1 else F.pad(out[:, :, ::2, ::2], (0, 0, 0, 0, w // 4, w // 4))
                out = F.relu(y + short)
        return F.linear(F.adaptive_avg_pool2d(out, 1).flatten(1), state["linear.weight"], state["linear.bias"])

    return reference


def test_loaded_network_matches_the_option_a_code(tmp_path):
    reference = _option_a_checkpoint(tmp_path / "r8.th")
    model, _, loader = _script().load_trained(tmp_path / "r8.th")
    assert loader == "compress.models.from_checkpoint"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)
    saved = torch.load(tmp_path / "r8.th", weights_only=True)["state_dict"]
    original = sum(v.numel() for k, v in saved.items() if k.endswith(("weight", "bias")))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == original  # the shortcuts are frozen


def test_end_to_end_writes_every_setting(tmp_path):
    _option_a_checkpoint(tmp_path / "r8.th")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cifar.npz", train_x=rng.integers(0, 255, (64, 32, 32, 3), dtype=np.uint8), train_y=rng.integers(0, 10, 64),
             test_x=rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8), test_y=rng.integers(0, 10, 20))
    out = tmp_path / "r.json"
    result = _script().main(["--weights", str(tmp_path / "r8.th"), "--data", str(tmp_path / "cifar.npz"), "--importances", "l1,taylor",
                             "--taylor-images", "32", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result)) and saved["settings"]["test_images"] == 20
    keys = [(r["scope"], r["ranking"], r["importance"]) for r in saved["runs"]]
    assert keys == [(s, r, i) for s in ("all", "inner") for r in ("local", "global") for i in ("l1", "taylor")]
    assert all(r["speedup"] >= 2 and r["flops"] <= saved["settings"]["target_flops"] for r in saved["runs"])
    inner = [r for r in saved["runs"] if r["scope"] == "inner"]
    assert all("widths [16, 32, 64]" in r["widths"] for r in inner)  # residual streams kept whole


def test_torch_pruning_beside_each_setting(tmp_path):
    _option_a_checkpoint(tmp_path / "r8.th")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cifar.npz", train_x=rng.integers(0, 255, (64, 32, 32, 3), dtype=np.uint8), train_y=rng.integers(0, 10, 64),
             test_x=rng.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8), test_y=rng.integers(0, 10, 40))
    result = _script().main(["--weights", str(tmp_path / "r8.th"), "--data", str(tmp_path / "cifar.npz"), "--importances", "l1,l2",
                             "--rankings", "local,global", "--torch-pruning", "--out", str(tmp_path / "r.json")])
    for run in result["runs"]:
        ref = run["torch_pruning"]
        assert ref["same_widths"], run
        assert (ref["params"], ref["flops"], ref["accuracy"]) == (run["params"], run["flops"], run["accuracy"]), run
