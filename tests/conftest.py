import pytest
import torch

import compress

# Trainable parameters of every bundled recipe (paper-specs.md for the reports). Hard-coded on purpose:
# a drifting transform must fail the tests, not silently change a recipe.
EXPECTED_PARAMS = {
    "000": 4_903_210,
    "001": 4_662_346,
    "002a": 4_493_525,
    "002b": 2_777_674,
    "003": 4_697_742,
    "004": 1_050_202,
    "resnet18": 11_173_962,
    "ours-l1-prune": 4_782_210,
    # published trained networks, evaluated as they are (shared/weights/README.md gives the same counts)
    "report003-b2x2-c64-k3": 676_682,
    "report003-b2x2x1-c32-k3": 401_194,
    "report003-b2x1x1x1-c16-k3": 313_498,
}


@pytest.fixture(scope="session")
def r18():
    """A CIFAR ResNet-18 with fixed seed; tests must not mutate it (transforms never do)."""
    torch.manual_seed(0)
    return compress.resnet18().eval()


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(2, 3, 32, 32)


def snapshot(model):
    """Everything a transform could mutate: config (if any), parameter/buffer values and shapes, mode."""
    return (
        getattr(model, "config", None),
        {k: v.clone() for k, v in model.state_dict().items()},
        model.training,
    )


def assert_unchanged(model, snap):
    config, state, training = snap
    assert getattr(model, "config", None) == config
    now = model.state_dict()
    assert now.keys() == state.keys()
    for k, v in state.items():
        assert now[k].shape == v.shape and torch.equal(now[k], v), k
    assert model.training == training


# --- the published trained weights ($COMPRESS_WEIGHTS or torch's hub cache) and real CIFAR-10 --------
import os  # noqa: E402
from pathlib import Path  # noqa: E402

from compress import weights as published  # noqa: E402


def shared_dir() -> Path | None:
    """``$COMPRESS_SHARED`` (a folder with ``data/cifar10``), or ``None``: the tests never look beside the checkout."""
    env = os.environ.get("COMPRESS_SHARED")
    return Path(env) if env else None


def shared_weights() -> dict[str, dict]:
    """The published checkpoints found on this machine (``$COMPRESS_WEIGHTS`` or torch's hub cache; the tests
    never download): file -> {path, sha256, params, accuracy (percent)}."""
    rows = {}
    for entry in published.PUBLISHED.values():
        path = published.find_local(entry.name)
        if path is not None:
            rows[entry.file] = {"path": path, "sha256": entry.sha256, "params": entry.params, "accuracy": entry.accuracy}
    return rows


SHARED_WEIGHTS = shared_weights()
needs_shared = pytest.mark.skipif(
    len(SHARED_WEIGHTS) < len(published.PUBLISHED),
    reason="the published weights are not all on this machine: point $COMPRESS_WEIGHTS at a folder holding them "
           "(the tests never download)")


@pytest.fixture(scope="session")
def cifar10_test(tmp_path_factory):
    """Real CIFAR-10 test images ``(uint8 NCHW, int64 labels)``: ``$COMPRESS_CIFAR10_NPZ``, /tmp/cifar10.npz,
    or unpacked from ``shared/data/cifar10`` (about 6 s)."""
    import subprocess
    import sys

    import numpy as np

    npz = Path(os.environ.get("COMPRESS_CIFAR10_NPZ", "/tmp/cifar10.npz"))
    if not npz.is_file():
        root = shared_dir()
        if root is None or not (root / "data" / "cifar10" / "unpack.py").is_file():
            pytest.skip("real CIFAR-10 not found (no $COMPRESS_CIFAR10_NPZ or /tmp/cifar10.npz, no $COMPRESS_SHARED/data/cifar10)")
        npz = tmp_path_factory.mktemp("cifar10") / "cifar10.npz"
        parts = root / "data" / "cifar10"
        subprocess.run([sys.executable, str(parts / "unpack.py"), str(parts), str(npz)], check=True)
    with np.load(npz) as f:
        x = torch.from_numpy(np.ascontiguousarray(f["test_x"].transpose(0, 3, 1, 2)))
        y = torch.from_numpy(f["test_y"].astype(np.int64))
    return x, y
