"""Save and load compressed models: structure and weights in one file, checked when written.

The file is a ``torch.save`` of plain data only (tensors, numbers, strings, tuples, lists, dicts), read
back with ``weights_only=True``: loading never runs code from the file.

- A compress :class:`~compress.models.ResNet` is stored with its config; :func:`load` rebuilds it alone.
- Any other module (a pruned torchvision model, say) is stored with its state dict, the state dict's
  per-module versions (``mnasnet`` needs them), and, for every submodule, its class name and every
  instance attribute that is plain data: ``in_channels``/``out_channels``/``groups`` of a conv,
  ``normalized_shape`` of a LayerNorm, ``num_features``/``num_channels`` of a BatchNorm/GroupNorm,
  ``num_heads``/``embed_dim``/``head_dim`` of an attention layer, ``hidden_dim`` of a ViT, ... whatever a
  pruned layer depends on, with each layer's parameter slots and persistent buffers. :func:`load`
  rebuilds it from the classes the file names (imported, so the model's package must be installed), or
  takes the classes from a template (a fresh instance of the original class, ``model=``), and
  everything else from the file. Attributes that are code (a function, a class, a ``functools.partial``,
  an enum) are imported by name (classes and functions only) or come from the template, checked to be the same.

:func:`save` reloads the file it wrote and runs both models on an example input before putting the file
in place: a model that would not load back to the same outputs is refused, naming the layer, and any
file already at that path is left as it was.

Why this module is long: writing, the round-trip check and reading are one file format; the check
rebuilds through the same private describe/rebuild functions that :func:`load` uses, and splitting them
across modules would make those private helpers cross a module boundary.
"""

from __future__ import annotations

import copy
import enum
import errno
import io
import functools
import hashlib
import importlib
import os
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .files import atomic_open
from .metrics import example_input as build_example_input
from .models.resnet import ResNet, ResNetConfig

__all__ = ["save", "load", "load_refusal"]

FORMAT = "compress.model/2"
_READABLE = ("compress.model/1", FORMAT)  # /1: no per-module attributes (conv/linear/BN sizes derived from shapes)
_MODULE_INTERNALS = frozenset(nn.Module().__dict__)  # training flag, parameter/buffer/module dicts, hooks
_PLAIN_TYPES = (type(None), bool, int, float, str, bytes, torch.dtype, torch.device, torch.Tensor, torch.Size)
_EXAMPLE_SIZES = (32, 224)  # spatial sizes tried for the check when no example_input is given
_RTOL = 1e-4  # outputs must agree to float rounding (a copy may pick other kernels, e.g. another memory format)


def save(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    metadata: dict[str, Any] | None = None,
    example_input: torch.Tensor | Sequence[torch.Tensor] | Sequence[int] | None = None,
) -> Path:
    """Write ``model``'s structure and weights to ``path`` (atomically), check it loads back, return the path.

    A compress :class:`~compress.models.ResNet` is stored with its config, so :func:`load` rebuilds it
    alone. Any other module (e.g. a pruned torchvision model) is stored with its state dict and every
    plain-data attribute of its layers (channels, groups, normalized shapes, heads, ...); :func:`load`
    then needs a template instance of the original class (``model=``).

    Before the file is put in place it is read back (``weights_only``), rebuilt, and the rebuilt model
    is run against ``model`` (both in eval mode) on ``example_input``: a tensor, a tuple of
    positional inputs, or a shape (zeros of it; see :func:`compress.metrics.example_input`). Without it, a seeded random image batch of one is used, ``(1, C, 32, 32)`` with C
    the first layer's input channels (224x224 if the model does not run at 32x32). If the outputs
    differ, or a layer holds something that cannot be stored, a ``ValueError`` names the layer and
    nothing is written (an existing file at ``path`` is left intact). ``model`` is not changed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"save() takes an nn.Module, got {type(model).__name__}")
    metadata = check_metadata(metadata)  # before anything is written: a file load() refuses is never made
    path = Path(path)
    if path.is_dir():  # found now, not after the round-trip check
        raise IsADirectoryError(errno.EISDIR, f"cannot write {path}: it is a folder; save() takes the path of a file, "
                                f"such as {path / 'model.pt'}", str(path))
    state = model.state_dict()
    payload: dict[str, Any] = {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
        "state_versions": _state_versions(state),
        "metadata": metadata,
    }
    if isinstance(model, ResNet):
        payload["config"] = model.config.to_dict()
    else:
        payload["class"] = _class_path(model)
        payload["modules"] = _describe_modules(model, path)
    payload["checksum"] = checksum(payload)
    buffer = io.BytesIO()  # checked in memory, then written atomically: a refused model leaves no file
    torch.save(payload, buffer)
    buffer.seek(0)
    try:
        written = torch.load(buffer, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - e.g. metadata that is not plain data
        raise ValueError(f"save() refused to write {path}: the file would not load back ({_one_line(e)})") from e
    _check_round_trip(model, written, example_input, path)
    with atomic_open(path) as f:
        f.write(buffer.getvalue())
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




def load(path: str | os.PathLike, *, model: nn.Module | None = None, with_metadata: bool = False):
    """Rebuild the model saved at ``path`` (in eval mode, on the CPU), weights included.

    For a compress ResNet nothing else is needed. Any other model is rebuilt from the classes the file
    names (imported from the modules that define them: the model's class must be importable here, as
    ``torchvision.models.resnet.ResNet`` or a class of the user's own package is; only ``nn.Module``
    subclasses are built, their ``__init__`` is not run, and no stored attribute may stand in for a method),
    or, with ``model=``, from a fresh instance of the original (unpruned) class; it is not changed: a copy
    gets the saved layer sizes, attributes and weights. Files of older versions (no parameter slots
    stored) need ``model=``. A template whose layers are not those of the saved model (another class, a missing or extra
    layer, other code in an attribute) is refused with a ``ValueError`` naming the layer.
    With ``with_metadata=True`` returns ``(model, metadata)``.
    """
    payload = _read(path)
    if "config" not in payload and model is None:
        model = _template_from_classes(payload, path)
    else:
        model = None if model is None else copy.deepcopy(model)
    try:
        net = _rebuild(payload, model)
    except (KeyError, RuntimeError, TypeError, AttributeError, IndexError) as e:  # ValueErrors name the template's misfit
        raise ValueError(f"{path} is damaged or was changed after compress.save wrote it: it does not rebuild "
                         f"({type(e).__name__}: {_one_line(e)})") from e
    return (net, payload.get("metadata", {})) if with_metadata else net


# --- what is stored ---------------------------------------------------------------------------------

def _class_path(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_plain(value: Any) -> bool:
    """Data that ``torch.load(weights_only=True)`` reads back as it was."""
    if type(value) in _PLAIN_TYPES:
        return True
    if type(value) in (tuple, list, set, frozenset):
        return all(_is_plain(v) for v in value)
    if type(value) is dict:
        return all(isinstance(k, (str, int)) and _is_plain(v) for k, v in value.items())
    return False


def _plain_copy(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.detach().cpu().clone()
    if type(value) in (tuple, list, set, frozenset):
        return type(value)(_plain_copy(v) for v in value)
    if type(value) is dict:
        return {k: _plain_copy(v) for k, v in value.items()}
    return value


def _code_name(value: Any, depth: int = 0) -> str | None:
    """A stable description of an attribute that is code (the template must hold the same), or None."""
    if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
        return _class_path(value) if isinstance(value, type) else f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, types.MethodType):
        return f"{_code_name(value.__func__)} of a {_class_path(value.__self__)}"
    if isinstance(value, enum.Enum):
        return f"{_class_path(value)}.{value.name}"
    if isinstance(value, functools.partial) and depth < 3:
        args = [_code_or_value(a, depth) for a in value.args]
        kwargs = {k: _code_or_value(v, depth) for k, v in sorted(value.keywords.items())}
        func = _code_name(value.func, depth + 1)
        if func is None or None in args or None in kwargs.values():
            return None
        return f"functools.partial({', '.join([func, *args, *(f'{k}={v}' for k, v in kwargs.items())])})"
    return None


def _code_or_value(value: Any, depth: int) -> str | None:
    """A partial's argument as text: the repr of plain data (no tensors), else its code name, else None."""
    if _is_plain(value) and not any(torch.is_tensor(v) for v in _leaves(value)):
        return repr(value)
    return _code_name(value, depth + 1)


def _describe_modules(model: nn.Module, path: Path) -> dict[str, dict[str, Any]]:
    """Per submodule: class, plain attributes, code attributes, non-persistent buffers."""
    described = {}
    for name, module in model.named_modules():
        attrs, code = {}, {}
        for key, value in vars(module).items():
            if key in _MODULE_INTERNALS:
                continue
            if isinstance(module, ResNet) and key == "config":  # a ResNet inside a wrapper: re-read from its layers on load
                continue
            if _is_plain(value):
                attrs[key] = _plain_copy(value)
            elif (desc := _code_name(value)) is not None:
                code[key] = desc
            else:
                raise ValueError(
                    f"save() cannot store attribute {key!r} of layer {name or '<model>'!r} ({type(module).__name__}): "
                    f"it holds a {_class_path(value)}, which is neither plain data nor code, so a loaded model "
                    f"could not be shown to match; nothing was written to {path}"
                )
        hooks = _hook_names(module)
        if None in hooks:
            raise ValueError(
                f"save() cannot store the forward hooks of layer {name or '<model>'!r} ({type(module).__name__}): "
                f"one is a callable object, not a function, so a loaded model could not be shown to have it; "
                f"nothing was written to {path}"
            )
        buffers = {
            k: b.detach().cpu() for k, b in module._buffers.items()
            if b is not None and k in module._non_persistent_buffers_set
        }
        described[name] = {"class": _class_path(module), "attrs": attrs, "code": code, "hooks": hooks, "buffers": buffers,
                           # what load() needs to rebuild the layer without a template: its parameter slots
                           # (None: an absent bias) and persistent buffers, by name
                           "parameters": {k: None if v is None else bool(v.requires_grad) for k, v in module._parameters.items()},
                           "persistent": [k for k in module._buffers if k not in module._non_persistent_buffers_set]}
    return described


def _hook_names(module: nn.Module) -> list[str | None]:
    """Forward (pre-)hooks change what a layer computes: they are code the template must hold too."""
    return [_code_name(h) for hooks in (module._forward_pre_hooks, module._forward_hooks) for h in hooks.values()]


def _state_versions(state: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """A state dict's per-module metadata (versions read by ``_load_from_state_dict``, e.g. mnasnet's)."""
    meta = getattr(state, "_metadata", None) or {}
    return {k: {kk: vv for kk, vv in v.items() if _is_plain(vv)} for k, v in meta.items()}


# --- reading and rebuilding -------------------------------------------------------------------------

def checksum(payload: dict[str, Any]) -> str:
    """``sha256:<hex>`` of everything a saved file holds but the checksum itself: every tensor's name,
    dtype, shape and bytes, the config or layer descriptions, and the metadata. :func:`save` stores it;
    every read checks it, so a flipped bit or an edited value is found before the model is used."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != "checksum"})
    return f"sha256:{h.hexdigest()}"


def _feed(h: Any, obj: Any) -> None:
    """Add ``obj`` to the hash ``h`` in one canonical form (dict keys sorted, tensors by dtype, shape, bytes)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for k in sorted(obj, key=repr):
            h.update(f"{k!r}=".encode())
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def _read(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved model at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not our file"
        raise ValueError(f"{path} is not a file written by compress.save ({load_refusal(e)})") from e
    if not isinstance(payload, dict) or payload.get("format") not in _READABLE:
        raise ValueError(f"{path} is not a file written by compress.save (format {FORMAT!r})")
    stored = payload.get("checksum")  # files written before checksums have none
    if stored is not None and stored != checksum(payload):
        raise ValueError(f"{path} was changed after compress.save wrote it: its contents no longer match the checksum "
                         "saved with them (a flipped bit, an edited value or a damaged copy); save it again from "
                         "the original model")
    return payload


def load_refusal(e: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line (without torch's advice to load it
    unsafely): for the messages of :func:`load` and of the trainer's checkpoint reader."""
    text = str(e)
    if "Weights only load failed" in text:
        lines = [ln.strip() for ln in text.splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
        reason = lines[0].split("WeightsUnpickler error:")[-1].split(". Please use")[0].strip() if lines else "not plain data"
        return f"it holds objects other than plain data and was not loaded, since loading would run code: {_one_line(reason, 160)}"
    return f"{type(e).__name__}: {_one_line(e, 200)}" if text else type(e).__name__


_unreadable = load_refusal  # its old, private name (compress.training.trainer imports it)


def _import(path: str, what: str) -> Any:
    """The class or function named ``module.qualname``, imported (a ``ValueError`` if it is not importable)."""
    parts = path.split(".")
    if "<locals>" in parts:
        raise ValueError(f"{what} {path} was defined inside a function, so it cannot be imported")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise ValueError(f"{what} {path} cannot be imported here (is its package installed?)")


def _template_from_classes(payload: dict[str, Any], path: str | os.PathLike) -> nn.Module:
    """An empty model of the saved structure, built from the classes the file names (no template given)."""
    saved = payload.get("modules")
    hint = f"pass model=<a fresh instance of {payload.get('class', 'its class')}> to load {path}"
    if not isinstance(saved, dict) or any("parameters" not in e for e in saved.values()):
        raise ValueError(f"{path} was written by an older compress.save, which did not store the layers' parameter "
                         f"slots; {hint}")
    state = _state_dict(payload)
    built: dict[str, nn.Module] = {}
    try:
        for name, entry in saved.items():
            cls = _import(entry["class"], f"layer {name or '<model>'!r}: class")
            if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
                raise ValueError(f"layer {name or '<model>'!r}: {entry['class']} is not an nn.Module class")
            if entry["hooks"]:
                raise ValueError(f"layer {name or '<model>'!r} has forward hooks, which only a template can bring")
            module = cls.__new__(cls)
            nn.Module.__init__(module)
            for key, desc in entry["code"].items():
                if hasattr(cls, key):
                    raise ValueError(f"layer {name or '<model>'!r}: attribute {key!r} would hide the class's own")
                value = _import(desc, f"layer {name or '<model>'!r}, attribute {key!r}:")
                if _code_name(value) != desc:
                    raise ValueError(f"layer {name or '<model>'!r}: attribute {key!r} ({desc}) is not a class or function")
                setattr(module, key, value)
            prefix = f"{name}." if name else ""
            for pname, grad in entry["parameters"].items():
                saved_p = None if grad is None else state[prefix + pname]
                module.register_parameter(pname, None if saved_p is None else
                                          nn.Parameter(torch.empty_like(saved_p), requires_grad=grad))
            for bname in entry["persistent"]:
                saved_b = state.get(prefix + bname)
                module.register_buffer(bname, None if saved_b is None else torch.empty_like(saved_b))
            if name:
                parent, _, leaf = name.rpartition(".")
                built[parent].add_module(leaf, module)
            built[name] = module
    except ValueError as e:
        raise ValueError(f"{path} cannot be rebuilt from its classes ({e}); {hint}") from e
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path} is damaged or was changed after compress.save wrote it: it does not rebuild "
                         f"({type(e).__name__}: {_one_line(e)})") from e
    return built[""]


def _state_dict(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    state = OrderedDict(payload["state_dict"])
    state._metadata = OrderedDict((k, dict(v)) for k, v in payload.get("state_versions", {}).items())  # type: ignore[attr-defined]
    return state


def _rebuild(payload: dict[str, Any], template: nn.Module | None) -> nn.Module:
    """The saved model, in eval mode: from its config, or ``template`` (changed in place) made to match."""
    state = _state_dict(payload)
    if "config" in payload:
        net: nn.Module = ResNet(ResNetConfig.from_dict(payload["config"]))
    else:
        assert template is not None
        net = template
        if "modules" in payload:
            _restore_modules(net, payload["modules"], state)
        else:  # compress.model/1
            _resize_to(net, state)
        for module in net.modules():  # a compress ResNet inside a wrapper: its config follows the new shapes
            if isinstance(module, ResNet):
                module.config = module.config_from_modules()
    net.load_state_dict(state)
    net.eval()
    return net


def _restore_modules(net: nn.Module, saved: dict[str, dict[str, Any]], state: dict[str, torch.Tensor]) -> None:
    """Give ``net``'s layers the saved attributes and parameter/buffer shapes; check classes and code."""
    modules = dict(net.named_modules())
    extra = [name for name in modules if name not in saved]
    if extra:
        raise ValueError(f"the template does not match the saved model: it has a layer {extra[0]!r} that the saved model lacks")
    for name, entry in saved.items():
        module = modules.get(name)
        where = name or "<model>"
        if module is None:
            raise ValueError(f"the template does not match the saved model: it has no layer {where!r} ({entry['class']})")
        if _class_path(module) != entry["class"]:
            raise ValueError(
                f"the template does not match the saved model at layer {where!r}: "
                f"{_class_path(module)} in the template, {entry['class']} in the file"
            )
        for key, desc in entry["code"].items():
            have = _code_name(vars(module).get(key))
            if have != desc:
                raise ValueError(
                    f"the template does not match the saved model at layer {where!r}: attribute {key!r} is "
                    f"{have or 'missing'} in the template, {desc} in the file"
                )
        if _hook_names(module) != entry["hooks"]:
            raise ValueError(
                f"the template does not match the saved model at layer {where!r}: forward hooks "
                f"{_hook_names(module) or 'none'} in the template, {entry['hooks'] or 'none'} in the file"
            )
        for key, value in entry["attrs"].items():
            setattr(module, key, value)
        prefix = f"{name}." if name else ""
        for pname, p in list(module._parameters.items()):
            saved_p = state.get(prefix + pname)
            if p is not None and saved_p is not None and saved_p.shape != p.shape:
                setattr(module, pname, nn.Parameter(torch.empty_like(saved_p), requires_grad=p.requires_grad))
        for bname, b in list(module._buffers.items()):
            saved_b = state.get(prefix + bname)
            if b is not None and saved_b is not None and saved_b.shape != b.shape:
                module._buffers[bname] = torch.empty_like(saved_b)
        for bname, b in entry["buffers"].items():
            module.register_buffer(bname, b.clone(), persistent=False)


def _resize_to(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """compress.model/1 files: give ``model``'s tensors the saved shapes and derive conv/linear/BN sizes."""
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


# --- the check at save time -------------------------------------------------------------------------

class _Unset:
    """Stands for a stored attribute in the blank copy the check rebuilds into: any use of it fails."""

    def __repr__(self) -> str:
        return "<attribute not restored by compress.load>"


def _blank_copy(model: nn.Module, saved: dict[str, dict[str, Any]]) -> nn.Module:
    """A copy of ``model`` without what the file stores: empty parameters/buffers, stored attributes unset.

    Rebuilding the file into it shows that everything the forward pass reads comes from the file.
    """
    memo: dict[int, Any] = {}
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None:
                memo[id(p)] = nn.Parameter(p.new_empty(0), requires_grad=p.requires_grad)
        for b in module._buffers.values():
            if b is not None:
                memo[id(b)] = b.new_empty(0)
    blank = copy.deepcopy(model, memo)
    modules = dict(blank.named_modules())
    for name, entry in saved.items():
        for key in entry["attrs"]:
            setattr(modules[name], key, _Unset())
    return blank


def _example_inputs(model: nn.Module, size: int) -> tuple[torch.Tensor, ...] | None:
    first = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    first = first or next((m for m in model.modules() if isinstance(m, nn.Linear)), None)
    try:
        param = next(model.parameters())
    except StopIteration:
        return None
    if isinstance(first, nn.modules.conv._ConvNd):
        shape = (1, first.in_channels, *[size] * (first.weight.dim() - 2))
    elif isinstance(first, nn.Linear):
        shape = (1, first.in_features)
    else:
        return None
    dtype = param.dtype if param.is_floating_point() else torch.float32
    return build_example_input(shape, seed=0, device=param.device, dtype=dtype)


def _leaves(out: Any) -> list[Any]:
    if torch.is_tensor(out):
        return [out]
    if isinstance(out, dict):
        return [x for k in out for x in _leaves(out[k])]
    if isinstance(out, (tuple, list)):
        return [x for v in out for x in _leaves(v)]
    return [out]


def _same(a: Any, b: Any) -> bool:
    la, lb = _leaves(a), _leaves(b)
    if len(la) != len(lb):
        return False
    for x, y in zip(la, lb):
        if torch.is_tensor(x) != torch.is_tensor(y):
            return False
        if not torch.is_tensor(x):
            if x != y:
                return False
        elif x.shape != y.shape or x.dtype != y.dtype:
            return False
        elif x.is_floating_point() or x.is_complex():
            y = y.to(x.device)
            scale = x.abs().max().item() if x.numel() else 0.0
            if not torch.allclose(y, x, rtol=_RTOL, atol=_RTOL * scale, equal_nan=True):
                return False
        elif not torch.equal(x, y.to(x.device)):
            return False
    return True


def _run(model: nn.Module, inputs: tuple, outputs: dict[str, Any] | None = None, entered: list | None = None) -> Any:
    """``model(*inputs)`` without grad; with ``outputs``/``entered``, record each layer's output (in the
    order layers finish) and the layers entered."""
    handles = []
    if outputs is not None:
        for name, m in model.named_modules():
            handles.append(m.register_forward_pre_hook(lambda _m, _i, name=name: entered.append(name)))
            handles.append(m.register_forward_hook(lambda _m, _i, out, name=name: outputs.setdefault(name, out)))
    try:
        with torch.no_grad():
            return model(*inputs)
    finally:
        for h in handles:
            h.remove()


def _first_difference(model: nn.Module, rebuilt: nn.Module, inputs: tuple) -> str:
    """Name the first layer to finish whose output differs between the two models (or the one that fails)."""
    ours: dict[str, Any] = {}
    _run(model, inputs, ours, [])
    theirs: dict[str, Any] = {}
    entered: list[str] = []
    try:
        _run(rebuilt, inputs, theirs, entered)
    except Exception as e:  # noqa: BLE001 - reported with the layer it happened in
        where = entered[-1] if entered else ""
        return f"layer {where or '<model>'!r} fails after reloading ({type(e).__name__}: {_one_line(e)})"
    kinds = {name: type(m).__name__ for name, m in model.named_modules()}
    for name in ours:  # dicts keep insertion order: the order the layers finished in
        if name in theirs and not _same(ours[name], theirs[name]):
            return f"layer {name or '<model>'!r} ({kinds[name]}) gives different outputs after reloading"
    return "the outputs differ after reloading"


def _one_line(e: BaseException | str, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _NonFinite(ValueError):
    """The model's own outputs are NaN or infinite: nothing to check a saved copy against."""


def _check_round_trip(model: nn.Module, payload: dict[str, Any], example_input: Any, path: Path) -> None:
    """Rebuild ``payload`` and compare it with ``model`` on an example input; ValueError if they differ."""
    refused = f"save() refused to write {path}"
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        if example_input is not None:
            candidates = [build_example_input(example_input)]
        else:
            candidates = [c for s in _EXAMPLE_SIZES if (c := _example_inputs(model, s)) is not None]
        if not candidates:
            raise ValueError(f"{refused}: cannot guess an input for {type(model).__name__}; pass example_input=")
        errors = []
        for inputs in candidates:
            try:
                expected = _run(model, inputs)
                if not all(bool(torch.isfinite(t).all()) for t in _leaves(expected) if torch.is_tensor(t) and t.is_floating_point()):
                    raise _NonFinite(f"{refused}: the model's outputs are NaN or infinite on a "
                                     f"{'x'.join(map(str, inputs[0].shape))} input (its weights have diverged?), so "
                                     "no saved copy can be checked against it")
                break
            except _NonFinite as e:
                raise ValueError(str(e)) from None
            except Exception as e:  # noqa: BLE001 - try the next size, then report them all
                errors.append(f"{'x'.join(map(str, inputs[0].shape))}: {type(e).__name__}: {_one_line(e)}")
        else:
            if example_input is not None:
                raise ValueError(f"{refused}: the model does not run on example_input ({errors[0]})")
            raise ValueError(f"{refused}: the model does not run on a guessed input ({'; '.join(errors)}); pass example_input=")
        template = None if "config" in payload else _blank_copy(model, payload["modules"])
        try:
            rebuilt = _rebuild(payload, template)
        except Exception as e:  # noqa: BLE001 - e.g. a ResNet whose config no longer describes its layers
            raise ValueError(f"{refused}: the file does not load back ({type(e).__name__}: {_one_line(e)})") from e
        device = inputs[0].device if torch.is_tensor(inputs[0]) else torch.device("cpu")
        rebuilt.to(device)
        try:
            got = _run(rebuilt, inputs)
        except Exception:  # noqa: BLE001 - located below
            got = _Unset()
        if not _same(expected, got):
            raise ValueError(f"{refused}: {_first_difference(model, rebuilt, inputs)}")
    finally:
        for m, training in modes.items():
            m.training = training
