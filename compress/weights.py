"""Trained weights by name: the checkpoints published by others that the recipes start from.

Each entry of :data:`PUBLISHED` names one file committed to its author's repository: the raw file's
URL, its SHA-256, its layout (see :func:`compress.models.from_checkpoint`), its licence and what it
measured. :func:`fetch` gives the local path of a file, as torchvision and timm do with theirs::

    path = compress.weights.fetch("resnet56-4bfd9763")   # downloaded once into torch's hub cache
    r56 = compress.models.from_checkpoint(path)

A file is looked for, in order, in ``weights_dir=`` (the CLI's ``--weights-dir``), in the folder
``$COMPRESS_WEIGHTS`` names (already-downloaded files, for machines without internet) and in
``<torch.hub.get_dir()>/checkpoints``; only then is it downloaded there
(``torch.hub.download_url_to_file``, with its progress bar and the hash checked). A file whose SHA-256
is not the published one is refused wherever it was found.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

__all__ = ["Published", "PUBLISHED", "Weights", "WeightsNotFoundError", "fetch", "find_local", "lookup", "sha256_of"]

_AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
_EFFICIENT = "https://github.com/Nikunj-Gupta/Efficient_ResNets/raw/b10daac/summaries/"


@dataclass(frozen=True)
class Published:
    """One published checkpoint: its file name, where it is downloaded from, its SHA-256 and layout,
    its licence, its parameter count and the top-1 CIFAR-10 test accuracy (percent) it measures."""

    file: str
    url: str
    sha256: str
    layout: str
    licence: str
    params: int
    accuracy: float

    @property
    def name(self) -> str:
        """The name it is fetched by: the file name without its suffix."""
        return Path(self.file).stem


PUBLISHED: dict[str, Published] = {p.name: p for p in (
    Published("resnet20-12fca82f.th", _AKAMASTER + "resnet20-12fca82f.th",
              "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8", "option_a",
              "BSD-2-Clause (akamaster/pytorch_resnet_cifar10)", 269_722, 91.73),
    Published("resnet56-4bfd9763.th", _AKAMASTER + "resnet56-4bfd9763.th",
              "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367", "option_a",
              "BSD-2-Clause (akamaster/pytorch_resnet_cifar10)", 853_018, 93.39),
    Published("report003-b2x2-c64-k3.pth", _EFFICIENT + "good_ResNet2_num_blocks2x2_num_channels64_conv3/ckpt.pth",
              "f90833b5fa5d04edd08195c8e9ca0b00a72b347bf153c01996b820b86f9c5e39", "report003",
              "MIT (Nikunj-Gupta/Efficient_ResNets)", 676_682, 93.89),
    Published("report003-b2x2x1-c32-k3.pth", _EFFICIENT + "good_ResNet3_num_blocks2x2x1_num_channels32_conv3/ckpt.pth",
              "bf43db3d3490efe24698698b7b37e638bc083532b85dc113b1c688e2cab44014", "report003",
              "MIT (Nikunj-Gupta/Efficient_ResNets)", 401_194, 92.75),
    Published("report003-b2x1x1x1-c16-k3.pth", _EFFICIENT + "good_ResNet4_num_blocks2x1x1x1_num_channels16/ckpt.pth",
              "dd0ba3fc217199a6f027c93eaaed711a9781d01f348487decc2439f35878235f", "report003",
              "MIT (Nikunj-Gupta/Efficient_ResNets)", 313_498, 91.74),
)}


class WeightsNotFoundError(FileNotFoundError):
    """A published file is neither on this machine nor downloadable; the message says where it was looked for."""


def lookup(name: str) -> Published:
    """The :data:`PUBLISHED` entry of ``name`` (with or without the file suffix); a ``ValueError`` lists the names."""
    entry = PUBLISHED.get(Path(name).stem if Path(name).suffix in (".th", ".pth") else name)
    if entry is None:
        raise ValueError(f"no published weights named {name!r}; known: {', '.join(PUBLISHED)}")
    return entry


def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in 1 MiB pieces (never the whole file in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _folders(weights_dir: str | os.PathLike | None) -> list[Path]:
    """Where files are looked for: ``weights_dir``, ``$COMPRESS_WEIGHTS``, torch's hub cache."""
    folders = [Path(weights_dir).expanduser()] if weights_dir else []
    if os.environ.get("COMPRESS_WEIGHTS"):
        folders.append(Path(os.environ["COMPRESS_WEIGHTS"]).expanduser())
    return folders + [_cache()]


def _cache() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _checked(entry: Published, path: Path) -> Path:
    if sha256_of(path) != entry.sha256:
        raise ValueError(f"{path} is not the published {entry.file}: its SHA-256 differs from {entry.sha256}; "
                         "refusing a different file (delete it to download the published one)")
    return path


def find_local(name: str, weights_dir: str | os.PathLike | None = None) -> Path | None:
    """The path of the published file ``name`` on this machine (hash checked), or ``None``; never downloads."""
    entry = lookup(name)
    for folder in _folders(weights_dir):
        if (folder / entry.file).is_file():
            return _checked(entry, folder / entry.file)
    return None


def fetch(name: str, weights_dir: str | os.PathLike | None = None, *, progress: bool = True) -> Path:
    """The local path of the published file ``name``: found as :func:`find_local` finds it, else downloaded
    once into ``<torch.hub.get_dir()>/checkpoints`` (progress bar, SHA-256 checked). Without a network and
    without the file it raises :class:`WeightsNotFoundError`, naming the folders it looked in."""
    entry = lookup(name)
    found = find_local(name, weights_dir)
    if found is not None:
        return found
    target = _cache() / entry.file
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(entry.url, str(target), hash_prefix=entry.sha256, progress=progress)
    except (urllib.error.URLError, OSError) as e:
        where = ", ".join(str(f) for f in _folders(weights_dir))
        reason = getattr(e, "reason", None) or e.strerror or e
        raise WeightsNotFoundError(f"weights {entry.file} are not in {where} and cannot be downloaded from {entry.url} "
                                   f"({reason}); put the file in a folder and pass it as $COMPRESS_WEIGHTS "
                                   "or --weights-dir") from e
    except RuntimeError as e:  # download_url_to_file's hash check: nothing is left at target
        raise ValueError(f"{entry.url} did not give the published {entry.file}: {e}") from e
    return target


@dataclass(frozen=True)
class Weights:
    """A recipe's trained starting point: the published checkpoint ``name`` (:data:`PUBLISHED`; found or
    downloaded by :func:`fetch`), or a file ``path`` (relative to the recipe file): a trained checkpoint
    in a ``layout`` :func:`compress.models.from_checkpoint` imports, or a :func:`compress.save` file.
    ``sha256``, when given, is checked before the file is read (a published file's is always checked)."""

    path: str | None = None
    sha256: str | None = None
    layout: Literal["auto", "option_a", "kuangliu", "report003"] = "auto"
    name: str | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.name is None):
            raise ValueError("weights takes either name: (a published checkpoint, one of "
                             f"{', '.join(PUBLISHED)}) or path: (a file), not both and not neither")
        if self.name is not None:
            lookup(self.name)  # an unknown name fails when the recipe is read
        if self.sha256 is not None and (len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256)):
            raise ValueError(f"weights.sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if self.name is not None and self.sha256 not in (None, lookup(self.name).sha256):
            raise ValueError(f"weights.sha256 {self.sha256} is not the SHA-256 of the published {self.name!r} "
                             f"({lookup(self.name).sha256}); leave it out")

    @property
    def expected_sha256(self) -> str | None:
        """The SHA-256 the file must have: the published one, else ``sha256`` (``None``: not checked)."""
        return lookup(self.name).sha256 if self.name is not None else self.sha256

    @property
    def label(self) -> str:
        """A short name for tables: the published name, else the file name."""
        return self.name if self.name is not None else Path(self.path).name

    def locate(self, folder: Path | None = None, *, download: bool = False) -> Path:
        """Where the file is. A published ``name``: its local copy (:func:`find_local`), else, with
        ``download``, :func:`fetch`'s (which raises if it cannot), else where it would be downloaded to.
        A ``path``: relative to ``folder`` (the recipe file's), or, if that is not there and
        ``$COMPRESS_WEIGHTS`` names a folder, the file of that name in it."""
        if self.name is not None:
            if download:
                return fetch(self.name)
            return find_local(self.name) or _cache() / lookup(self.name).file
        p = Path(self.path).expanduser()
        if not p.is_absolute() and folder is not None:
            p = folder / p
        elsewhere = os.environ.get("COMPRESS_WEIGHTS")
        if not p.is_file() and elsewhere and (Path(elsewhere) / p.name).is_file():
            return Path(elsewhere) / p.name
        return p
