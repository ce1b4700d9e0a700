"""Save and load compressed models: structure and weights in one file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .files import atomic_open
from .models.resnet import ResNet, ResNetConfig

__all__ = ["save", "load"]

FORMAT = "compress.model/1"


def save(model: nn.Module, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s structure and weights to ``path`` (atomically) and return the path.

    A compress :class:`~compress.models.ResNet` is stored with its config, so :func:`load` rebuilds it
    alone. Any other module (e.g. a pruned torchvision ResNet) is stored with its state dict and its
    layer shapes; :func:`load` then needs a template instance of the original class (``model=``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"save() takes an nn.Module, got {type(model).__name__}")
    metadata = check_metadata(metadata)  # before anything is written: a file load() refuses is never made
    path = Path(path)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata,
    }
    if isinstance(model, ResNet):
        payload["config"] = model.config.to_dict()
    else:
        payload["class"] = f"{type(model).__module__}.{type(model).__qualname__}"
    with atomic_open(path) as f:
        torch.save(payload, f)
    return path


_METADATA_TYPES = "None, bool, int, float, str, torch tensors, and lists, tuples and dicts (str or int keys) of them"


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``metadata`` that :func:`load` can read back (``torch.load(weights_only=True)``).

    numpy scalars become the Python number of the same value; anything else outside
    None, bool, int, float, str, tensors, lists, tuples and dicts raises ``TypeError`` naming the key.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    return _plain(metadata, "metadata")


def _plain(value: Any, where: str) -> Any:
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, np.generic) and isinstance(value.item(), (bool, int, float)):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        return type(value)(_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; metadata keys are str or int")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    hint = " (convert it, e.g. str(...), .tolist() or torch.as_tensor(...))"
    raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which load() cannot read "
                    f"back; metadata holds {_METADATA_TYPES}{hint}")


def _read(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved model at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not our file"
        raise ValueError(f"{path} is not a file written by compress.save ({e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a file written by compress.save (format {FORMAT!r})")
    return payload


def load(path: str | os.PathLike, *, model: nn.Module | None = None, with_metadata: bool = False):
    """Rebuild the model saved at ``path`` (in eval mode), weights included.

    For a compress ResNet nothing else is needed. For other models pass ``model=``, a fresh instance of
    the original (unpruned) class: its layers are resized to the saved shapes, then loaded.
    With ``with_metadata=True`` returns ``(model, metadata)``.
    """
    payload = _read(path)
    state = payload["state_dict"]
    if "config" in payload:
        net: nn.Module = ResNet(ResNetConfig.from_dict(payload["config"]))
    else:
        if model is None:
            raise ValueError(
                f"{path} holds a {payload.get('class', 'non-compress')} model; pass model=<a fresh instance "
                "of that class> to load it"
            )
        import copy

        net = copy.deepcopy(model)
        _resize_to(net, state)
        for module in net.modules():  # a compress ResNet inside a wrapper: its config follows the new shapes
            if isinstance(module, ResNet):
                module.config = module.config_from_modules()
    net.load_state_dict(state)
    net.eval()
    return (net, payload["metadata"]) if with_metadata else net


def _resize_to(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give ``model``'s parameters and buffers the shapes in ``state`` (pruned layers are smaller)."""
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        for pname, p in list(module.named_parameters(recurse=False)):
            saved = state.get(prefix + pname)
            if saved is not None and saved.shape != p.shape:
                setattr(module, pname, nn.Parameter(torch.empty_like(saved), requires_grad=p.requires_grad))
        for bname, b in list(module.named_buffers(recurse=False)):
            saved = state.get(prefix + bname)
            if saved is not None and b is not None and saved.shape != b.shape:
                module.register_buffer(bname, torch.empty_like(saved))
        if isinstance(module, nn.modules.conv._ConvNd):
            module.out_channels = module.weight.shape[0]
            module.in_channels = module.weight.shape[1] * module.groups
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
        elif isinstance(module, nn.modules.batchnorm._NormBase) and module.weight is not None:
            module.num_features = module.weight.shape[0]
