"""Plain config objects for training: one :class:`TrainConfig` describes a whole run.

Every field maps one-to-one onto a recipe's ``train:`` section (YAML), so a report's setup is written
down as data, never as code per paper. Defaults are the baseline of the reports (kuangliu's
ResNet-18 on CIFAR-10: SGD 0.1/0.9/5e-4, cosine over 200 epochs, batch 128, crop + flip).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from .._schema import OMIT_DEFAULT, from_dict, to_dict
# re-exported here, where they were defined before: the statistics and TTA levels live below training
from ..normalization import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from ..tta import TTA_LEVELS

__all__ = [
    "OptimizerConfig",
    "ScheduleConfig",
    "AugmentStep",
    "NormalizeConfig",
    "MixupConfig",
    "ClipConfig",
    "LookaheadConfig",
    "EarlyStoppingConfig",
    "ValSplitConfig",
    "DistillConfig",
    "TrainConfig",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_SEED",
    "TTA_LEVELS",
    "AUGMENT_PARAMS",
    "check_step",
]

#: Seeds are 32-bit (numpy's range): the trainer derives per-epoch seeds from them (``seed * 100_003 + epoch``),
#: which must stay inside the 64 bits torch's generators take.
MAX_SEED = 2**32 - 1


def _require(ok: bool, name: str, value: Any, accepted: str) -> None:
    """Range checks run when a config is built (so loading a recipe, and ``--dry-run``, catch them)."""
    if not ok:
        raise ValueError(f"{name} must be {accepted}, got {value!r}")


def _number(x: Any, lo: float, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = True) -> bool:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(x) or math.isinf(x):
        return False
    return (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)


def _count(x: Any, lo: int = 1) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= lo


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer and all its arguments. ``name``: sgd, adam, adamw or rmsprop.

    ``momentum``/``nesterov`` apply to SGD (``momentum`` also to RMSprop), ``betas``/``eps`` to Adam(W),
    ``alpha``/``eps`` to RMSprop.

    ``decoupled`` (SGD only) gives ``lr`` and ``weight_decay`` per 1024 training examples, independent of
    the batch size and the momentum: for a gradient that stays constant, every 1024 examples move the
    weights by ``lr`` times that gradient and shrink them by the fraction ``weight_decay`` (both times the
    schedule's factor), whatever ``batch_size`` and ``momentum`` are. So a change of batch size or
    momentum needs no re-tuning. (torch's own SGD is given ``lr * batch/1024 * (1 - momentum)`` and
    ``weight_decay / lr``.) ``bias_lr_scale`` multiplies the learning rate of BatchNorm biases (their
    weight decay per step stays that of the other parameters), the parameter groups airbench uses.
    """

    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    alpha: float = 0.99
    decoupled: bool = field(default=False, metadata=OMIT_DEFAULT)
    bias_lr_scale: float = field(default=1.0, metadata=OMIT_DEFAULT)

    def __post_init__(self) -> None:
        _require(_number(self.lr, 0), "lr", self.lr, "a number >= 0")
        _require(_number(self.bias_lr_scale, 0, lo_open=True), "bias_lr_scale", self.bias_lr_scale, "a number > 0")
        _require(not self.decoupled or self.name == "sgd", "decoupled", self.decoupled,
                 "false unless the optimizer is sgd (lr and weight decay per 1024 examples are defined for SGD)")
        _require(_number(self.momentum, 0, 1), "momentum", self.momentum, "in [0, 1)")
        _require(_number(self.weight_decay, 0), "weight_decay", self.weight_decay, "a number >= 0")
        _require(len(self.betas) == 2 and all(_number(b, 0, 1) for b in self.betas), "betas", self.betas,
                 "two numbers in [0, 1)")
        _require(_number(self.eps, 0, lo_open=True), "eps", self.eps, "a number > 0")
        _require(_number(self.alpha, 0, 1, hi_open=False), "alpha", self.alpha, "in [0, 1]")
        _require(not (self.name == "sgd" and self.nesterov and self.momentum == 0), "momentum", self.momentum,
                 "> 0 with nesterov: true")


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule. ``name``: constant, cosine, step, cosine_restarts, onecycle or linear.

    - cosine: CosineAnnealingLR(T_max=``t_max`` or the run's epochs, eta_min).
    - step: StepLR(step_size, gamma).
    - cosine_restarts: CosineAnnealingWarmRestarts(T_0=``t_0``, T_mult=``t_mult``, eta_min).
    - onecycle: OneCycleLR(max_lr = optimizer lr, pct_start, total = the run's length).
    - linear: a linear warm-up from ``start_factor`` x lr to lr over the first ``pct_start`` of the run,
      then a linear decay to ``end_factor`` x lr at its end (airbench's schedule; step it per ``step``).
    ``warmup_epochs`` adds a linear warm-up from 0 in front of any schedule. ``interval`` says whether
    the schedule steps once per ``epoch`` (as the reports' code did) or once per optimizer ``step``
    (then ``t_max``, ``step_size``, ``t_0`` are still given in epochs).
    """

    name: Literal["constant", "cosine", "step", "cosine_restarts", "onecycle", "linear"] = "cosine"
    t_max: int | None = None
    eta_min: float = 0.0
    step_size: int = 30
    gamma: float = 0.1
    t_0: int = 10
    t_mult: int = 1
    pct_start: float = 0.25
    warmup_epochs: float = 0.0
    interval: Literal["epoch", "step"] = "epoch"
    start_factor: float = field(default=0.2, metadata=OMIT_DEFAULT)
    end_factor: float = field(default=0.0, metadata=OMIT_DEFAULT)

    def __post_init__(self) -> None:
        _require(_number(self.start_factor, 0, 1, hi_open=False), "start_factor", self.start_factor, "in [0, 1]")
        _require(_number(self.end_factor, 0, 1, hi_open=False), "end_factor", self.end_factor, "in [0, 1]")
        _require(self.t_max is None or _count(self.t_max), "t_max", self.t_max, "a whole number of epochs >= 1 or null")
        _require(_number(self.eta_min, 0), "eta_min", self.eta_min, "a number >= 0")
        _require(_count(self.step_size), "step_size", self.step_size, "a whole number of epochs >= 1")
        _require(_number(self.gamma, 0, lo_open=True), "gamma", self.gamma, "a number > 0")
        _require(_count(self.t_0), "t_0", self.t_0, "a whole number of epochs >= 1")
        _require(_count(self.t_mult), "t_mult", self.t_mult, "an integer >= 1")
        _require(_number(self.pct_start, 0, 1, lo_open=True), "pct_start", self.pct_start, "in (0, 1)")
        _require(_number(self.warmup_epochs, 0), "warmup_epochs", self.warmup_epochs, "a number >= 0")


#: Each augmentation's name and the parameters it takes (the batched functions are in
#: :mod:`compress.training.augment`, which checks that it implements exactly these).
AUGMENT_PARAMS: dict[str, frozenset[str]] = {
    "random_crop": frozenset({"padding"}),
    "translate": frozenset({"pixels"}),
    "hflip": frozenset({"p"}),
    "alternating_flip": frozenset(),
    "vflip": frozenset({"p"}),
    "grayscale": frozenset({"p"}),
    "cutout": frozenset({"size"}),
    "autoaugment": frozenset({"group"}),
}


_STEP_PARAMS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "padding": (lambda v: _count(v, 0), "an integer >= 0"),
    "pixels": (lambda v: _count(v, 0) and v <= 16, "an integer in 0..16"),
    "p": (lambda v: _number(v, 0, 1, hi_open=False), "a probability in [0, 1]"),
    "size": (lambda v: _count(v, 1), "an integer >= 1 (pixels)"),
    "group": (lambda v: _count(v, 1), "an integer >= 1 (images)"),
}


def check_step(name: str, params: dict) -> None:
    """Raise ValueError (naming the accepted values) unless ``name`` is an augmentation and ``params``
    are its arguments with values in range."""
    if name not in AUGMENT_PARAMS:
        raise ValueError(f"unknown augmentation {name!r}; known: {', '.join(AUGMENT_PARAMS)}")
    allowed = AUGMENT_PARAMS[name]
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"augmentation {name!r} takes {sorted(allowed)}, got {sorted(unknown)}")
    for key, value in params.items():
        ok, accepted = _STEP_PARAMS[key]
        if not ok(value):
            raise ValueError(f"augmentation {name!r}: {key} must be {accepted}, got {value!r}")


@dataclass(frozen=True)
class AugmentStep:
    """One training augmentation, applied in list order on batched uint8 images.

    ``name``: random_crop (``padding``, default 4), translate (``pixels``, default 2: a random shift with
    reflect padding), hflip (``p``), alternating_flip (each image mirrored in every other epoch, in a
    random phase of its own), vflip (``p``), grayscale (``p``), autoaugment (CIFAR-10 policy), cutout
    (``size``). ``params`` holds the step's arguments.
    """

    name: Literal["random_crop", "translate", "hflip", "alternating_flip", "vflip", "grayscale", "autoaugment",
                  "cutout"]
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_step(self.name, self.params)


@dataclass(frozen=True)
class NormalizeConfig:
    """Per-channel normalisation applied after augmentation (images scaled to [0, 1] first)."""

    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD

    def __post_init__(self) -> None:
        _require(all(_number(m, -math.inf) for m in self.mean), "mean", self.mean, "finite numbers")
        _require(all(_number(v, 0, lo_open=True) for v in self.std), "std", self.std, "numbers > 0")


@dataclass(frozen=True)
class MixupConfig:
    """Mixup: one lambda per batch from Beta(alpha, alpha), each image mixed with the reversed batch."""

    alpha: float = 0.2

    def __post_init__(self) -> None:
        _require(_number(self.alpha, 0, lo_open=True), "alpha", self.alpha, "a number > 0")


@dataclass(frozen=True)
class ClipConfig:
    """Gradient clipping: by ``value`` (clip_grad_value_) and/or by global ``norm`` (clip_grad_norm_)."""

    value: float | None = None
    norm: float | None = None

    def __post_init__(self) -> None:
        for name in ("value", "norm"):
            v = getattr(self, name)
            _require(v is None or _number(v, 0, lo_open=True), name, v, "a number > 0 or null")


@dataclass(frozen=True)
class LookaheadConfig:
    """Lookahead (Zhang et al. 2019): every ``k`` fast steps, slow += alpha * (fast - slow); fast = slow.

    ``ramp`` (a power p) puts ``alpha`` on a schedule over the run's steps t of T:
    ``alpha_t = 1 - (1 - alpha) * (t / T) ** p``, so it starts as plain training (alpha 1) and averages
    more and more as training ends (airbench: k 5, alpha 1 - 0.95**5, p 3). After the last step the
    model takes the slow weights. ``buffers`` averages and resets the model's floating-point buffers
    (BatchNorm's running statistics) with the weights, as airbench does with its whole state dict;
    without it the statistics follow the fast weights only.
    """

    k: int = 5
    alpha: float = 0.5
    ramp: float | None = field(default=None, metadata=OMIT_DEFAULT)
    buffers: bool = field(default=False, metadata=OMIT_DEFAULT)

    def __post_init__(self) -> None:
        _require(self.ramp is None or _number(self.ramp, 0, lo_open=True), "ramp", self.ramp, "a power > 0 or null")
        _require(_count(self.k), "k", self.k, "an integer >= 1")
        _require(_number(self.alpha, 0, 1, lo_open=True, hi_open=False), "alpha", self.alpha, "in (0, 1]")
        _require(isinstance(self.buffers, bool), "buffers", self.buffers, "true or false")


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop when ``metric`` has not improved by ``min_delta`` for ``patience`` epochs.

    ``metric``: train_loss, val_loss or val_acc (the val ones need a validation split).
    """

    metric: Literal["train_loss", "val_loss", "val_acc"] = "val_loss"
    patience: int = 10
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        _require(_count(self.patience), "patience", self.patience, "a whole number of epochs >= 1")
        _require(_number(self.min_delta, 0), "min_delta", self.min_delta, "a number >= 0")


@dataclass(frozen=True)
class ValSplitConfig:
    """A validation split of ``size`` images carved from the training set with ``seed``."""

    size: int = 5000
    seed: int = 0

    def __post_init__(self) -> None:
        _require(_count(self.size), "size", self.size, "a number of images >= 1")
        _require(_count(self.seed, 0) and self.seed <= MAX_SEED, "seed", self.seed, f"an integer in 0..{MAX_SEED}")


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation from a teacher (:mod:`compress.training.distill`, Hinton et al. 2015).

    The loss is ``(1 - weight) * plain + weight * temperature**2 * KL(teacher || student)`` on logits
    softened by ``temperature``; ``weight = 0`` is the plain loss.
    """

    temperature: float = 4.0
    weight: float = 0.9

    def __post_init__(self) -> None:
        _require(_number(self.temperature, 0, lo_open=True), "temperature", self.temperature, "a number > 0")
        _require(_number(self.weight, 0, 1, hi_open=False), "weight", self.weight, "in [0, 1]")


@dataclass(frozen=True)
class TrainConfig:
    """Everything about one training run; defaults are the baseline ResNet-18 setup.

    ``tta`` is the test-time augmentation of every evaluation: ``none``, ``mirror`` (logits of each image
    and its mirror image averaged) or ``mirror_translate`` (that, averaged half and half with the same on
    the image shifted by one pixel up-left and down-right, reflect-padded: 6 passes). ``tta_flip: true``
    is the older spelling of ``tta: mirror``; :attr:`tta_level` is the level either one sets.
    ``tta_epochs``: ``all`` evaluates every epoch (validation and test) under it; ``last`` evaluates the
    epochs without it and measures the returned model's test accuracy under it once, at the end (the
    last history row's ``test_acc_tta``; the reported accuracy), which saves 5 of 6 passes per epoch.
    ``freeze_bn_weights`` keeps every BatchNorm weight at its value (1 for a fresh network) and trains
    the biases only.
    """

    epochs: int = 200
    batch_size: int = 128
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: tuple[AugmentStep, ...] = (
        AugmentStep("random_crop", {"padding": 4}),
        AugmentStep("hflip", {"p": 0.5}),
    )
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    mixup: MixupConfig | None = None
    label_smoothing: float = 0.0
    clip: ClipConfig | None = None
    lookahead: LookaheadConfig | None = None
    ema: float | None = None
    early_stopping: EarlyStoppingConfig | None = None
    val_split: ValSplitConfig | None = None
    distill: DistillConfig | None = None
    tta_flip: bool = False
    tta: Literal["none", "mirror", "mirror_translate"] = field(default="none", metadata=OMIT_DEFAULT)
    tta_epochs: Literal["all", "last"] = field(default="all", metadata=OMIT_DEFAULT)
    freeze_bn_weights: bool = field(default=False, metadata=OMIT_DEFAULT)
    seed: int = 0
    # speed knobs (do not change the maths)
    channels_last: bool = True
    amp: Literal["bf16", "fp16", "none"] = "bf16"
    compile: bool = False
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        _require(_count(self.epochs), "epochs", self.epochs, "an integer >= 1")
        _require(_count(self.batch_size), "batch_size", self.batch_size, "an integer >= 1")
        _require(_number(self.label_smoothing, 0, 1), "label_smoothing", self.label_smoothing, "in [0, 1)")
        _require(self.ema is None or _number(self.ema, 0, 1, lo_open=True), "ema", self.ema, "a decay in (0, 1) or null")
        _require(_count(self.eval_batch_size), "eval_batch_size", self.eval_batch_size, "an integer >= 1")
        _require(_count(self.seed, 0) and self.seed <= MAX_SEED, "seed", self.seed, f"an integer in 0..{MAX_SEED}")
        _require(self.tta in TTA_LEVELS, "tta", self.tta, f"one of {', '.join(TTA_LEVELS)}")
        _require(not (self.tta_flip and self.tta != "mirror" and self.tta != "none"), "tta_flip", self.tta_flip,
                 f"false with tta: {self.tta} (tta_flip: true means tta: mirror)")

    @property
    def tta_level(self) -> str:
        """The test-time augmentation every evaluation uses: ``tta``, or ``mirror`` where ``tta_flip`` is set."""
        return "mirror" if self.tta_flip and self.tta == "none" else self.tta

    @property
    def tta_passes(self) -> int:
        """Forward passes per evaluated image at :attr:`tta_level` (1, 2 or 6)."""
        return {"none": 1, "mirror": 2, "mirror_translate": 6}[self.tta_level]

    @property
    def epoch_eval_passes(self) -> int:
        """Forward passes per evaluated image in each epoch's evaluation (1 with ``tta_epochs: last``)."""
        return self.tta_passes if self.tta_epochs == "all" else 1

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "train") -> "TrainConfig":
        """Validate and build from a plain dict (a recipe's ``train:`` section)."""
        return from_dict(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict that :meth:`from_dict` accepts.

        ``distill`` is left out while it is ``None``, so configs (and the recipe fingerprints and
        checkpoints built from them) written before distillation existed stay equal.
        """
        d = to_dict(self)
        if d.get("distill") is None:
            d.pop("distill", None)
        return d

    def with_overrides(
        self, *, batch_size: int | None = None, lr: float | None = None, seed: int | None = None
    ) -> "TrainConfig":
        """A copy with the given batch size, (peak) learning rate or seed; ``None`` keeps a field as it is."""
        for name, value, kind in (("batch_size", batch_size, int), ("seed", seed, int), ("lr", lr, (int, float))):
            if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if lr is not None and not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in 0..{MAX_SEED}, got {seed}")
        return dataclasses.replace(
            self,
            batch_size=self.batch_size if batch_size is None else batch_size,
            optimizer=self.optimizer if lr is None else dataclasses.replace(self.optimizer, lr=float(lr)),
            seed=self.seed if seed is None else seed,
        )

    def over_epochs(self, epochs: int) -> "TrainConfig":
        """This run laid over ``epochs`` epochs: every schedule length given in epochs (``t_max``, ``t_0``,
        ``step_size``, ``warmup_epochs``) is scaled by ``epochs / self.epochs``, so a shortened run still
        warms up, anneals and decays over its whole length as the full one does.

        A step schedule's step size is rounded to whole epochs (at least 1) and its ``gamma`` adjusted so
        that the total decay over the run stays the same. Early-stopping patience is not scaled.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
        if epochs == self.epochs:
            return self
        f = epochs / self.epochs
        s = self.schedule
        changes: dict[str, Any] = {"warmup_epochs": s.warmup_epochs * f}
        if s.name == "cosine" and s.t_max is not None:
            changes["t_max"] = max(1, round(s.t_max * f))
        elif s.name == "cosine_restarts":
            changes["t_0"] = max(1, round(s.t_0 * f))
        elif s.name == "step":
            changes["step_size"] = max(1, round(s.step_size * f))
            # the total decay gamma ** (E / step_size) is kept: gamma' ** (epochs / step_size') equals it
            changes["gamma"] = s.gamma ** ((self.epochs / s.step_size) / (epochs / changes["step_size"]))
        schedule = dataclasses.replace(s, **changes)
        return dataclasses.replace(self, epochs=epochs, schedule=schedule)
