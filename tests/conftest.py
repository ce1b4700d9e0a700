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
