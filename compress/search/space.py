"""What :func:`compress.search.search` searches over, under which budget, and how each candidate is trained.

:class:`SearchSpace` turns one Optuna trial into a list of transform steps (the ``model:`` list of a
recipe), :class:`Budget` says which candidates may be trained at all, and :class:`Proxy` is the short
training run that scores a candidate on a validation split carved from the training set.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..data import ImageData
from ..models import ResNetConfig
from ..recipes import BUDGET_PARAMS, FAST_TRAIN
from ..training import TrainConfig
from ..transforms import compose, transform

__all__ = ["SearchSpace", "Budget", "Proxy", "SE_PLACES", "Steps", "build"]

#: Where squeeze-and-excitation may go: nowhere, after the stem, in every block (:func:`compress.add_se`).
SE_PLACES = ("none", "stem", "blocks")

Steps = list[tuple[str, dict[str, Any]]]
"""Transform steps ``[(name, arguments), ...]``, applied in order (the ``model:`` list of a recipe)."""


def _choices(name: str, values: Any, ok: Any, what: str) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"SearchSpace.{name} must be a non-empty list of {what}, got {values!r}")
    values = tuple(values)
    bad = [v for v in values if not ok(v)]
    if bad:
        raise ValueError(f"SearchSpace.{name}: {bad[0]!r} is not {what}")
    if len(set(values)) != len(values):
        raise ValueError(f"SearchSpace.{name} lists a choice twice: {values!r}")
    return values


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


@dataclass(frozen=True)
class SearchSpace:
    """The choices of a search over a compress ResNet's transforms; a dimension with one choice is fixed.

    - ``stages``: how many stages to keep (the last ones are removed, :func:`compress.remove_stage`);
    - ``blocks``: blocks per stage, chosen per kept stage (:func:`compress.redistribute_blocks`);
    - ``widths``: width factor per kept stage; the stem follows the first stage (:func:`compress.scale_width`);
    - ``kernels``: kernel size ``k`` of both convs of every block, per kept stage (:func:`compress.set_kernels`);
    - ``se``: squeeze-and-excitation placement, any of :data:`SE_PLACES` (:func:`compress.add_se`, with
      ``se_reduction``);
    - ``whiten``: whether to put a frozen ``whiten_kernel`` patch-whitening conv in front of the stem
      (:func:`compress.whiten_stem`); ``(False, True)`` searches it.
    """

    stages: tuple[int, ...] = (2, 3, 4)
    blocks: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    widths: tuple[float, ...] = (0.25, 0.375, 0.5, 0.75, 1.0)
    kernels: tuple[int, ...] = (3, 5)
    se: tuple[str, ...] = SE_PLACES
    whiten: tuple[bool, ...] = (False,)
    se_reduction: int = 16
    whiten_kernel: int = 2

    def __post_init__(self) -> None:
        set_ = lambda name, v: object.__setattr__(self, name, v)  # noqa: E731 - frozen dataclass
        set_("stages", _choices("stages", self.stages, _positive_int, "a positive stage count"))
        set_("blocks", _choices("blocks", self.blocks, _positive_int, "a positive block count"))
        set_("widths", _choices("widths", self.widths, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                                and 0 < v < math.inf, "a positive width factor"))
        set_("kernels", _choices("kernels", self.kernels, lambda v: _positive_int(v) and v % 2 == 1, "an odd kernel size"))
        set_("se", _choices("se", self.se, lambda v: v in SE_PLACES, f"one of {', '.join(SE_PLACES)}"))
        set_("whiten", _choices("whiten", self.whiten, lambda v: isinstance(v, bool), "true or false"))
        for name in ("se_reduction", "whiten_kernel"):
            if not _positive_int(getattr(self, name)):
                raise ValueError(f"SearchSpace.{name} must be a positive integer, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML values; :meth:`from_dict` inverts it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchSpace":
        """A space from :meth:`to_dict`'s form (unknown keys raise ``ValueError`` naming the accepted ones)."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in d if k not in known]
        if unknown:
            raise ValueError(f"search space: unknown key {unknown[0]!r}; accepted keys: {', '.join(known)}")
        return cls(**d)

    def check(self, base: ResNetConfig) -> None:
        """Raise ``ValueError`` if the space asks for more stages than ``base`` has."""
        if max(self.stages) > len(base.stages):
            raise ValueError(f"search space: stages {list(self.stages)} asks for {max(self.stages)} stages but the base "
                             f"model has {len(base.stages)}")

    def sample(self, trial: Any) -> dict[str, Any]:
        """One choice per dimension, asked from an Optuna ``trial`` (fixed dimensions are not asked).

        Per-stage choices are named ``blocks_0``, ``width_0``, ``kernel_0``, ... for the kept stages only.
        """
        def pick(name: str, values: tuple) -> Any:
            return values[0] if len(values) == 1 else trial.suggest_categorical(name, list(values))

        choice: dict[str, Any] = {"stages": pick("stages", self.stages)}
        for i in range(choice["stages"]):
            choice[f"blocks_{i}"] = pick(f"blocks_{i}", self.blocks)
            choice[f"width_{i}"] = pick(f"width_{i}", self.widths)
            choice[f"kernel_{i}"] = pick(f"kernel_{i}", self.kernels)
        choice["se"] = pick("se", self.se)
        choice["whiten"] = pick("whiten", self.whiten)
        return choice

    def steps(self, choice: dict[str, Any], base: ResNetConfig) -> Steps:
        """The transform steps that turn ``base`` into the candidate ``choice`` (from :meth:`sample`).

        Order: remove the last stages, scale widths, set block counts, kernels, SE, whitening. Steps that
        would change nothing are left out.
        """
        n = choice["stages"]
        steps: Steps = [("remove_stage", {"index": i}) for i in range(len(base.stages) - 1, n - 1, -1)]
        factors = [float(choice[f"width_{i}"]) for i in range(n)]
        if any(f != 1.0 for f in factors):
            steps.append(("scale_width", {"factor": [factors[0]] + factors}))
        blocks = [int(choice[f"blocks_{i}"]) for i in range(n)]
        if blocks != base.depths[:n]:
            steps.append(("redistribute_blocks", {"blocks": blocks}))
        kernels = [[int(choice[f"kernel_{i}"])] * 2 for i in range(n)]
        have = [{tuple(b.kernels) for b in s.blocks} for s in base.stages[:n]]
        if any(h != {tuple(k)} for h, k in zip(have, kernels)):
            steps.append(("set_kernels", {"kernels": kernels}))
        if choice["se"] != "none":
            steps.append(("add_se", {"where": choice["se"], "reduction": self.se_reduction}))
        if choice["whiten"]:
            steps.append(("whiten_stem", {"kernel": self.whiten_kernel}))
        return steps


def build(base: nn.Module, steps: Steps, seed: int = 0) -> nn.Module:
    """``steps`` applied in order to ``base`` (which is not changed), with torch's RNG seeded first (new
    layers get the same initial weights every time). A ``whiten_stem`` step builds the structure only
    (as in a recipe); compute its weights with :func:`compress.transforms.init_whitening`."""
    torch.manual_seed(seed)
    return compose(*[transform(name, **args) for name, args in steps])(base)


@dataclass(frozen=True)
class Budget:
    """What a candidate may cost: trainable parameters, FLOPs (fvcore, one 32x32 image) and measured
    latency (median ms per call of ``latency_batch`` images on ``latency_device``, :func:`compress.measure_latency`).

    ``None`` leaves a quantity free. Params and FLOPs are counted and latency measured before any
    training: a candidate over budget is never trained. ``latency_repeats`` and ``latency_min_block_s``
    set how precisely latency is measured (see :func:`compress.measure_latency`).
    """

    params: int | None = BUDGET_PARAMS
    flops: int | None = None
    latency_ms: float | None = None
    latency_batch: int = 1
    latency_device: str = "cpu"
    latency_repeats: int = 10
    latency_min_block_s: float = 0.1

    def __post_init__(self) -> None:
        for name in ("params", "flops"):
            v = getattr(self, name)
            if v is not None and not _positive_int(v):
                raise ValueError(f"Budget.{name} must be a positive integer or None, got {v!r}")
        if self.latency_ms is not None and not (isinstance(self.latency_ms, (int, float)) and not
                                                isinstance(self.latency_ms, bool) and 0 < self.latency_ms < math.inf):
            raise ValueError(f"Budget.latency_ms must be a positive number of milliseconds or None, got {self.latency_ms!r}")
        for name in ("latency_batch", "latency_repeats"):
            if not _positive_int(getattr(self, name)):
                raise ValueError(f"Budget.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not (isinstance(self.latency_min_block_s, (int, float)) and self.latency_min_block_s > 0):
            raise ValueError(f"Budget.latency_min_block_s must be a positive number, got {self.latency_min_block_s!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return dataclasses.asdict(self)

    def over(self, params: int, flops: int, latency_ms: float | None = None) -> str | None:
        """Why a candidate of these costs is over budget (one line), or ``None`` if it is within it."""
        if self.params is not None and params > self.params:
            return f"{params:,} params > budget {self.params:,}"
        if self.flops is not None and flops > self.flops:
            return f"{flops:,} FLOPs > budget {self.flops:,}"
        if self.latency_ms is not None and latency_ms is not None and latency_ms > self.latency_ms:
            return f"{latency_ms:.3f} ms > budget {self.latency_ms:g} ms (batch {self.latency_batch})"
        return None

    def slack(self, params: int, flops: int, latency_ms: float | None) -> dict[str, float]:
        """Optuna constraint values: cost / budget - 1 per bounded quantity (feasible when <= 0)."""
        out = {}
        for name, value, limit in (("params", params, self.params), ("flops", flops, self.flops),
                                   ("latency_ms", latency_ms, self.latency_ms)):
            if limit is not None:  # not measured (rejected before): unknown, counted as feasible
                out[name] = 0.0 if value is None else value / limit - 1.0
        return out


@dataclass(frozen=True)
class Proxy:
    """The short training run that scores a candidate (default: 3 epochs on 5,000 training images).

    ``val_images`` images are carved from the training set with ``seed`` (never the test set: test images
    never choose an architecture), then the first ``train_images`` of the rest are trained on (``None``:
    all of them). Training is the shared fast schedule (:data:`compress.recipes.FAST_TRAIN`) laid over
    ``epochs``, without test-time augmentation, seeded with ``seed``; ``train`` overrides its top-level
    fields (e.g. ``{"batch_size": 256}``).
    """

    epochs: int = 3
    train_images: int | None = 5000
    val_images: int = 1000
    seed: int = 0
    train: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "val_images"):
            if not _positive_int(getattr(self, name)):
                raise ValueError(f"Proxy.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.train_images is not None and not _positive_int(self.train_images):
            raise ValueError(f"Proxy.train_images must be a positive integer or None, got {self.train_images!r}")
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0):
            raise ValueError(f"Proxy.seed must be an integer >= 0, got {self.seed!r}")
        self.config()  # a bad override fails here, with the trainer's message

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return dataclasses.asdict(self)

    def config(self) -> TrainConfig:
        """The :class:`~compress.training.TrainConfig` every candidate is trained with."""
        d = {**FAST_TRAIN, "tta": "none", "tta_epochs": "all", "seed": self.seed, **(self.train or {})}
        d["epochs"] = self.epochs
        return TrainConfig.from_dict(d, "proxy train")

    def data(self, data: ImageData) -> ImageData:
        """The proxy's data: training images and, in the place of the test split, the validation split
        carved from ``data``'s training set (``data``'s test images are left out)."""
        n = data.train_x.shape[0]
        if not self.val_images < n:
            raise ValueError(f"Proxy.val_images {self.val_images:,} leaves no training images of the {n:,}")
        carved = data.with_val_split(self.val_images, self.seed)
        have = carved.train_x.shape[0]
        if self.train_images is not None and self.train_images > have:
            raise ValueError(f"Proxy.train_images {self.train_images:,} is more than the {have:,} training images left "
                             f"after carving {self.val_images:,} for validation")
        k = self.train_images or have
        return ImageData(
            carved.train_x[:k], carved.train_y[:k], carved.val_x, carved.val_y, data.classes,
            name=f"{data.name} search proxy", source=f"{data.source}: {k} training images, validation split of "
            f"{self.val_images} training images (seed {self.seed}); no test images",
        )

