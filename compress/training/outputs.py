"""What the trainer writes: its resumable checkpoint, the per-epoch history, the final model and result.

The trainer is given the paths (:class:`TrainFiles`). ``train(out_dir=DIR)`` uses the default names
below, which a run folder's recipe sub-folder (:class:`compress.runfolder.RecipeFolder`) takes from here.
Every file is written atomically (:mod:`compress.files`). A checkpoint holds tensors and plain values
only, so it loads with ``weights_only=True``; its RNG states (torch, CUDA, numpy, Python) are stored
per rank, so a resumed run continues each rank's augmentation stream.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from ..files import atomic_open, write_json
from ..io import load, load_refusal, save
from . import distributed
from .config import TrainConfig

if TYPE_CHECKING:  # the trainer imports this module
    from .trainer import TrainResult

__all__ = ["TrainFiles", "median_epoch_s", "CHECKPOINT_FORMAT", "CHECKPOINT", "HISTORY", "MODEL", "RESULT", "save_checkpoint", "load_checkpoint", "check_same_run",
           "write_history", "write_outputs", "check_against_model_file", "seed_everything", "rng_state",
           "set_rng_state", "gather_rng"]

CHECKPOINT_FORMAT = "compress.checkpoint/1"

#: The file names of ``train(out_dir=DIR)``.
CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"
MODEL = "model.pt"
RESULT = "result.json"


@dataclass(frozen=True)
class TrainFiles:
    """Where :func:`~compress.training.train` writes: ``checkpoint`` (after every epoch, and inside one on
    a timer), ``history`` (the per-epoch metrics), ``model`` (:func:`compress.save`, with the result and
    config as metadata) and ``result`` (the :class:`~compress.training.TrainResult` as JSON)."""

    checkpoint: Path
    history: Path
    model: Path
    result: Path

    @classmethod
    def in_folder(cls, folder: str | os.PathLike) -> TrainFiles:
        """The files in ``folder`` under the default names (those of a run folder's recipe sub-folder)."""
        f = Path(folder)
        return cls(checkpoint=f / CHECKPOINT, history=f / HISTORY, model=f / MODEL, result=f / RESULT)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (:func:`compress.files.atomic_open`)."""
    with atomic_open(path) as f:
        torch.save(state, f)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint in ``path``; ``ValueError`` (one line) if it is unreadable or not a compress checkpoint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure
        # one line, without torch's advice to load the file unsafely
        raise ValueError(f"{path} is not a readable compress checkpoint ({load_refusal(e)})") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a compress checkpoint (format {CHECKPOINT_FORMAT!r})")
    return state


def check_same_run(saved: dict[str, Any], config: TrainConfig, n_epochs: int, max_steps: int | None, path: Path) -> None:
    """``ValueError`` unless the checkpoint ``saved`` (read from ``path``) was written by a run of ``config``
    over ``n_epochs`` epochs capped at ``max_steps`` steps: resume continues only the same run."""
    # the saved config read back through from_dict: fields added to TrainConfig since take their defaults
    try:
        same_config = TrainConfig.from_dict(saved["config"]).to_dict() == config.to_dict()
    except ValueError:  # a field since removed or renamed
        same_config = False
    if not same_config or saved["epochs"] != n_epochs or saved["max_steps_per_epoch"] != max_steps:
        raise ValueError(
            f"{path} was written by a run with a different config, epoch count ({saved['epochs']} epochs) or "
            f"max_steps_per_epoch ({saved['max_steps_per_epoch']}); resume needs the same ones, or use a fresh out_dir"
        )


def _write_json(path: Path, obj: Any) -> None:
    write_json(path, obj, indent=1)


def write_history(files: TrainFiles, history: list[dict[str, Any]]) -> None:
    """The per-epoch metrics so far, to ``files.history``."""
    _write_json(files.history, history)


def check_against_model_file(result: TrainResult, files: TrainFiles) -> None:
    """A finished checkpoint's result must be the one ``model.pt`` (checksummed by compress.save) recorded:
    an edited checkpoint history is refused rather than reported (nothing to check without a model file)."""
    path = files.model
    if not path.is_file():
        return
    _, meta = load(path, model=result.model, with_metadata=True)
    for key in ("test_acc", "selected_epoch", "epochs_run"):
        if key in meta and meta[key] != getattr(result, key):
            raise ValueError(f"{files.checkpoint} says {key} {getattr(result, key)} but {path}, written "
                             f"when the run finished, says {meta[key]}: the checkpoint was edited; delete the folder "
                             "to train again")


def write_outputs(files: TrainFiles, result: TrainResult, config: TrainConfig) -> None:
    """``model.pt`` (compress.save, result and config as metadata) and ``result.json``."""
    save(result.model, files.model, metadata={**result.to_dict(), "config": config.to_dict()})
    _write_json(files.result, result.to_dict())


# RNG state ------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(dev: torch.device) -> dict[str, Any]:
    """All RNG states as tensors and plain values (so the checkpoint loads with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": [version, list(internal), gauss_next],
    }


def set_rng_state(state: dict[str, Any], dev: torch.device) -> None:
    """Restore what :func:`rng_state` recorded."""
    torch.set_rng_state(state["torch"])
    if dev.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], dev)
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def gather_rng(info: distributed.DistInfo, dev: torch.device, partial: Any = None) -> list[dict[str, Any]]:
    """Every rank's ``{"rng": RNG state, "partial": partial}`` (rank order), so each rank resumes its own
    augmentation stream (and, mid-epoch, its own sums)."""
    mine = {"rng": rng_state(dev), "partial": partial}
    if not info.enabled:
        return [mine]
    gathered: list[Any] = [None] * info.world_size
    torch.distributed.all_gather_object(gathered, mine)
    return gathered


def median_epoch_s(history: Sequence[Mapping[str, Any]]) -> float | None:
    """The median wall time of one epoch in a trainer's ``history`` (seconds, to 0.1), or ``None`` without
    timings: what an epoch costs, which a few epochs slowed by a paused process or by the final
    test-time-augmented evaluation do not move."""
    times = sorted(float(h["epoch_time_s"]) for h in history if isinstance(h, Mapping) and h.get("epoch_time_s") is not None)
    if not times:
        return None
    mid = len(times) // 2
    return round(times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2, 1)
