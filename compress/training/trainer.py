"""The trainer: :func:`train` runs one :class:`TrainConfig` on an :class:`~compress.data.ImageData`.

Design (after airbench): the whole dataset sits on the device as uint8; each step gathers a batch by
index, augments it there (:mod:`compress.training.augment`), normalises to float, and runs forward and
backward under bf16 autocast (on CUDA, and on CPUs that compute bf16 natively: :func:`autocast_dtype`).
Everything a recipe asks for maps onto torch objects built in
:mod:`compress.training.optim`. Each epoch ends with evaluation and an atomic checkpoint, so a killed
run resumes to the same result. Under ``torchrun`` the model is wrapped in DistributedDataParallel and
each rank takes its slice of every global batch (see :mod:`compress.training.distributed`).

What it writes (checkpoint, history, model, result) and how (atomic files, RNG states per rank) is
:mod:`compress.training.outputs`; the trainer is given the paths.

Why this module is long: what is left is the training loop itself (one function whose epoch/step state the
mid-epoch checkpoint closure shares), its evaluation and result, and its progress bar, and cutting the
loop apart would pass a dozen run objects between functions for no reuse.
"""

from __future__ import annotations

import copy
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, fields
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ImageData
from ..models.resnet import input_normalization
from . import distributed
from .augment import build_augment, mixup, mixup_loss, normalize, tta_logits
from .checks import NonFiniteLossError, check_diverged, check_inputs, check_loss, check_weights
from .config import TrainConfig
from .distill import make_distiller
from .optim import Lookahead, build_ema, build_optimizer, build_scheduler
from .outputs import CHECKPOINT_FORMAT, TrainFiles
from .outputs import check_against_model_file as _check_against_model_file
from .outputs import check_same_run as _check_same_run
from .outputs import gather_rng as _gather_rng
from .outputs import load_checkpoint as _load_checkpoint
from .outputs import save_checkpoint as _save_checkpoint  # called through this name: tests wrap it
from .outputs import seed_everything as _seed_everything
from .outputs import set_rng_state as _set_rng_state
from .outputs import write_history as _write_history
from .outputs import write_outputs as _write_outputs

__all__ = ["train", "TrainResult", "TrainFiles", "NonFiniteLossError", "CHECKPOINT_FORMAT", "autocast_dtype"]

_CHECK_EVERY = 20  # steps between progress updates (and, in one process, divergence checks)
_PROGRESS_EVERY_S = 2.0  # ... and at most this many seconds between progress updates
_AMP_ON_CPU = False  # tests set this to run the fp16 autocast/GradScaler code path on the CPU


@dataclass
class TrainResult:
    """What :func:`train` returns. ``test_acc`` is in 0..1.

    ``test_acc`` is the last epoch's test accuracy, or, with a validation split, the test accuracy of
    the epoch with the best validation accuracy (``selected_epoch``, 1-based), under the config's
    test-time augmentation (with ``tta_epochs: last`` measured once at the end, on the returned model:
    the last history row's ``test_acc_tta``); ``model`` holds that
    epoch's weights (the EMA weights when ``config.ema`` is set), on the CPU in eval mode.
    ``train_time_s`` is the wall time of all epochs (training and evaluation, summed over resumes);
    ``images_per_s`` counts training images over the time of the training steps only. ``precision``
    says how the steps ran: autocast dtype (``bf16``/``fp16``/``none``), channels_last, compile, threads;
    ``tta`` is the test-time augmentation level of every evaluation (``none``, ``mirror``, ``mirror_translate``).
    """

    model: nn.Module
    test_acc: float
    selected_epoch: int
    epochs_run: int
    history: list[dict[str, Any]]
    train_time_s: float
    images_per_s: float
    stopped_early: bool
    device: str
    test_loss: float | None = None
    val_acc: float | None = None
    precision: dict[str, Any] | None = None
    tta: str = "none"

    def to_dict(self) -> dict[str, Any]:
        """All fields but the model, as plain JSON-friendly values."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        d["history"] = [dict(row) for row in self.history]
        return d


# ----------------------------------------------------------------------------------------------
def train(
    model: nn.Module,
    data: ImageData,
    config: TrainConfig | dict[str, Any],
    *,
    out_dir: str | os.PathLike | None = None,
    files: TrainFiles | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    epochs: int | None = None,
    max_steps_per_epoch: int | None = None,
    checkpoint_every_s: float | None = 300.0,
    teacher: nn.Module | None = None,
    after_backward: Callable[[nn.Module], Any] | None = None,
    on_epoch: Callable[[list[dict[str, Any]]], None] | None = None,
) -> TrainResult:
    """Train a copy of ``model`` on ``data`` as ``config`` says; the caller's model is not modified.

    ``device=None`` uses CUDA when available (``cuda:LOCAL_RANK`` under torchrun), else the CPU.
    ``epochs`` overrides ``config.epochs`` (the schedule is laid out over it); ``max_steps_per_epoch``
    cuts each epoch short (smoke runs, tests). With ``files`` (a :class:`~compress.training.outputs.TrainFiles`,
    or ``out_dir``: the files of a run folder's recipe sub-folder in that folder, ``checkpoint.pt``,
    ``history.json``, ``model.pt``, ``result.json``) each epoch writes the checkpoint (atomically) and the
    history, and the end writes the model (:func:`compress.save`) and the result; inside an epoch the
    checkpoint is also rewritten once ``checkpoint_every_s`` seconds have passed since the
    last one (``None``: only at epoch ends; ``0``: after every step). ``resume=True`` continues from
    the checkpoint if present, mid-epoch too, to the same result as an uninterrupted run (a
    finished run returns its stored result at once). Inputs that do not fit raise ``ValueError`` before
    anything runs (:func:`~compress.training.checks.check_inputs`); a diverged epoch (NaN/inf or exploding
    loss, NaN/inf weights) raises :class:`NonFiniteLossError` before it is recorded. Returns a
    :class:`TrainResult`.
    Inputs are normalised with what ``model`` carries (:func:`~compress.models.input_normalization`),
    else with ``config.normalize``. ``teacher`` (any model) is distilled into the student with
    ``config.distill`` (:mod:`compress.training.distill`).

    ``after_backward(net)`` is called at every training step after the backward pass and before
    gradient clipping and the optimizer step, with the network being trained itself (the trainer's
    copy of ``model``: not the DDP/compiled wrapper, the EMA average or Lookahead's slow weights), its
    ``.grad`` fields filled (unscaled under fp16) so that it may change them, e.g. add a regulariser's
    gradient (:class:`compress.transforms.prune.sparse.Regularizer`). It is called the same way with or
    without distillation and in a resumed run; state it keeps between calls is its own (not checkpointed).

    ``on_epoch`` is called after every epoch (once its checkpoint and history are written) with a copy
    of the history so far, the epochs before a resume included; an exception it raises stops the
    training and propagates (a resumed run then continues after that epoch).
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    if after_backward is not None and not callable(after_backward):
        raise TypeError(f"after_backward must be a callable taking the model, got {type(after_backward).__name__}")
    info = distributed.setup(device)
    check_inputs(model, data, config, epochs=epochs, max_steps_per_epoch=max_steps_per_epoch, world_size=info.world_size)
    n_epochs = int(epochs if epochs is not None else config.epochs)
    dev = info.device
    if out_dir is not None and files is not None:
        raise ValueError("give out_dir or files, not both")
    out = TrainFiles.in_folder(out_dir) if out_dir is not None else files
    ckpt_path = out.checkpoint if out is not None else None

    if config.val_split is not None and data.val_x is None:
        data = data.with_val_split(config.val_split.size, config.val_split.seed)
    has_val = data.val_x is not None

    saved = _load_checkpoint(ckpt_path) if resume and ckpt_path is not None and ckpt_path.is_file() else None
    if saved is not None:
        _check_same_run(saved, config, n_epochs, max_steps_per_epoch, ckpt_path)
        if saved["finished"]:
            result = _result(model, saved, str(dev), _precision(config, dev), config.tta_level)
            if info.is_main and not out.model.is_file():  # killed between checkpoint and model.pt
                _write_outputs(out, result, config)
            else:  # a model.pt written when the run finished: the checkpoint must still agree with it
                _check_against_model_file(result, out)
            return result

    _seed_everything(config.seed + info.rank)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # model, optimizer and friends ---------------------------------------------------------------
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    net = copy.deepcopy(model).to(dev).to(memory_format=memory_format)
    net.train()
    if config.freeze_bn_weights:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                m.weight.requires_grad_(False)
    forward: nn.Module = net
    if info.enabled:
        forward = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    if config.compile:
        forward = torch.compile(forward)  # type: ignore[assignment]

    n_train = data.train_x.shape[0]
    steps = n_train // config.batch_size if info.enabled else math.ceil(n_train / config.batch_size)
    if max_steps_per_epoch is not None:
        steps = min(steps, int(max_steps_per_epoch))
    if steps < 1:
        raise ValueError(f"{n_train} training images give no full batch of {config.batch_size}")

    inner = build_optimizer(net, config.optimizer, config.batch_size)  # the global batch: examples per step
    scheduler = build_scheduler(inner, config.schedule, n_epochs, steps)
    optimizer: Any = Lookahead.from_config(inner, config.lookahead, n_epochs * steps, net) if config.lookahead else inner
    ema = build_ema(net, config.ema) if config.ema is not None else None
    amp_dtype = autocast_dtype(config.amp, dev)
    precision = _precision(config, dev)
    scaler = torch.amp.GradScaler(dev.type) if amp_dtype == torch.float16 else None
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    stats = input_normalization(model) or (config.normalize.mean, config.normalize.std)
    augment = build_augment(config.augment, stats[0], config.seed)
    distiller = make_distiller(teacher, config.distill, dev, stats, memory_format)

    # run state --------------------------------------------------------------------------------
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    stopper = {"best": None, "bad": 0}
    totals = {"wall": 0.0, "step_time": 0.0, "images": 0}
    start_epoch, start_step, partial = 0, 0, None
    if saved is not None:
        net.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        history, best, stopper, totals = saved["history"], saved["best"], saved["stopper"], saved["totals"]
        start_epoch, start_step = int(saved["epoch"]), int(saved.get("step", 0))
        if start_step:  # a mid-epoch checkpoint: this rank's sums so far in the epoch
            ranks = saved["partial"]["ranks"]
            if len(ranks) != info.world_size or saved["steps_per_epoch"] != steps:
                raise ValueError(
                    f"{ckpt_path} was written in the middle of an epoch of {saved['steps_per_epoch']} steps by "
                    f"{len(ranks)} process(es); this run has {steps} steps per epoch and {info.world_size} process(es): "
                    "resume with the same data and number of processes, or use a fresh out_dir"
                )
            partial = {**saved["partial"], **ranks[info.rank]}
        rngs = saved["rng"]
        _set_rng_state(rngs[info.rank] if info.rank < len(rngs) else rngs[0], dev)

    to_dev = dict(non_blocking=True)
    train_x, train_y = data.train_x.to(dev, **to_dev), data.train_y.to(dev, **to_dev)
    shard = slice(info.rank, None, info.world_size)
    evals = {"test": (data.test_x[shard].to(dev, **to_dev), data.test_y[shard].to(dev, **to_dev))}
    if has_val:
        evals = {"val": (data.val_x[shard].to(dev, **to_dev), data.val_y[shard].to(dev, **to_dev)), **evals}

    mean = torch.tensor(stats[0], device=dev)  # once: a copy per step would sync with CUDA
    std = torch.tensor(stats[1], device=dev)
    bar = _Progress(progress and info.is_main, n_epochs * steps, start_epoch * steps + start_step)
    epoch_tta = config.tta_level if config.tta_epochs == "all" else "none"  # what each epoch's evaluation uses
    stopped_early = False
    last_save = time.perf_counter()

    def write_checkpoint(epoch_done: int, step_done: int, finished: bool, stopped: bool, in_epoch: Any = None) -> None:
        """``checkpoint.pt`` after ``epoch_done`` epochs and ``step_done`` steps of the next (``in_epoch``:
        this rank's sums so far in that epoch); history.json at epoch ends. Every rank must call it."""
        nonlocal last_save
        if in_epoch is not None:  # a mid-epoch state passes the guard an epoch's end passes: none saved diverged
            check_weights([net] + ([ema.module] if ema is not None else []), f"in epoch {epoch_done + 1}", ckpt_path)
            if not info.enabled:  # in DDP the loss sums differ per rank; the epoch end checks their all-reduce
                check_loss(in_epoch["loss_sum"] / max(in_epoch["seen"], 1), epoch_done, step_done - 1, ckpt_path)
        gathered = _gather_rng(info, dev, in_epoch)  # same `out` on every rank
        if info.is_main:
            rngs = [g["rng"] for g in gathered]
            state = {
                "format": CHECKPOINT_FORMAT,
                "epoch": epoch_done,
                "step": step_done,
                "steps_per_epoch": steps,
                "epochs": n_epochs,
                "config": config.to_dict(),
                "max_steps_per_epoch": max_steps_per_epoch,
                "finished": finished,
                "stopped_early": stopped,
                "model": _cpu_state(net),
                "ema": ema.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": rngs,
                "history": history,
                "best": best,
                "stopper": stopper,
                "totals": totals,
                "written": time.time(),
            }
            if in_epoch is not None:
                state["partial"] = {k: v for k, v in in_epoch.items() if k in ("lr", "step_time", "epoch_time")}
                state["partial"]["ranks"] = [{k: g["partial"][k] for k in ("loss_sum", "correct", "seen")} for g in gathered]
            else:
                _write_history(out, history)
            _save_checkpoint(ckpt_path, state)
        last_save = time.perf_counter()

    try:
        for epoch in range(start_epoch, n_epochs):
            first_step = start_step if epoch == start_epoch else 0
            t_epoch = time.perf_counter() - (partial["epoch_time"] if first_step else 0.0)
            lr = partial["lr"] if first_step else optimizer.param_groups[0]["lr"]
            # One global permutation per epoch, the same on every rank (its own generator, so resuming
            # needs no extra state); rank r takes the r-th slice of each global batch.
            perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
            perm = perm.to(dev)
            net.train()
            loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
            correct = torch.zeros((), device=dev, dtype=torch.int64)
            seen = 0
            t_steps = time.perf_counter()
            if first_step:  # resumed mid-epoch: carry on with the sums and times saved at that step
                loss_sum += partial["loss_sum"]
                correct += partial["correct"]
                seen, t_steps = partial["seen"], t_steps - partial["step_time"]
            for step in range(first_step, steps):
                idx = perm[step * config.batch_size:(step + 1) * config.batch_size]
                idx = idx.tensor_split(info.world_size)[info.rank]
                x = augment(train_x[idx], idx, epoch)
                y = train_y[idx]
                x = normalize(x, mean, std).contiguous(memory_format=memory_format)
                lam = 1.0
                y_b = y
                if config.mixup is not None:
                    x, y, y_b, lam = mixup(x, y, config.mixup.alpha)
                with torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext():
                    logits = forward(x)
                    loss = mixup_loss(criterion, logits, y, y_b, lam) if config.mixup is not None else criterion(logits, y)
                    if distiller is not None:
                        loss = distiller(x, logits, loss)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                else:
                    loss.backward()
                if scaler is not None and (config.clip is not None or after_backward is not None):
                    scaler.unscale_(optimizer)  # once per step: the hook and clipping see the true gradients
                if after_backward is not None:
                    after_backward(net)
                if config.clip is not None:
                    if config.clip.value is not None:
                        nn.utils.clip_grad_value_(net.parameters(), config.clip.value)
                    if config.clip.norm is not None:
                        nn.utils.clip_grad_norm_(net.parameters(), config.clip.norm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if ema is not None:
                    ema.update_parameters(net)
                if config.schedule.interval == "step":
                    scheduler.step()
                loss_sum += loss.detach().double() * y.shape[0]
                correct += (logits.detach().argmax(1) == y).sum()
                seen += y.shape[0]
                if (step + 1) % _CHECK_EVERY == 0 or step + 1 == steps:
                    if not info.enabled:  # in DDP all ranks must agree; checked after the all-reduce below
                        check_loss(float(loss_sum) / seen, epoch, step, ckpt_path)
                if bar.due(step + 1, steps):
                    bar.update(epoch, n_epochs, step + 1, float(loss_sum) / seen, int(correct) / seen,
                               seen * info.world_size / (time.perf_counter() - t_steps))
                if out is not None and step + 1 < steps and _mid_epoch_due(last_save, checkpoint_every_s, step, loss_sum, info):
                    now = time.perf_counter()
                    write_checkpoint(epoch, step + 1, False, False, {
                        "lr": lr, "step_time": now - t_steps, "epoch_time": now - t_epoch,
                        "loss_sum": float(loss_sum), "correct": int(correct), "seen": seen,
                    })
            if config.lookahead is not None and config.lookahead.ramp is not None and epoch + 1 == n_epochs:
                optimizer.finish()  # the run ends on the slow weights
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            step_time = time.perf_counter() - t_steps
            if config.schedule.interval == "epoch":
                scheduler.step()

            counts = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), device=dev, dtype=torch.float64)])
            distributed.all_reduce_sum(counts, info)
            train_loss, train_acc, n_seen = float(counts[0] / counts[2]), float(counts[1] / counts[2]), int(counts[2])
            check_loss(train_loss, epoch, steps - 1, ckpt_path)

            eval_net = ema.module if ema is not None else net
            row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc}
            for name, (ex, ey) in evals.items():
                row[f"{name}_loss"], row[f"{name}_acc"] = _evaluate(
                    eval_net, ex, ey, (mean, std), config, amp_dtype, memory_format, info, epoch_tta
                )
            check_diverged(row, [net] + ([ema.module] if ema is not None else []), ckpt_path)  # before it is recorded
            row["lr"] = lr
            row["epoch_time_s"] = time.perf_counter() - t_epoch
            row["images_per_s"] = n_seen / step_time
            history.append(row)
            totals = {
                "wall": totals["wall"] + row["epoch_time_s"],
                "step_time": totals["step_time"] + step_time,
                "images": totals["images"] + n_seen,
            }
            if has_val and (best is None or row["val_acc"] > best["val_acc"]):
                best = {
                    "epoch": epoch + 1, "val_acc": row["val_acc"], "test_acc": row["test_acc"],
                    "test_loss": row["test_loss"], "state": _cpu_state(eval_net),
                }
            stop = _early_stop(config, row, stopper)
            finished = stop or epoch + 1 == n_epochs
            stopped_early = stop and epoch + 1 < n_epochs
            if finished and epoch_tta != config.tta_level:  # tta_epochs "last": the returned model, with TTA, once
                t_tta = time.perf_counter()
                chosen = eval_net
                if best is not None:
                    chosen = copy.deepcopy(eval_net)
                    chosen.load_state_dict(best["state"])
                row["test_loss_tta"], row["test_acc_tta"] = _evaluate(
                    chosen, *evals["test"], (mean, std), config, amp_dtype, memory_format, info, config.tta_level
                )
                spent = time.perf_counter() - t_tta
                row["epoch_time_s"] += spent
                totals["wall"] += spent
            bar.log(row)

            if out is not None:
                write_checkpoint(epoch + 1, 0, finished, stopped_early)
            if on_epoch is not None:
                on_epoch([dict(r) for r in history])
            if finished:
                break
    finally:
        bar.close()

    final = {
        "history": history, "best": best, "totals": totals, "stopped_early": stopped_early,
        "model": _cpu_state(net), "ema": ema.state_dict() if ema is not None else None,
    }
    result = _result(model, final, str(dev), precision, config.tta_level)
    if info.is_main and out is not None:
        _write_outputs(out, result, config)
    return result


# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def _evaluate(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor], config: TrainConfig,
    amp_dtype: torch.dtype | None, memory_format: torch.memory_format, info: distributed.DistInfo,
    level: str | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy (no smoothing) and accuracy over all ranks' shards, under test-time
    augmentation ``level`` (default: the config's, :attr:`TrainConfig.tta_level`)."""
    was_training = net.training
    net.eval()
    dev = x.device
    sums = torch.zeros(3, device=dev, dtype=torch.float64)
    for xb, yb in zip(x.split(config.eval_batch_size), y.split(config.eval_batch_size)):
        xb = normalize(xb, *stats).contiguous(memory_format=memory_format)
        with torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext():
            out = tta_logits(net, xb, config.tta_level if level is None else level)
        out = out.float()
        sums[0] += F.cross_entropy(out, yb, reduction="sum").double()
        sums[1] += (out.argmax(1) == yb).sum()
        sums[2] += yb.shape[0]
    distributed.all_reduce_sum(sums, info)
    net.train(was_training)
    n = max(float(sums[2]), 1.0)
    return float(sums[0]) / n, float(sums[1]) / n


def _early_stop(config: TrainConfig, row: dict[str, Any], stopper: dict[str, Any]) -> bool:
    """Update ``stopper`` with this epoch's metric; True when patience has run out."""
    es = config.early_stopping
    if es is None:
        return False
    value = row[es.metric]
    sign = 1.0 if es.metric == "val_acc" else -1.0  # larger is better after the sign
    if stopper["best"] is None or sign * (value - stopper["best"]) > es.min_delta:
        stopper["best"], stopper["bad"] = value, 0
    else:
        stopper["bad"] += 1
    return stopper["bad"] >= es.patience


def _result(
    template: nn.Module, state: dict[str, Any], device: str, precision: dict[str, Any], tta: str = "none"
) -> TrainResult:
    """The TrainResult of a run whose final state (or checkpoint) is ``state``."""
    history, best = state["history"], state["best"]
    if best is not None:
        weights, acc, loss, epoch, val = best["state"], best["test_acc"], best["test_loss"], best["epoch"], best["val_acc"]
    else:
        last = history[-1]
        weights = _ema_module_state(state["ema"]) if state.get("ema") is not None else state["model"]
        acc, loss, epoch, val = last["test_acc"], last["test_loss"], last["epoch"], None
    if "test_acc_tta" in history[-1]:  # tta_epochs "last": the returned model's accuracy with TTA
        acc, loss = history[-1]["test_acc_tta"], history[-1]["test_loss_tta"]
    model = copy.deepcopy(template).cpu()
    model.load_state_dict(weights)
    model.eval()
    totals = state["totals"]
    return TrainResult(
        model=model, test_acc=float(acc), selected_epoch=int(epoch), epochs_run=len(history),
        history=list(history), train_time_s=float(totals["wall"]),
        images_per_s=float(totals["images"] / totals["step_time"]) if totals["step_time"] > 0 else 0.0,
        stopped_early=bool(state["stopped_early"]), device=device, test_loss=float(loss),
        val_acc=None if val is None else float(val), precision=precision, tta=tta,
    )


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype a run with ``config.amp == amp`` uses on ``device`` (``None``: plain fp32).

    CUDA takes ``amp`` as given. On the CPU bf16 autocast is used where the CPU computes bf16 natively
    (AVX-512 BF16 or AMX, as oneDNN reports it): there it trains 1.6-2.5x faster than fp32. fp16 on
    the CPU, and bf16 on CPUs without native support (where it is slower than fp32), fall back to fp32.
    """
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None or device.type == "cuda" or _AMP_ON_CPU:
        return dtype
    if device.type == "cpu" and dtype == torch.bfloat16 and _cpu_has_bf16():
        return dtype
    return None


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an older torch or a build without oneDNN
        return False


def _precision(config: TrainConfig, device: torch.device) -> dict[str, Any]:
    dtype = autocast_dtype(config.amp, device)
    return {
        "autocast": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "none"),
        "channels_last": config.channels_last, "compile": config.compile, "threads": torch.get_num_threads(),
    }


def _ema_module_state(ema_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("module."):]: v for k, v in ema_state.items() if k.startswith("module.")}


def _cpu_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}


def _mid_epoch_due(
    last_save: float, every_s: float | None, step: int, loss_sum: torch.Tensor, info: distributed.DistInfo
) -> bool:
    """Whether to write a mid-epoch checkpoint after ``step`` (0-based): ``every_s`` seconds have passed
    since the last one and the loss so far is finite. In DDP rank 0's clock decides, every
    ``_CHECK_EVERY`` steps (one tiny all-reduce), so that all ranks save together."""
    if every_s is None:
        return False
    if not info.enabled:
        return time.perf_counter() - last_save >= every_s and math.isfinite(float(loss_sum))
    if (step + 1) % _CHECK_EVERY:
        return False
    due = float(info.is_main and time.perf_counter() - last_save >= every_s)
    flags = torch.tensor([due, float(not math.isfinite(float(loss_sum)))], device=loss_sum.device, dtype=torch.float64)
    distributed.all_reduce_sum(flags, info)
    return bool(flags[0] > 0 and flags[1] == 0)


# progress ---------------------------------------------------------------------------------------
class _Progress:
    """A rich progress bar over the whole run: loss, accuracy, images/s, elapsed time and ETA.

    It is updated after the first step, every ``_CHECK_EVERY`` steps and whenever ``_PROGRESS_EVERY_S``
    seconds have passed (a CPU step can take many seconds), so it shows numbers and an ETA from the
    first step on. The ETA is the time per step so far in this process (evaluation included) times the
    steps left, counting down between updates. Silent when disabled.
    """

    def __init__(self, enabled: bool, total: int, completed: int) -> None:
        self.p = None
        if not enabled:
            return
        self.p = _progress_bar()
        self.task = self.p.add_task("train", total=total, completed=completed, stats="loss - acc - - img/s",
                                    per_step=None, at=0.0)
        self.first, self.t0, self.last = completed, time.perf_counter(), float("-inf")
        self.p.start()

    def due(self, step: int, steps: int) -> bool:
        """Whether to update after ``step`` (1-based) of ``steps``: first, every ``_CHECK_EVERY``, last, or by time."""
        if self.p is None:
            return False
        return step == 1 or step == steps or step % _CHECK_EVERY == 0 or time.perf_counter() - self.last >= _PROGRESS_EVERY_S

    def update(self, epoch: int, n_epochs: int, step: int, loss: float, acc: float, ips: float) -> None:
        if self.p is None:
            return
        per = self.p.tasks[0].total // n_epochs
        done = epoch * per + step
        now = self.last = time.perf_counter()
        per_step = (now - self.t0) / (done - self.first) if done > self.first else None
        self.p.update(self.task, completed=done, description=f"epoch {epoch + 1}/{n_epochs}",
                      stats=f"loss {loss:.4f} acc {acc:.3f} {ips:,.0f} img/s", per_step=per_step, at=now)

    def log(self, row: dict[str, Any]) -> None:
        if self.p is None:
            return
        parts = [f"epoch {row['epoch']:>3}", f"train {row['train_loss']:.4f}/{row['train_acc']:.4f}"]
        if "val_acc" in row:
            parts.append(f"val {row['val_loss']:.4f}/{row['val_acc']:.4f}")
        parts += [f"test {row['test_loss']:.4f}/{row['test_acc']:.4f}", f"lr {row['lr']:.4g}",
                  f"{row['epoch_time_s']:.1f}s", f"{row['images_per_s']:,.0f} img/s"]
        self.p.console.print("  ".join(parts))

    def note(self, text: str) -> None:
        """Print one line above the bar."""
        if self.p is not None:
            self.p.console.print(text, highlight=False, markup=False)

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()


def _progress_bar(console: Any = None) -> Any:
    """The training bar's rich ``Progress``: the bar takes what the text leaves, so one line fits 80 columns."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Column

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(bar_width=None, table_column=Column(ratio=1)),
        MofNCompleteColumn(), TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), _EtaColumn(),
        console=console, expand=True,
    )


def _eta_text(task: Any, now: float) -> str:
    """``ETA h:mm:ss`` from the task's seconds per step, counting down since its last update."""
    per_step = task.fields.get("per_step")
    if per_step is None or task.total is None:
        return "ETA -:--:--"
    left = max(0.0, (task.total - task.completed) * per_step - (now - task.fields["at"]))
    m, sec = divmod(int(round(left)), 60)
    return f"ETA {m // 60}:{m % 60:02d}:{sec:02d}"


def _EtaColumn() -> Any:  # noqa: N802 - a rich column class made on first use (rich is imported lazily)
    from rich.progress import ProgressColumn
    from rich.text import Text

    class EtaColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(_eta_text(task, time.perf_counter()), style="progress.remaining")

    return EtaColumn()
