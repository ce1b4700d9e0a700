"""Recipes: one YAML file per model, saying how to build it from ResNet-18 and how to train it.

A recipe is data, never code per paper::

    name: "003"
    title: Efficient ResNets (Thakur, Chauhan, Gupta)
    source: |
      What the report says, what its code did, and where they disagree.
    model:                      # transforms applied to a fresh ResNet-18, in order
      - remove_stage: {index: 3}
      - redistribute_blocks: {blocks: [4, 4, 3]}
      - add_se: {where: stem, reduction: 16}
    train: {...}                # exactly compress.training.TrainConfig.from_dict(...)
    fast: {...}                 # optional overrides of the shared short schedule (FAST_TRAIN)
    claims:
      params: 4697742
      accuracy: 96.04           # percent, as the report states it (null: no claim)
      accuracy_basis: maximum test accuracy over epochs

A recipe may start from trained weights instead of a fresh ResNet-18: a published checkpoint by name
(:mod:`compress.weights`: found in ``$COMPRESS_WEIGHTS`` or torch's hub cache, else downloaded once, its
SHA-256 checked), or a file of the user's: a checkpoint imported with
:func:`compress.models.from_checkpoint` or a :func:`compress.save` file (the path is relative to the
recipe file, or found by its name in ``$COMPRESS_WEIGHTS``; a ``sha256`` given is checked before it is read)::

    weights: {name: resnet56-4bfd9763}          # or {path: mymodel.pt}, or {path: ckpt.th, sha256: ..., layout: auto}
    finetune: false             # only evaluate (before and after the transforms); default true

Such a recipe may distil the model before its transforms into the transformed one (``train.distill``),
and may learn sparsely before its ``prune`` step (DepGraph's group-norm regulariser on the groups that
step cuts; docs/transforms/sparse.md)::

    sparse: {method: group_norm, epochs: 15, reg: 5.0e-4}   # compress.SparseConfig's fields; train: the
                                                            # phase's setup (default: the budget's own,
                                                            # without weight decay or distillation)

Its ``prune`` steps use prune's preset for trained networks (``preset: trained``, that is
:meth:`compress.PruneConfig.trained`: global ranking, L2, residual streams kept) unless the step names
another (``preset: untrained``); the older ``trained: true`` / ``trained: false`` still mean the same.

:func:`load` validates the file (unknown or mistyped keys, unknown transforms or transform arguments
raise :class:`RecipeError` naming the file, the key and the accepted keys) and returns a
:class:`Recipe`; :meth:`Recipe.build` gives the model.

Why this module is long: a recipe file is checked here key by key (each section's errors name the file
and the key), and the checks of its sections (model steps, prune steps, weights, sparse, claims, train)
depend on each other; the schedules and the schema helpers are already elsewhere.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from torch import nn

from ._schema import SchemaError, convert, from_dict, merge
from .io import load as load_saved
from .models import from_checkpoint, resnet18
from .training.config import TrainConfig
from .training.prune_trained import SparseConfig, sparse_learn
from .training.schedules import FAST_TRAIN, FAST_TRAIN_V1, FAST_TRAIN_V2, TIME_BUDGET_TRAIN
from .transforms import REGISTRY
from .transforms.prune import KEYWORDS, PruneConfig
from .weights import Weights
from .weights import sha256_of as _sha256

__all__ = [
    "BUDGET_PARAMS",
    "FAST_TRAIN",
    "FAST_TRAIN_V1",
    "FAST_TRAIN_V2",
    "TIME_BUDGET_TRAIN",
    "Claims",
    "Weights",
    "Recipe",
    "RecipeError",
    "check_unique_names",
    "find",
    "from_mapping",
    "load",
    "load_all",
    "BUILTIN_RECIPES",
    "recipe_dirs",
    "recipe_paths",
    "recipes_dir",
]

#: The parameter limit the five reports worked under (the name is older than the word "limit").
BUDGET_PARAMS = 5_000_000

Budget = Literal["paper", "fast"]  # a schedule; the name stays, as the --budget flag's does

#: What a recipe's name may be: it is a folder name inside a run folder, so never a path or a dot name.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,99}$")


class RecipeError(ValueError):
    """A recipe file is malformed; the message names the file, the key and the accepted keys."""


@dataclass(frozen=True)
class Claims:
    """What the report claims. ``accuracy`` is in percent (``None``: the source claims none)."""

    params: int
    accuracy: float | None = None
    accuracy_basis: str = ""

    def __post_init__(self) -> None:  # a claim enters every row and its diff: NaN or 150 % would be written as one
        if isinstance(self.params, bool) or not isinstance(self.params, int) or self.params < 1:
            raise ValueError(f"params must be a positive integer (the parameter count the report states), got {self.params!r}")
        if self.accuracy is not None and not (isinstance(self.accuracy, (int, float)) and 0 <= self.accuracy <= 100):
            raise ValueError(f"accuracy must be a percentage in 0..100, or null for no claim; got {self.accuracy!r}")


@dataclass(frozen=True, kw_only=True)
class _RecipeFile:
    """The top-level keys of a recipe file (the schema :func:`load` checks)."""

    name: str
    source: str
    model: list[dict[str, Any]]
    train: TrainConfig | None = None
    claims: Claims
    title: str = ""
    fast: dict[str, Any] | None = None
    weights: Weights | None = None
    finetune: bool = True
    sparse: dict[str, Any] | None = None


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: how to build one model (from ResNet-18 or trained weights) and how to train it.

    ``finetune=False`` (only with ``weights``) means the model is evaluated, never trained. ``sparse``
    (a :class:`compress.SparseConfig`, only with ``weights``): sparse learning before the transforms,
    regularising the groups of the first ``prune`` step (:meth:`sparse_learn`).
    """

    name: str
    title: str
    source: str
    model: tuple[tuple[str, dict[str, Any]], ...]
    train: TrainConfig
    fast: TrainConfig
    claims: Claims
    path: Path | None = None
    weights: Weights | None = None
    finetune: bool = True
    sparse: Any = None

    def build(self) -> nn.Module:
        """The recipe's transforms applied in order to :meth:`initial_model` (a fresh ResNet-18 gets a new
        random init each call)."""
        return self.transform(self.initial_model())

    def weights_path(self, download: bool = False) -> Path | None:
        """Where the recipe's weights file is (``None``: the recipe has no weights). A published ``name``:
        its local copy (:func:`compress.weights.find_local`), else, with ``download``, fetched
        (:func:`compress.weights.fetch`, which raises if it cannot), else where it would be downloaded to. A
        ``path``: relative to the recipe file's folder, or, if that is not there and ``$COMPRESS_WEIGHTS``
        names a folder, the file of that name in it."""
        if self.weights is None:
            return None
        return self.weights.locate(self.path.parent if self.path is not None else None, download=download)

    def initial_model(self) -> nn.Module:
        """What the transforms start from: the trained weights (SHA-256 checked), else a fresh ResNet-18.

        A weights file written by :func:`compress.save` is loaded as it is (a model of a class other than
        compress's ResNet is rebuilt from its stored class, see :func:`compress.io.load`); any other file is
        imported with :func:`compress.models.from_checkpoint`."""
        if self.weights is None:
            return resnet18()
        try:
            path = self.weights_path(download=True)
        except (OSError, ValueError) as e:
            raise RecipeError(f"{self._where()}: {e}") from e
        if not path.is_file():
            raise RecipeError(f"{self._where()}: weights file {path} not found (weights.path {self.weights.path!r})")
        expected = self.weights.expected_sha256
        if expected is not None and _sha256(path) != expected:
            raise RecipeError(f"{self._where()}: weights file {path} is not the file the recipe names (its SHA-256 "
                              f"differs from {expected}); refusing a different file")
        try:
            return load_saved(path)
        except ValueError as e:
            if "not a file written by compress.save" not in str(e):
                raise RecipeError(f"{self._where()}: cannot load {path}: {e}") from e
        try:
            return from_checkpoint(path, self.weights.layout)
        except ValueError as e:
            raise RecipeError(f"{self._where()}: cannot import {path}: {e}") from e

    def transform(self, model: nn.Module) -> nn.Module:
        """``model`` with the recipe's transforms applied in order (transforms never change their input;
        a recipe without steps returns ``model`` itself)."""
        for i, (name, args) in enumerate(self.model):
            args = copy.deepcopy(args)
            if name == "prune":
                args = _prune_preset(args, self.weights is not None)
            try:
                model = REGISTRY[name](model, **args)
            except Exception as e:  # noqa: BLE001 - re-raised with the recipe position
                raise RecipeError(f"{self._where()}: model[{i}] {name}({_fmt_args(args)}) failed: {e}") from e
        return model

    def train_config(self, budget: Budget = "paper") -> TrainConfig:
        """The training setup of schedule ``budget``: the report's own (``paper``) or the short shared one (``fast``)."""
        if budget == "paper":
            return self.train
        if budget == "fast":
            return self.fast
        raise ValueError(f"budget must be 'paper' or 'fast', got {budget!r}")

    def fingerprint(self, budget: Budget | None = None) -> str:
        """A short hash of the model steps and the training setup of schedule ``budget`` (both when ``None``).

        A run folder stores it to notice a recipe edited between two runs. Only settings that differ
        from the ``TrainConfig`` defaults enter it, so a field added to ``TrainConfig`` later (at a
        default that changes nothing) does not make earlier run folders unresumable.
        """
        train = {b: _non_default(self.train_config(b)) for b in (("paper", "fast") if budget is None else (budget,))}
        spec: dict[str, Any] = {"model": [[n, a] for n, a in self.model], "train": train}
        if self.weights is not None:  # only then, so recipes without weights keep their fingerprints
            spec.update(weights=self._weights_identity(), finetune=self.finetune)
        if self.sparse is not None:  # likewise: recipes without sparse learning keep theirs
            spec["sparse"] = self.sparse.to_dict()
        blob = json.dumps(spec, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def sparse_learn(self, model: nn.Module, data: Any, config: TrainConfig, **train_kwargs: Any) -> Any:
        """Sparse learning (:attr:`sparse`) on ``model`` before the transforms: ``sparse.epochs`` of
        :func:`compress.training.train` (``train_kwargs`` passed on: files, resume, device, ...) with a
        :class:`~compress.transforms.prune.sparse.Regularizer` on the groups of the recipe's first
        ``prune`` step; ``config`` is the budget's training setup (the phase's default). Returns the
        :class:`~compress.training.TrainResult` (its ``model`` goes into :meth:`transform`)."""
        if self.sparse is None:
            raise ValueError(f"{self._where()}: the recipe has no sparse: section")
        args = _prune_preset(copy.deepcopy(next(a for n, a in self.model if n == "prune")), self.weights is not None)
        prune_config = PruneConfig.preset(args.pop("preset", "untrained"), **args)
        return sparse_learn(model, data, self.sparse, prune_config, config, **train_kwargs)[0]

    def _weights_identity(self) -> str:
        """What identifies the starting weights in the fingerprint: their SHA-256 (a file without one named
        in the recipe: the file's own, if it is there), else the path."""
        expected = self.weights.expected_sha256
        if expected is not None:
            return expected
        path = self.weights_path()
        return _sha256(path) if path.is_file() else str(self.weights.path)

    def transforms_summary(self) -> str:
        """One line: the transform steps, e.g. ``remove_stage(index=3) -> add_se(where=stem)`` (after
        ``weights(FILE)`` for a recipe starting from trained weights)."""
        steps = [f"{n}({_fmt_args(a)})" for n, a in self.model]
        if self.weights is not None:
            steps.insert(0, f"weights({self.weights.label})")
        return " -> ".join(steps) or "(none)"

    def _where(self) -> str:
        return str(self.path) if self.path else f"recipe {self.name!r}"


def _prune_preset(args: dict[str, Any], trained_weights: bool) -> dict[str, Any]:
    """A prune step's arguments with its preset: ``preset:`` as given, else the older ``trained:`` as a
    preset, else ``trained`` for a recipe that starts from trained weights."""
    if "trained" in args and "preset" not in args and isinstance(args["trained"], bool):
        args["preset"] = "trained" if args.pop("trained") else "untrained"
    elif trained_weights and "trained" not in args:
        args.setdefault("preset", "trained")
    return args


def _non_default(config: TrainConfig) -> dict[str, Any]:
    """``config.to_dict()`` without the top-level fields that equal their defaults."""
    default = TrainConfig().to_dict()
    return {k: v for k, v in config.to_dict().items() if default.get(k, object()) != v}


def _fmt_args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in args.items())


_merge = merge  # its old, private name here (compress.bench imports it); compress._schema.merge is the helper


def _schema_error(where: str, e: SchemaError) -> RecipeError:
    msg = str(e).lstrip(".: ")
    return RecipeError(f"{where}: {msg}")


def _check_steps(where: str, steps: list[dict[str, Any]]) -> tuple[tuple[str, dict[str, Any]], ...]:
    out = []
    known = ", ".join(sorted(REGISTRY))
    for i, step in enumerate(steps):
        at = f"{where}: model[{i}]"
        if not isinstance(step, dict) or len(step) != 1:
            raise RecipeError(f"{at}: each step is a mapping with one transform name, e.g. '- scale_width: {{factor: 0.5}}'; "
                              f"got {step!r}; transforms: {known}")
        (name, args), = step.items()
        if name not in REGISTRY:
            raise RecipeError(f"{at}: unknown transform {name!r}; transforms: {known}")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise RecipeError(f"{at}.{name}: arguments must be a mapping like {{name: value}}, got {args!r}")
        if name == "prune":
            out.append((name, _check_prune_args(f"{at}.{name}", args)))
        else:
            out.append((name, _check_args(f"{at}.{name}", REGISTRY[name], args)))
    return tuple(out)


def _check_args(at: str, fn: Any, args: dict[str, Any]) -> dict[str, Any]:
    """Check ``args`` against ``fn(model, ...)``'s signature and type hints; return them (lists -> tuples)."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())[1:]  # the first one is the model
    accepted = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    for key in args:
        if key not in accepted and not takes_kwargs:
            raise RecipeError(f"{at}: unknown argument {key!r}; accepted arguments: {', '.join(accepted)}")
    missing = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               and p.name not in args]
    if missing:
        raise RecipeError(f"{at}: missing argument {missing[0]!r}; accepted arguments: {', '.join(accepted)}")
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable hints: leave the checking to the transform
        hints = {}
    return _convert_args(at, hints, args)


def _check_prune_args(at: str, args: dict[str, Any]) -> dict[str, Any]:
    """Check a prune step's ``args`` against :class:`compress.PruneConfig`'s fields and hints (plus
    ``preset``, the older ``trained`` and Torch-Pruning's names); return them (lists -> tuples)."""
    accepted = KEYWORDS + ("trained",)
    for key in args:
        if key not in accepted:
            raise RecipeError(f"{at}: unknown argument {key!r}; accepted arguments: {', '.join(accepted)}")
    hints = {**typing.get_type_hints(PruneConfig), "preset": str, "trained": bool}
    return _convert_args(at, hints, args)


def _convert_args(at: str, hints: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """``args`` converted to their type ``hints`` where a hint is readable (a RecipeError if a value does not fit)."""
    out = {}
    for key, value in args.items():
        tp = hints.get(key)
        try:
            out[key] = convert(tp, value, f"{at}.{key}") if tp is not None else value
        except SchemaError as e:
            raise RecipeError(str(e)) from e
        except Exception:  # noqa: BLE001 - a hint convert cannot read (Callable, Mapping...): pass through
            out[key] = value
    return out


def from_mapping(data: Any, where: str = "recipe", path: Path | None = None) -> Recipe:
    """Validate a parsed recipe (a dict) and build a :class:`Recipe`; errors name ``where``."""
    try:
        spec = from_dict(_RecipeFile, data, "")
    except SchemaError as e:
        raise _schema_error(where, e) from e
    fast_dict = merge(FAST_TRAIN, spec.fast or {})
    try:
        fast = TrainConfig.from_dict(fast_dict, "fast")
    except SchemaError as e:
        raise _schema_error(where, e) from e
    if not _PLAIN_NAME.match(spec.name) or spec.name in (".", ".."):
        raise RecipeError(f"{where}: name {spec.name[:60]!r} is not a plain name (letters, digits and . _ + -, not "
                          "starting with a dot): it names the recipe's sub-folder of a run folder")
    if path is not None and spec.name != path.stem:
        raise RecipeError(f"{where}: name {spec.name!r} must match the file name {path.stem!r}")
    if spec.train is None and spec.finetune:
        raise RecipeError(f"{where}: missing required key 'train' (only a recipe with finetune: false may leave it out)")
    if not spec.finetune and spec.weights is None:
        raise RecipeError(f"{where}: finetune: false needs weights: (a fresh ResNet-18 would be evaluated untrained)")
    for section, cfg in (("train", spec.train), ("fast", fast)):
        if cfg is not None and cfg.distill is not None and spec.weights is None:
            raise RecipeError(f"{where}: {section}.distill needs a teacher: give the recipe weights: (the teacher is "
                              "the trained model before the recipe's transforms)")
    steps = _check_steps(where, spec.model)
    train = spec.train if spec.train is not None else TrainConfig()
    sparse = _check_sparse(where, spec, steps)
    return Recipe(spec.name, spec.title or spec.name, spec.source, steps, train, fast, spec.claims, path,
                  spec.weights, spec.finetune, sparse)


def _check_sparse(where: str, spec: _RecipeFile, steps: tuple[tuple[str, dict[str, Any]], ...]) -> Any:
    """The recipe's :class:`compress.SparseConfig` (None without a ``sparse:`` section); a RecipeError if
    it is malformed, or given without trained weights or a ``prune`` step to learn for."""
    if spec.sparse is None:
        return None
    if spec.weights is None:
        raise RecipeError(f"{where}: sparse: learns a trained network sparsely before its cut: give the recipe weights:")
    if not any(name == "prune" for name, _ in steps):
        raise RecipeError(f"{where}: sparse: regularises the groups of a prune step, and the recipe's model: has none")
    try:
        return SparseConfig.from_dict(spec.sparse, "sparse")
    except SchemaError as e:
        raise _schema_error(where, e) from e
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{where}: sparse: {e}" if not str(e).startswith("sparse") else f"{where}: {e}") from e


class _Loader(yaml.SafeLoader):
    """YAML as people write it: a repeated key is an error (not "the last one wins"), and ``1e6`` or
    ``5e-4`` are numbers (YAML 1.2), where PyYAML's YAML 1.1 reads them as strings."""


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (dict, list)):  # `{a: 1}: x` or `[a]: x`: no recipe key is a mapping or a list
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a name or a number, got the {type(key).__name__} {key!r} "
                "(a '{{...}}' written for '{...}'?)", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _one_line(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else " ".join(str(e).split())


def load(path: str | os.PathLike) -> Recipe:
    """Read and validate the recipe at ``path`` (YAML). Raises :class:`RecipeError` if it is malformed."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not a text file (a recipe is UTF-8 YAML; byte {e.start} is {e.object[e.start]:#04x})") from e
    except OSError as e:
        raise RecipeError(f"{path}: cannot be read ({e.strerror or e})") from e
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML ({_one_line(e)})") from e
    except RecursionError:
        raise RecipeError(f"{path}: nested too deeply to be a recipe (lists or mappings inside each other "
                          "hundreds of levels down)") from None
    return from_mapping(data, str(path), path)


#: The recipes that ship inside the package (package data: found after a regular install too).
BUILTIN_RECIPES = Path(__file__).resolve().parent / "recipes_data"


def recipe_dirs(directory: str | os.PathLike | None = None) -> list[Path]:
    """The folders recipes are looked up in, first first: ``[directory]`` if given, else
    ``[$COMPRESS_RECIPES]`` if set, else ``./recipes`` (if there) followed by the built-in recipes
    (:data:`BUILTIN_RECIPES`), so that a user's own recipes add to the built-in ones."""
    if directory is not None:
        return [Path(directory)]
    if os.environ.get("COMPRESS_RECIPES"):
        return [Path(os.environ["COMPRESS_RECIPES"])]
    local = Path.cwd() / "recipes"
    if local.is_dir() and local.resolve() != BUILTIN_RECIPES:
        return [local, BUILTIN_RECIPES]
    return [BUILTIN_RECIPES]


def recipes_dir() -> Path:
    """The first folder of :func:`recipe_dirs` (``$COMPRESS_RECIPES``, else ./recipes, else the built-in recipes)."""
    return recipe_dirs()[0]


def recipe_paths(directory: str | os.PathLike | None = None) -> list[Path]:
    """Every ``*.yaml``/``*.yml`` recipe in the folders of :func:`recipe_dirs`, sorted by name; a recipe in
    an earlier folder (./recipes) stands in for a built-in one of the same name.

    Two files of one name in one folder (``004.yaml`` and ``004.yml``) raise :class:`RecipeError`: a name
    is a run sub-folder.
    """
    by_name: dict[str, Path] = {}
    for d in reversed(recipe_dirs(directory)):
        paths = sorted(list(d.glob("*.yaml")) + list(d.glob("*.yml")))
        check_unique_names(paths)
        by_name.update((q.stem, q) for q in paths)
    return sorted(by_name.values(), key=lambda q: q.stem)


def check_unique_names(paths: typing.Sequence[str | os.PathLike]) -> None:
    """Raise :class:`RecipeError` if two recipe files have the same name (file name without suffix)."""
    by_name: dict[str, list[str]] = {}
    for p in paths:
        by_name.setdefault(Path(p).stem, []).append(str(p))
    twice = {n: ps for n, ps in by_name.items() if len(ps) > 1}
    if twice:
        name, ps = next(iter(twice.items()))
        raise RecipeError(f"recipe {name!r} is given more than once ({', '.join(ps)}): each recipe name is one run "
                          "sub-folder, so names must be unique; rename or remove one")


def find(name_or_path: str | os.PathLike, directory: str | os.PathLike | None = None) -> Path:
    """Resolve ``003`` / ``003.yaml`` / a path to a recipe file, looking in :func:`recipe_dirs` in order;
    the error lists the known names."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    dirs = recipe_dirs(directory)
    for d in dirs:
        if (d / p).is_file():
            return d / p
        found = [c for c in (d / f"{p}.yaml", d / f"{p}.yml") if c.is_file()]
        check_unique_names(found)
        if found:
            return found[0]
    known = ", ".join(q.stem for q in recipe_paths(directory)) or "(none)"
    where = " or ".join(str(d) for d in dirs)
    raise RecipeError(f"no recipe {str(name_or_path)!r} (not a file, not in {where}); known recipes: {known}")


def load_all(directory: str | os.PathLike | None = None) -> list[Recipe]:
    """Load every recipe in ``directory`` (default :func:`recipes_dir`)."""
    return [load(p) for p in recipe_paths(directory)]
