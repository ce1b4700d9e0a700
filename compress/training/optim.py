"""Optimizers, learning-rate schedules, Lookahead and weight EMA built from a :class:`TrainConfig`.

Everything maps onto torch: ``torch.optim`` optimizers, ``torch.optim.lr_scheduler`` schedules (a
linear warm-up in front through ``SequentialLR``). :class:`Lookahead`, which torch lacks, and a small
:class:`EMA` (torch's ``AveragedModel`` syncs host and GPU on every update) are written here.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from torch.optim import lr_scheduler

from .config import LookaheadConfig, OptimizerConfig, ScheduleConfig

__all__ = ["build_optimizer", "build_scheduler", "Lookahead", "EMA", "build_ema"]


def build_optimizer(
    params: Iterable[nn.Parameter] | nn.Module, cfg: OptimizerConfig, batch_size: int = 1024
) -> torch.optim.Optimizer:
    """The torch optimizer named by ``cfg`` over ``params`` (a model, or its parameters) with all its arguments.

    Parameters with ``requires_grad=False`` (frozen layers) are left out. Given a model, BatchNorm
    biases form their own parameter group with ``cfg.bias_lr_scale`` times the learning rate (and the
    same weight decay per step as the rest); given bare parameters, there is one group. With
    ``cfg.decoupled`` the learning rate and weight decay are per 1024 examples (see
    :class:`~compress.training.config.OptimizerConfig`), converted for batches of ``batch_size``.
    """
    groups = _param_groups(params, cfg.bias_lr_scale)
    lr, wd = cfg.lr, cfg.weight_decay
    if cfg.decoupled:  # steps of lr * gradient and decay of wd per 1024 examples, after momentum's amplification
        lr = cfg.lr * batch_size / 1024 * (1.0 - cfg.momentum)
        wd = cfg.weight_decay / cfg.lr if cfg.lr > 0 else 0.0
    groups = [{"params": g["params"], "lr": lr * g["scale"], "weight_decay": wd / g["scale"]} for g in groups]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum)
    raise ValueError(f"unknown optimizer {cfg.name!r}; known: sgd, adam, adamw, rmsprop")


def _param_groups(params: Iterable[nn.Parameter] | nn.Module, bias_scale: float) -> list[dict[str, Any]]:
    """``[{"params": [...], "scale": lr factor}, ...]``: the trainable parameters, BatchNorm biases apart
    (when ``params`` is a model and ``bias_scale != 1``). Empty groups are dropped."""
    if not isinstance(params, nn.Module):
        return [{"params": [p for p in params if p.requires_grad], "scale": 1.0}]
    biases: list[nn.Parameter] = []
    if bias_scale != 1.0:
        norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
        biases = [m.bias for m in params.modules() if isinstance(m, norms) and m.bias is not None and m.bias.requires_grad]
    ids = {id(p) for p in biases}
    rest = [p for p in params.parameters() if p.requires_grad and id(p) not in ids]
    return [g for g in ({"params": rest, "scale": 1.0}, {"params": biases, "scale": float(bias_scale)}) if g["params"]]


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int
) -> lr_scheduler.LRScheduler:
    """The schedule of ``cfg`` for a run of ``epochs`` epochs of ``steps_per_epoch`` optimizer steps.

    Call ``.step()`` once per epoch (``cfg.interval == "epoch"``) or once per optimizer step
    (``"step"``). Lengths in the config are in epochs and are converted to steps when needed. With
    ``warmup_epochs`` > 0 the learning rate first rises linearly (``lr * t / W`` for t = 1..W) and the
    main schedule then runs over the remaining length.
    """
    unit = steps_per_epoch if cfg.interval == "step" else 1
    total = max(1, epochs * unit)
    warm = min(total - 1, max(0, math.ceil(cfg.warmup_epochs * unit))) if cfg.warmup_epochs > 0 else 0
    length = total - warm
    if cfg.name == "constant":
        main: lr_scheduler.LRScheduler = lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    elif cfg.name == "cosine":
        t_max = cfg.t_max * unit if cfg.t_max is not None else length
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, t_max), eta_min=cfg.eta_min)
    elif cfg.name == "step":
        main = lr_scheduler.StepLR(optimizer, step_size=max(1, cfg.step_size * unit), gamma=cfg.gamma)
    elif cfg.name == "cosine_restarts":
        main = lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=max(1, cfg.t_0 * unit), T_mult=cfg.t_mult, eta_min=cfg.eta_min
        )
    elif cfg.name == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        pct_start = cfg.pct_start
        if length > 1 and abs(pct_start * length - 1) < 1e-9:
            # torch's OneCycleLR divides by zero when the warm-up phase is exactly one step: make it two
            pct_start = 2 / length
        main = lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=length, pct_start=pct_start,
            cycle_momentum=_has_momentum(optimizer),
        )
    elif cfg.name == "linear":
        main = lr_scheduler.LambdaLR(optimizer, _linear(length, cfg.pct_start, cfg.start_factor, cfg.end_factor))
    else:
        raise ValueError(f"unknown schedule {cfg.name!r}; known: constant, cosine, step, cosine_restarts, onecycle, linear")
    if not warm:
        return main
    warmup = lr_scheduler.LambdaLR(optimizer, lambda t: min(1.0, (t + 1) / warm))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR calls step(0) on the main schedule: deprecation noise
        return _QuietSequentialLR(optimizer, [warmup, main], milestones=[warm])


def _linear(length: int, pct_start: float, start: float, end: float) -> Any:
    """The factor at step t of ``length``: ``start`` -> 1 over ``pct_start`` of them, then 1 -> ``end``."""
    warm = max(1, round(pct_start * length)) if length > 1 else 0

    def factor(t: int) -> float:
        if t < warm:
            return start + (1.0 - start) * t / warm
        return 1.0 + (end - 1.0) * min(1.0, (t - warm) / max(1, length - warm))

    return factor


class _QuietSequentialLR(lr_scheduler.SequentialLR):
    """SequentialLR without the ``step(epoch)`` deprecation warning it triggers itself at the milestone."""

    def step(self) -> None:  # type: ignore[override]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            super().step()


def _has_momentum(optimizer: torch.optim.Optimizer) -> bool:
    g = optimizer.param_groups[0]
    return ("momentum" in g and g["momentum"] > 0) or "betas" in g


class Lookahead:
    """Lookahead (Zhang et al. 2019) around any optimizer: k fast steps, then slow += alpha * (fast - slow).

    After each ``k``-th step of the inner optimizer, the slow weights move towards the fast ones and
    the fast weights are reset to them. Slow weights start at the parameters' values at construction.
    It exposes ``param_groups`` (the inner optimizer's), so ``GradScaler`` and gradient clipping work on
    it; attach LR schedulers to ``lookahead.optimizer``.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5,
        ramp: float | None = None, total_steps: int | None = None, buffers: Sequence[torch.Tensor] = (),
    ) -> None:
        if k < 1 or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"Lookahead needs k >= 1 and 0 <= alpha <= 1, got k={k}, alpha={alpha}")
        if ramp is not None and (ramp <= 0 or total_steps is None or total_steps < 1):
            raise ValueError(f"a Lookahead ramp needs a power > 0 and total_steps >= 1, got {ramp}, {total_steps}")
        self.optimizer = optimizer
        self.k, self.alpha = int(k), float(alpha)
        self.ramp, self.total_steps = ramp, total_steps
        self.steps = 0
        self.slow = [p.detach().clone() for g in optimizer.param_groups for p in g["params"]]
        self.buffers = [b for b in buffers if b.is_floating_point()]  # averaged and reset with the weights
        self.slow_buffers = [b.detach().clone() for b in self.buffers]

    @classmethod
    def from_config(
        cls, optimizer: torch.optim.Optimizer, cfg: LookaheadConfig, total_steps: int | None = None,
        model: nn.Module | None = None,
    ) -> "Lookahead":
        """Wrap ``optimizer`` with ``cfg.k``, ``cfg.alpha`` and ``cfg.ramp`` over a run of ``total_steps``;
        with ``cfg.buffers``, ``model``'s floating-point buffers (BatchNorm statistics) are averaged too."""
        if cfg.buffers and model is None:
            raise ValueError("Lookahead over buffers needs the model whose buffers to average")
        buffers = list(model.buffers()) if cfg.buffers else []  # type: ignore[union-attr] - checked above
        return cls(optimizer, cfg.k, cfg.alpha, cfg.ramp, total_steps if cfg.ramp is not None else None, buffers)

    def alpha_at(self, step: int) -> float:
        """The interpolation factor used at (1-based) ``step``: ``alpha``, or its ramp's value there."""
        if self.ramp is None:
            return self.alpha
        frac = min(1.0, step / self.total_steps)  # type: ignore[operator]
        return 1.0 - (1.0 - self.alpha) * frac ** self.ramp

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The inner optimizer's parameter groups."""
        return self.optimizer.param_groups

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One fast step; every ``k``-th one also updates the slow weights and resets the fast ones."""
        loss = self.optimizer.step(closure)
        self.steps += 1
        if self.steps % self.k == 0:
            self._pull(self.alpha_at(self.steps))
        return loss

    def _pull(self, alpha: float) -> None:
        """slow += alpha * (fast - slow), then fast = slow, for the weights (and the averaged buffers)."""
        fast = [p.detach() for p in self._params()] + self.buffers
        slow = self.slow + self.slow_buffers
        torch._foreach_lerp_(slow, fast, alpha)
        torch._foreach_copy_(fast, slow)

    @torch.no_grad()
    def finish(self) -> None:
        """End on the slow weights: one last update for the fast steps since the previous one (if any),
        then the model takes the slow weights."""
        self._pull(self.alpha_at(self.steps) if self.steps % self.k else 0.0)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the inner optimizer's gradients."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """Inner optimizer state, slow weights and the step counter."""
        return {"optimizer": self.optimizer.state_dict(), "slow": [s.clone() for s in self.slow], "steps": self.steps,
                **({"slow_buffers": [s.clone() for s in self.slow_buffers]} if self.buffers else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.optimizer.load_state_dict(state["optimizer"])
        for s, saved in zip(self.slow, state["slow"], strict=True):
            s.copy_(saved)
        if self.buffers:
            if "slow_buffers" not in state:
                raise ValueError("this checkpoint's Lookahead did not average buffers; resume it with lookahead buffers: false")
            for s, saved in zip(self.slow_buffers, state["slow_buffers"], strict=True):
                s.copy_(saved)
        self.steps = int(state["steps"])


class EMA(nn.Module):
    """Exponential moving average of a model's weights and buffers: ``ema = decay * ema + (1 - decay) * w``.

    Floating-point parameters and buffers (BN statistics) are averaged with one ``torch._foreach_lerp_``;
    integer buffers (BN's batch counter) are copied. Unlike ``torch.optim.swa_utils.AveragedModel``,
    whose update reads a step counter from the device, an update never makes the host wait for CUDA.
    Call :meth:`update_parameters` after each optimizer step and evaluate ``ema.module``; the state
    dict holds ``module.*`` keys.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.decay = float(decay)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """Move the averages one step towards ``model``'s current weights and buffers."""
        mine = list(self.module.parameters()) + list(self.module.buffers())
        theirs = list(model.parameters()) + list(model.buffers())
        floats = [(a, b.detach()) for a, b in zip(mine, theirs, strict=True) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [b for _, b in floats], 1.0 - self.decay)
        for a, b in zip(mine, theirs):
            if not a.is_floating_point():
                a.copy_(b)


def build_ema(model: nn.Module, decay: float) -> EMA:
    """:class:`EMA` of ``model`` with ``decay`` (``TrainConfig.ema``)."""
    return EMA(model, decay)
