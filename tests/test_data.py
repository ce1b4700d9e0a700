"""compress.data: every accepted CIFAR-10 form, clear errors, validation split, synthetic data."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from compress.data import DatasetError, ImageData, cifar10, synthetic


def _arrays(n_train=20, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n_train),
        rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n_test),
    )


def _check(data: ImageData, arrays) -> None:
    train_x, train_y, test_x, test_y = arrays
    assert data.train_x.dtype == torch.uint8 and data.train_x.shape == (len(train_x), 3, 32, 32)
    assert data.train_y.dtype == torch.int64
    assert torch.equal(data.train_x, torch.from_numpy(train_x).permute(0, 3, 1, 2))
    assert torch.equal(data.test_x, torch.from_numpy(test_x).permute(0, 3, 1, 2))
    assert data.train_y.tolist() == list(train_y) and data.test_y.tolist() == list(test_y)
    assert data.num_classes == 10


def test_npz_nhwc_and_nchw(tmp_path):
    arrays = _arrays()
    np.savez(tmp_path / "c.npz", train_x=arrays[0], train_y=arrays[1], test_x=arrays[2], test_y=arrays[3])
    data = cifar10(tmp_path / "c.npz")
    _check(data, arrays)
    # recorded by run folders; random arrays in CIFAR's shapes are not CIFAR-10: named after the file
    assert (data.name, data.source) == ("c", str(tmp_path / "c.npz"))
    assert data.classes == tuple(str(i) for i in range(10))
    _check(cifar10(tmp_path), arrays)  # a folder holding exactly one .npz
    nchw = tmp_path / "nchw"
    nchw.mkdir()
    np.savez(nchw / "d.npz", train_x=arrays[0].transpose(0, 3, 1, 2), train_y=arrays[1],
             test_x=arrays[2].transpose(0, 3, 1, 2), test_y=arrays[3])
    _check(cifar10(nchw / "d.npz"), arrays)


def _write_batches(folder, arrays, n_batches=2):
    folder.mkdir(parents=True)
    train_x, train_y, test_x, test_y = arrays
    flat = lambda x: x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # noqa: E731 - CIFAR rows are CHW
    for i, (xs, ys) in enumerate(zip(np.array_split(train_x, n_batches), np.array_split(train_y, n_batches))):
        with open(folder / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump({"data": flat(xs), "labels": [int(v) for v in ys]}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": flat(test_x), "labels": [int(v) for v in test_y]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


def test_cifar_batches_folder_and_parent(tmp_path):
    arrays = _arrays()
    _write_batches(tmp_path / "cifar-10-batches-py", arrays)
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        data = cifar10(root)
        _check(data, arrays)
        assert data.classes == tuple(f"c{i}" for i in range(10))
        assert data.name == "cifar-10-batches-py" and data.source == str(tmp_path / "cifar-10-batches-py")


def test_image_folder_tree(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    expected = {"train": [], "test": []}
    for split, n in (("train", 3), ("test", 2)):
        for c, name in enumerate(("cat", "dog")):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(img).save(tmp_path / split / name / f"{i}.png")
                expected[split].append((img, c))
    data = cifar10(tmp_path)
    assert data.classes == ("cat", "dog")
    assert data.train_x.shape == (6, 3, 32, 32) and data.test_x.shape == (4, 3, 32, 32)
    for x, y, (img, c) in zip(data.train_x, data.train_y, expected["train"]):
        assert torch.equal(x, torch.from_numpy(img).permute(2, 0, 1)) and int(y) == c


def test_missing_dataset_error_says_where_and_what(tmp_path):
    with pytest.raises(DatasetError) as e:
        cifar10(tmp_path / "nowhere")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ValueError)
    msg = str(e.value)
    assert str(tmp_path / "nowhere") in msg and "cifar-10-batches-py" in msg and ".npz" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="looked for"):
        cifar10(tmp_path / "empty")


def test_corrupt_datasets(tmp_path):
    batches = tmp_path / "a" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    (batches / "data_batch_1").write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError, match="corrupt"):
        cifar10(tmp_path / "a")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="corrupt"):
        cifar10(tmp_path / "bad.npz")
    np.savez(tmp_path / "partial.npz", train_x=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(DatasetError, match="test_y"):
        cifar10(tmp_path / "partial.npz")
    np.savez(tmp_path / "float.npz", train_x=np.zeros((2, 32, 32, 3)), train_y=np.zeros(2, int),
             test_x=np.zeros((2, 32, 32, 3)), test_y=np.zeros(2, int))
    with pytest.raises(DatasetError, match="uint8"):
        cifar10(tmp_path / "float.npz")


def test_val_split_is_deterministic_and_disjoint():
    data = synthetic(100, 10, seed=3)
    data = ImageData(data.train_x, torch.arange(100), data.test_x, data.test_y, [str(i) for i in range(100)])
    a, b = data.with_val_split(20, seed=1), data.with_val_split(20, seed=1)
    assert torch.equal(a.val_y, b.val_y) and torch.equal(a.train_y, b.train_y)
    assert len(a.val_y) == 20 and len(a.train_y) == 80
    assert set(a.val_y.tolist()).isdisjoint(a.train_y.tolist())
    assert sorted(a.val_y.tolist() + a.train_y.tolist()) == list(range(100))
    assert not torch.equal(data.with_val_split(20, seed=2).val_y, a.val_y)
    rest, (vx, vy) = data.split_val(20, seed=1)
    assert torch.equal(vy, a.val_y) and rest.val_x is None and torch.equal(rest.train_y, a.train_y)
    with pytest.raises(ValueError):
        data.with_val_split(100)


def test_synthetic_is_learnable_and_deterministic():
    data = synthetic(400, 200, num_classes=10, size=16, seed=0)
    assert data.train_x.shape == (400, 3, 16, 16) and data.train_x.dtype == torch.uint8
    assert torch.equal(data.train_x, synthetic(400, 200, num_classes=10, size=16, seed=0).train_x)
    # The label is recoverable from the mean colour: nearest class centroid is (nearly) always right.
    mean = lambda x: x.float().mean((2, 3))  # noqa: E731
    centroids = torch.stack([mean(data.train_x[data.train_y == c]).mean(0) for c in range(10)])
    pred = torch.cdist(mean(data.test_x), centroids).argmin(1)
    assert (pred == data.test_y).float().mean() > 0.95


def test_download_flag_prefers_local_data(tmp_path):
    # With the data already at root, download=True must not touch the network.
    arrays = _arrays()
    np.savez(tmp_path / "c.npz", train_x=arrays[0], train_y=arrays[1], test_x=arrays[2], test_y=arrays[3])
    _check(cifar10(tmp_path / "c.npz", download=True), arrays)
    _check(cifar10(tmp_path, download=True), arrays)


class _Payload:
    """Unpickling this runs a shell command (the attack a planted batch file makes)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _genuine_batch(x, y, protocol):
    """A batch file in the real format: a dict of the batch label, the labels (a list of int), the
    pixels (uint8 rows of 3072 values, channel-major) and the file names (pickled by Python 2 in the
    original; ``protocol=2`` writes bytes the way Python 3 does it at that protocol)."""
    return pickle.dumps({
        "batch_label": "training batch 1 of 1", "labels": [int(v) for v in y],
        "data": np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), -1)),
        "filenames": [f"img_{i}.png" for i in range(len(x))],
    }, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batch_files_load_without_running_code(tmp_path, protocol):
    arrays = _arrays()
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(_genuine_batch(arrays[0], arrays[1], protocol))
    (folder / "test_batch").write_bytes(_genuine_batch(arrays[2], arrays[3], protocol))
    (folder / "batches.meta").write_bytes(pickle.dumps(
        {"num_cases_per_batch": 20, "label_names": [f"c{i}" for i in range(10)], "num_vis": 3072}, protocol=protocol))
    data = cifar10(tmp_path)
    _check(data, arrays)
    assert data.classes == tuple(f"c{i}" for i in range(10))

    marker = tmp_path / "payload-ran"
    planted = [
        _Payload(marker),                                                     # the whole file
        {"data": _Payload(marker), "labels": [0]},                            # hidden in a value
        {"data": np.array([_Payload(marker)], dtype=object), "labels": [0]},  # in an object array
    ]
    for payload in planted:
        (folder / "test_batch").write_bytes(pickle.dumps(payload, protocol=protocol))
        with pytest.raises(DatasetError) as e:
            cifar10(tmp_path)
        assert not marker.exists(), "the planted batch file ran its payload"
        assert "not a CIFAR-10 batch file" in str(e.value) and "it was not loaded" in str(e.value)
        assert "system" in str(e.value) or "dtype object" in str(e.value)


def test_only_the_real_cifar10_is_called_cifar10(tmp_path):
    rng = np.random.default_rng(0)
    noise = dict(train_x=rng.integers(0, 256, (20, 64, 64, 3), dtype=np.uint8), train_y=rng.integers(0, 10, 20),
                 test_x=rng.integers(0, 256, (10, 64, 64, 3), dtype=np.uint8), test_y=rng.integers(0, 10, 10))
    np.savez(tmp_path / "noise64.npz", **noise)
    data = cifar10(tmp_path / "noise64.npz")
    assert data.name == "noise64" and data.classes == tuple(str(i) for i in range(10))
    # the fingerprint follows the content, not the sizes
    again = cifar10(tmp_path / "noise64.npz")
    assert data.fingerprint() == again.fingerprint()
    other = dict(noise, test_y=(noise["test_y"] + 1) % 10)
    np.savez(tmp_path / "other.npz", **other)
    assert cifar10(tmp_path / "other.npz").fingerprint() != data.fingerprint()


def test_real_cifar10_is_recognised():
    from pathlib import Path

    from compress.data import CIFAR10_CLASSES, CIFAR10_SHA256

    real = Path("/tmp/cifar10.npz")  # rebuilt by ../shared/data/cifar10/unpack.py (checksummed)
    if not real.is_file():
        pytest.skip("the real CIFAR-10 npz is not on this machine")
    data = cifar10(real)
    assert data.fingerprint() == CIFAR10_SHA256
    assert data.name == "CIFAR-10" and data.classes == CIFAR10_CLASSES
    assert cifar10(real).subset(100, 100).fingerprint() != CIFAR10_SHA256


def test_inconsistent_datasets_are_one_line_errors(tmp_path):
    rng = np.random.default_rng(0)
    good = dict(train_x=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), train_y=rng.integers(0, 10, 8),
                test_x=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), test_y=rng.integers(0, 10, 4))
    cases = {
        "test images are 3x64x64 but training images are 3x32x32": dict(
            test_x=rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)),
        "test images are 1x32x32 but training images are 3x32x32": dict(
            test_x=rng.integers(0, 256, (4, 32, 32, 1), dtype=np.uint8)),
        "labels span 0..7 but there are 5 classes; labels must be in 0..4": dict(classes=np.array(["a", "b", "c", "d", "e"]),
                                                          train_y=np.arange(8) % 10, test_y=np.array([9, 0, 1, 2])),
        "train_y must be int64 of length 8": dict(train_y=np.zeros(7, int)),
    }
    for message, change in cases.items():
        np.savez(tmp_path / "bad.npz", **{**good, **change})
        with pytest.raises(DatasetError) as e:
            cifar10(tmp_path / "bad.npz")
        assert message in str(e.value) and str(tmp_path / "bad.npz") in str(e.value) and "\n" not in str(e.value)
