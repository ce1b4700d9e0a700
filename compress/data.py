"""Image datasets as whole uint8 tensors: CIFAR-10 (torchvision or local files) and a learnable toy set.

The trainer keeps the whole dataset on the device as uint8 NCHW and augments it there in batches, so
a dataset here is just five tensors and a list of class names (:class:`ImageData`)::

    from compress.data import cifar10, synthetic
    data = cifar10("~/data")                         # cifar-10-batches-py, its parent, an .npz or a folder tree
    data = cifar10("~/data", download=True)          # if not there: torchvision.datasets.CIFAR10 downloads it
    train, val = data.split_val(5000, seed=0)        # deterministic validation split
    toy = synthetic(512, 256)                        # learnable, no files needed

Accepted local forms (``root`` may point at any of them):

- the standard ``cifar-10-batches-py`` folder (``data_batch_1..5``, ``test_batch``, ``batches.meta``) or
  a folder that contains it (what ``torchvision.datasets.CIFAR10(root)`` uses);
- an ``.npz`` file with ``train_x, train_y, test_x, test_y`` (NHWC or NCHW uint8) and optional ``classes``;
- an image-folder tree ``train/<class>/*.png|jpg|jpeg`` and ``test/<class>/*`` (classes sorted by name).

Batch files are pickles; they are read with an unpickler that builds only what the real files hold
(dicts, lists, strings, bytes, integers and integer numpy arrays) and refuses anything else, so a
planted file cannot run code. A dataset is called ``"CIFAR-10"`` only when its content is the real
CIFAR-10 (the :meth:`ImageData.fingerprint` of the 50,000 + 10,000 images and labels in the official
order, which batch files, torchvision and ``../shared/data/cifar10`` all give); anything else is named
after its file or folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

__all__ = ["ImageData", "DatasetError", "cifar10", "synthetic", "CIFAR10_CLASSES"]

#: :meth:`ImageData.fingerprint` of the real CIFAR-10 (50,000 train / 10,000 test images, official order).
CIFAR10_SHA256 = "c71215d4a278879e03c3d1ace2851530d63bb4fa215c4a5e4c112146703003de"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_ACCEPTED = (
    "a 'cifar-10-batches-py' folder (data_batch_1..5, test_batch) or a folder containing it; "
    "an .npz file with train_x, train_y, test_x, test_y (uint8 NHWC or NCHW); "
    "an image-folder tree train/<class>/*.png|jpg and test/<class>/*; "
    "or download=True to fetch CIFAR-10 through torchvision"
)


class DatasetError(FileNotFoundError, ValueError):
    """A dataset is missing or unreadable. The message says where it looked and which forms are accepted.

    It is both a :class:`FileNotFoundError` and a :class:`ValueError`, so either ``except`` catches it.
    """


@dataclass
class ImageData:
    """A classification dataset as tensors: uint8 NCHW images and int64 labels.

    ``val_x``/``val_y`` are ``None`` unless a validation split was carved with :meth:`with_val_split`.
    ``name`` says what the data is (``"CIFAR-10"``, ``"synthetic"``) and ``source`` where it was read from;
    run folders and reports record both.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    name: str = "unnamed"
    source: str = ""

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        for name in ("train", "test", "val"):
            x, y = getattr(self, f"{name}_x"), getattr(self, f"{name}_y")
            if x is None and y is None and name == "val":
                continue
            if x is None or y is None:
                raise ValueError(f"ImageData: {name}_x and {name}_y must both be given")
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(f"ImageData: {name}_x must be uint8 NCHW, got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(f"ImageData: {name}_y must be int64 of length {x.shape[0]}, got {y.dtype} {tuple(y.shape)}")
            if x.shape[1:] != self.train_x.shape[1:]:
                raise ValueError(f"ImageData: {name} images are {_chw(x)} but training images are {_chw(self.train_x)}; "
                                 "every split must have the same channels and size")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise ValueError(f"ImageData: {name} labels span {int(y.min())}..{int(y.max())} but there are "
                                 f"{len(self.classes)} classes; labels must be in 0..{len(self.classes) - 1}")

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    def fingerprint(self) -> str:
        """SHA-256 of the images and labels (train, then val if split, then test): equal for equal content.

        Run folders store it to notice other data of the same size; the real CIFAR-10 has
        :data:`CIFAR10_SHA256`.
        """
        h = hashlib.sha256()
        names = ["train_x", "train_y"] + (["val_x", "val_y"] if self.val_x is not None else []) + ["test_x", "test_y"]
        for name in names:
            t = getattr(self, name).detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.numpy())
        return h.hexdigest()

    def with_val_split(self, size: int, seed: int = 0) -> "ImageData":
        """A copy whose ``val_x/val_y`` are ``size`` training images picked with ``seed``, removed from train.

        The pick depends only on ``size``, ``seed`` and the training set, never on global RNG state.
        """
        n = self.train_x.shape[0]
        if not 0 < size < n:
            raise ValueError(f"validation split size must be in 1..{n - 1}, got {size}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        val, train = perm[:size].sort().values, perm[size:].sort().values
        return dataclasses.replace(
            self,
            train_x=self.train_x[train], train_y=self.train_y[train],
            val_x=self.train_x[val], val_y=self.train_y[val],
        )

    def split_val(self, size: int, seed: int = 0) -> tuple["ImageData", tuple[torch.Tensor, torch.Tensor]]:
        """``(data without the split, (val_x, val_y))``; same pick as :meth:`with_val_split`."""
        d = self.with_val_split(size, seed)
        return dataclasses.replace(d, val_x=None, val_y=None), (d.val_x, d.val_y)

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "ImageData":
        """The first ``n_train`` training and ``n_test`` test images (for smoke runs and benchmarks)."""
        return dataclasses.replace(
            self,
            train_x=self.train_x[:n_train], train_y=self.train_y[:n_train],
            test_x=self.test_x[:n_test], test_y=self.test_y[:n_test],
        )

    def __repr__(self) -> str:
        val = f", val {tuple(self.val_x.shape)}" if self.val_x is not None else ""
        return (
            f"ImageData({self.name}: train {tuple(self.train_x.shape)}, test {tuple(self.test_x.shape)}{val}, "
            f"{self.num_classes} classes)"
        )


def _chw(x: torch.Tensor) -> str:
    return "x".join(str(d) for d in x.shape[1:])


def _dataset(train_x, train_y, test_x, test_y, classes, where: str, fallback_name: str) -> ImageData:
    """An ImageData named ``"CIFAR-10"`` (with its class names) if it is the real CIFAR-10, else
    ``fallback_name``; its consistency errors become :class:`DatasetError` naming ``where``."""
    try:
        data = ImageData(train_x, train_y, test_x, test_y, classes, name=fallback_name, source=where)
        if data.fingerprint() == CIFAR10_SHA256:
            data = dataclasses.replace(data, classes=CIFAR10_CLASSES, name="CIFAR-10")
    except ValueError as e:
        raise DatasetError(f"{where}: {str(e).removeprefix('ImageData: ')}") from e
    return data


# ---------------------------------------------------------------------------------------------
def cifar10(root: str | os.PathLike, download: bool = False) -> ImageData:
    """Load CIFAR-10 from ``root`` (any accepted local form); if none is there and ``download=True``,
    download it into ``root`` through ``torchvision.datasets.CIFAR10``.

    Raises :class:`DatasetError` if nothing usable is found or the files are corrupt.
    """
    root = Path(root).expanduser()
    try:
        return _local(root)
    except DatasetError as e:
        if not (download and getattr(e, "missing", False)):
            raise
    return _from_torchvision(root)


def _not_found(message: str) -> DatasetError:
    """A DatasetError marked as 'nothing there' (as opposed to a corrupt dataset)."""
    e = DatasetError(message)
    e.missing = True  # type: ignore[attr-defined]
    return e


def _local(root: Path) -> ImageData:
    if root.is_file():
        if root.suffix == ".npz":
            return _from_npz(root)
        raise DatasetError(f"{root} is a file but not an .npz; CIFAR-10 is accepted as {_ACCEPTED}")
    if not root.exists():
        raise _not_found(f"no dataset at {root} (path does not exist); CIFAR-10 is accepted as {_ACCEPTED}")
    looked = []
    for batches in (root, root / "cifar-10-batches-py"):
        looked.append(str(batches / "data_batch_1"))
        if (batches / "data_batch_1").is_file():
            return _from_batches(batches)
    looked.append(str(root / "train") + "/<class>/")
    if (root / "train").is_dir() and (root / "test").is_dir():
        return _from_folders(root)
    npz = sorted(root.glob("*.npz"))
    looked.append(str(root / "*.npz"))
    if len(npz) == 1:
        return _from_npz(npz[0])
    raise _not_found(f"no CIFAR-10 found under {root} (looked for {', '.join(looked)}); accepted: {_ACCEPTED}")


def _from_torchvision(root: Path) -> ImageData:
    from torchvision.datasets import CIFAR10  # lazy: torchvision's import is slow; only a download needs it

    created = not root.exists()
    try:
        train = CIFAR10(str(root), train=True, download=True)
        test = CIFAR10(str(root), train=False, download=True)
    except Exception as e:  # noqa: BLE001 - network or integrity failure
        if created:  # leave no empty or half-downloaded folder that a later lookup would take for data
            shutil.rmtree(root, ignore_errors=True)
        raise DatasetError(f"could not download CIFAR-10 to {root} ({e}); offline, use one of: {_ACCEPTED}") from e
    return ImageData(
        _images(train.data, "torchvision train"), _labels(train.targets, "torchvision train"),
        _images(test.data, "torchvision test"), _labels(test.targets, "torchvision test"),
        tuple(train.classes), name="CIFAR-10", source=f"torchvision download into {root}",
    )


def _int_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.kind not in "ui":
        raise pickle.UnpicklingError(f"it holds a numpy array of dtype {dtype}; CIFAR-10 batch files hold integers only")
    return dtype


def _latin1(text: str, encoding: str = "utf-8") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"it encodes bytes as {encoding!r}; pickle writes them as latin1")
    return text.encode("latin1")


def _safe_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR-10 batch file may name: numpy's array rebuilders (under their numpy 1
    and 2 module names), the array class, integer dtypes, and the bytes codec of protocol-2 pickles."""
    reconstruct = np.ndarray((0,), np.uint8).__reduce__()[0]  # numpy's own function, whatever its module
    frombuffer = np.ndarray((1,), np.uint8).__reduce_ex__(5)[0]

    def from_buffer(buffer, dtype, shape, order):
        return frombuffer(buffer, _int_dtype(dtype), shape, order)

    found: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _int_dtype,
                                            ("_codecs", "encode"): _latin1}
    for core in ("numpy.core", "numpy._core"):
        found[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        found[(f"{core}.numeric", "_frombuffer")] = from_buffer
    return found


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 batch files without running code: any global outside :func:`_safe_globals` is refused."""

    def find_class(self, module: str, name: str) -> object:
        allowed = _safe_globals().get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"it references {module}.{name}, which CIFAR-10 batch files never contain")
        return allowed


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = _BatchUnpickler(f, encoding="latin1").load()
    except FileNotFoundError as e:
        raise DatasetError(f"missing CIFAR-10 batch file {path}; accepted: {_ACCEPTED}") from e
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt (or planted) file
        raise DatasetError(f"not a CIFAR-10 batch file: {path} ({type(e).__name__}: {e}); it was not loaded") from e
    if not isinstance(d, dict):
        raise DatasetError(f"not a CIFAR-10 batch file: {path} holds a {type(d).__name__}, not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def _from_batches(folder: Path) -> ImageData:
    def load(names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for name in names:
            d = _unpickle(folder / name)
            try:
                x, y = d["data"], np.asarray(d["labels"])
                if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
                    raise ValueError(f"'data' must be a uint8 array of rows of 3072 pixels, got "
                                     f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
                if len(y) != len(x):
                    raise ValueError(f"{len(x)} images but {len(y)} labels")
                xs.append(x.reshape(-1, 3, 32, 32))
                ys.append(y)
            except (KeyError, ValueError, TypeError) as e:
                raise DatasetError(f"corrupt CIFAR-10 batch file {folder / name} ({type(e).__name__}: {e})") from e
        return _images(np.concatenate(xs), str(folder)), _labels(np.concatenate(ys), str(folder))

    train_names = sorted(p.name for p in folder.glob("data_batch_*"))
    train_x, train_y = load(train_names)
    test_x, test_y = load(["test_batch"])
    classes = CIFAR10_CLASSES
    if (folder / "batches.meta").is_file():
        names = _unpickle(folder / "batches.meta").get("label_names", CIFAR10_CLASSES)
        classes = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)
    return _dataset(train_x, train_y, test_x, test_y, classes, str(folder), folder.name)


def _from_npz(path: Path) -> ImageData:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("train_x", "train_y", "test_x", "test_y", "classes") if k in f.files}
            present = list(f.files)
    except Exception as e:  # noqa: BLE001 - zip/format errors
        raise DatasetError(f"corrupt .npz dataset {path} ({type(e).__name__}: {e}); accepted: {_ACCEPTED}") from e
    missing = [k for k in ("train_x", "train_y", "test_x", "test_y") if k not in arrays]
    if missing:
        raise DatasetError(f"{path} lacks arrays {missing} (has {sorted(present)[:10]}); accepted: {_ACCEPTED}")
    train_y, test_y = _labels(arrays["train_y"], str(path)), _labels(arrays["test_y"], str(path))
    n = int(max([int(y.max()) for y in (train_y, test_y) if len(y)], default=-1)) + 1
    classes = tuple(str(c) for c in np.atleast_1d(arrays["classes"])) if "classes" in arrays else (
        tuple(str(i) for i in range(n))  # named after CIFAR-10's classes only if it is CIFAR-10 (_dataset)
    )
    return _dataset(_images(arrays["train_x"], str(path)), train_y, _images(arrays["test_x"], str(path)), test_y,
                    classes, str(path), path.stem)


def _from_folders(root: Path) -> ImageData:
    from PIL import Image  # lazy: only image-folder trees need PIL

    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"{root / 'train'} has no class folders; accepted: {_ACCEPTED}")

    def load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for i, name in enumerate(classes):
            files = sorted(p for p in (root / split / name).glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
            for file in files:
                try:
                    with Image.open(file) as im:
                        xs.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
                except Exception as e:  # noqa: BLE001 - unreadable image
                    raise DatasetError(f"corrupt image {file} ({type(e).__name__}: {e})") from e
                ys.append(i)
        if not xs:
            raise DatasetError(f"no images (*.png, *.jpg) under {root / split}/<class>/; accepted: {_ACCEPTED}")
        shapes = {x.shape for x in xs}
        if len(shapes) != 1:
            raise DatasetError(f"images under {root / split} have different sizes {sorted(shapes)[:3]}")
        return _images(np.stack(xs), str(root / split)), _labels(ys, str(root / split))

    extra = sorted(p.name for p in (root / "test").iterdir() if p.is_dir() and p.name not in classes)
    if extra:
        raise DatasetError(f"{root / 'test'} has classes {extra} that {root / 'train'} lacks")
    train_x, train_y = load("train")
    test_x, test_y = load("test")
    return _dataset(train_x, train_y, test_x, test_y, tuple(classes), str(root), root.name)


def _images(x: np.ndarray, where: str) -> torch.Tensor:
    """uint8 NHWC or NCHW (3 or 1 channels) -> contiguous uint8 NCHW tensor."""
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise DatasetError(f"images in {where} must be uint8 with 4 dims (NHWC or NCHW), got {x.dtype} {x.shape}")
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.shape[1] not in (1, 3):
        raise DatasetError(f"images in {where} have no channel axis of size 1 or 3: shape {x.shape}")
    return torch.from_numpy(np.ascontiguousarray(x))


def _labels(y, where: str) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise DatasetError(f"labels in {where} must be a 1-D array of non-negative integers, got {y.dtype} {y.shape}")
    return torch.from_numpy(y.astype(np.int64))


# ---------------------------------------------------------------------------------------------
def synthetic(n_train: int, n_test: int, num_classes: int = 10, size: int = 32, seed: int = 0) -> ImageData:
    """A learnable toy dataset: each class has its own mean colour; images are that colour plus noise.

    The label is recoverable from the mean colour of an image, which flips and crops keep, so it is
    useful for checking that augmentations keep images and labels aligned. Deterministic in ``seed``.
    """
    g = torch.Generator().manual_seed(seed)
    # Class colours spread over the RGB cube, far enough apart to be separable under noise.
    palette = torch.randperm(max(num_classes, 27), generator=g)[:num_classes]
    levels = torch.tensor([40.0, 128.0, 216.0])
    colours = torch.stack([levels[palette % 3], levels[(palette // 3) % 3], levels[(palette // 9) % 3]], 1)
    colours += torch.rand(num_classes, 3, generator=g) * 20 - 10

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(num_classes, (n,), generator=g)
        noise = torch.randn(n, 3, size, size, generator=g) * 24
        x = (colours[y][:, :, None, None] + noise).round().clamp(0, 255).to(torch.uint8)
        return x, y

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    classes = tuple(f"class{i}" for i in range(num_classes))
    return ImageData(train_x, train_y, test_x, test_y, classes, name="synthetic", source=f"compress.data.synthetic(seed={seed})")
