"""Deployment: export to ONNX (checked against PyTorch with ONNX Runtime) and measured inference speed.

FLOPs do not say how fast a network runs: a pruned model with odd channel counts, or a deeper and
narrower one, may gain less time than its FLOP count promises. This module measures it::

    import compress
    m = compress.prune(compress.resnet18(), 0.5)
    compress.export(m, "m.onnx")                      # ExportResult(max_abs_diff=..., ...); raises on mismatch
    r = compress.measure_latency(m, backend="onnxruntime")  # LatencyResult: per batch size median, IQR, images/s
    r.timing(1).median_ms, r.timing(256).images_per_s

Backends: ``eager`` (the module under ``torch.inference_mode``), ``compile`` (``torch.compile``, static
shapes, compiled during the warm-up) and ``onnxruntime`` (the model exported by :func:`export`, run by
an ONNX Runtime CPU session). Timing follows ``torch.utils.benchmark``'s rules: warm-up calls first,
then ``repeats`` timed blocks of enough calls to last ``min_block_s`` each (``timeit``: garbage
collection off, ``perf_counter``), reported as the median and interquartile range of the per-call
time, with the thread count fixed and recorded (torch's intra-op threads, ONNX Runtime's
``intra_op_num_threads``).

:func:`measure` runs several named models against a ResNet-18 reference measured in the same session,
so each row carries its speed-up; :func:`compress.runfolder.measure_run` adds such measurements to a
``compress-bench`` run folder (its report then shows them).
"""

from __future__ import annotations

import copy
import datetime as dt
import errno
import gc
import math
import os
import re
import statistics
import tempfile
import timeit
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
from torch import nn

from .files import reserve_temp
from .metrics import count_flops, count_params, example_input
from .models import resnet18
from .provenance import device_name, running_commit

__all__ = [
    "BACKENDS",
    "ExportError",
    "ExportResult",
    "Timing",
    "LatencyResult",
    "export",
    "measure_latency",
    "benchmark",
    "measure",
    "measure_run",
    "REFERENCE",
]

Backend = Literal["eager", "compile", "onnxruntime"]
BACKENDS: tuple[str, ...] = ("eager", "compile", "onnxruntime")

#: The largest batch :func:`measure_latency` times (a larger one would ask the allocator for tens of GB).
MAX_BATCH = 8192

#: The model every speed-up is measured against (built fresh; its speed does not depend on its weights).
REFERENCE = "resnet18"


class ExportError(RuntimeError):
    """The ONNX export failed, or ONNX Runtime's outputs differ from PyTorch's beyond the tolerance."""


def _onnxruntime():
    try:
        import onnxruntime  # lazy: an optional extra (compress[deploy]), needed by the onnxruntime backend only
    except ImportError as e:  # pragma: no cover - the deploy extra is part of the test extra
        raise ImportError("ONNX export and the onnxruntime backend need onnx, onnxscript and onnxruntime: "
                          "pip install 'compress[deploy]'") from e
    return onnxruntime


def _check_image_shape(image_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
        raise ValueError(f"image_shape must be three positive ints (channels, height, width), got {image_shape!r}")
    return shape


def _inputs(batch: int, image_shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """Random images from a private generator (the caller's RNG state is not touched)."""
    return example_input((batch, *image_shape), seed=seed)[0]


def _eval_copy(model: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    return copy.deepcopy(model).to(device).eval()


def _check_runs(net: nn.Module, shape: tuple[int, ...], device: torch.device | str = "cpu") -> None:
    """A ``ValueError`` in one line if ``net`` cannot take a batch of images of ``shape`` (before any export or timing)."""
    try:
        with torch.no_grad():
            net(_inputs(1, shape).to(device))
    except Exception as e:  # noqa: BLE001 - any failure: these are not inputs this model takes
        raise ValueError(f"the {type(net).__name__} cannot run on images of shape {'x'.join(map(str, shape))} "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); give the image_shape it takes") from e


def _check_tolerance(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


# export -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote and how closely ONNX Runtime reproduces the PyTorch model."""

    path: Path
    max_abs_diff: float  # over the logits of ``checked_batch`` random images
    tolerance: float  # the largest difference accepted: atol + rtol * max |PyTorch output|
    checked_batch: int
    dynamic_batch: bool
    opset: int
    size_bytes: int
    onnx: str
    onnxruntime: str

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-friendly dict."""
        return {**asdict(self), "path": str(self.path)}


def export(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    image_shape: Sequence[int] = (3, 32, 32),
    dynamic_batch: bool = True,
    opset: int | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> ExportResult:
    """Export ``model`` (in eval mode, on the CPU) to the ONNX file ``path`` and check it.

    Uses torch's exporter (``torch.onnx.export(dynamo=True)``), weights inside the one file, input
    ``input`` of shape ``(batch, *image_shape)`` (the batch dimension dynamic unless
    ``dynamic_batch=False``), output ``logits``. The file is then run by ONNX Runtime on random images
    (3 of them, so a dynamic batch is exercised with another size than the export's 2) and compared with
    the PyTorch model: a largest absolute difference above ``atol + rtol * max|output|`` raises
    :class:`ExportError` and leaves no file at ``path``. ``model`` itself is not changed.
    """
    import onnx  # lazy: an optional extra (compress[deploy]), needed by export only

    ort = _onnxruntime()
    shape = _check_image_shape(image_shape)
    atol, rtol = _check_tolerance("atol", atol), _check_tolerance("rtol", rtol)
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"export path must end in .onnx, got {str(path)!r}")
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"cannot write {path}: it is a folder; export() takes the path of an "
                                ".onnx file", str(path))
    net = _eval_copy(model)
    _check_runs(net, shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = reserve_temp(path)  # a unique name, created exclusively: no planted link is followed, no two exports collide
    dynamic = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    try:
        with torch.no_grad():
            torch.onnx.export(net, (_inputs(2, shape, seed=1),), tmp, dynamo=True, external_data=False,
                              input_names=["input"], output_names=["logits"], dynamic_shapes=dynamic,
                              opset_version=opset, verbose=False)
    except Exception as e:  # noqa: BLE001 - the exporter's own errors are long; keep the first line
        tmp.unlink(missing_ok=True)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = re.sub(r"\x1b\[[0-9;]*m", "", first)  # the exporter colours its messages for a terminal
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {first}") from e
    try:
        batch = 3 if dynamic_batch else 2
        x = _inputs(batch, shape, seed=2)
        with torch.no_grad():
            want = net(x).numpy()
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": x.numpy()})[0]
        if got.shape != want.shape:
            raise ExportError(f"ONNX Runtime output has shape {tuple(got.shape)}, PyTorch {tuple(want.shape)}")
        diff = float(abs(got - want).max())
        tol = atol + rtol * float(abs(want).max())
        if not diff <= tol:  # also catches NaN
            raise ExportError(f"ONNX Runtime output differs from PyTorch by {diff:.3g} (> tolerance {tol:.3g}) "
                              f"on {batch} random images; nothing written to {path}")
        opset_used = next((o.version for o in onnx.load(str(tmp), load_external_data=False).opset_import
                           if o.domain in ("", "ai.onnx")), -1)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportResult(path, diff, tol, batch, dynamic_batch, int(opset_used), path.stat().st_size,
                        onnx.__version__, ort.__version__)


# latency ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    """Measured time of one forward pass at one batch size (milliseconds per call)."""

    batch_size: int
    median_ms: float
    iqr_ms: float  # interquartile range over the repeats: the spread
    min_ms: float
    max_ms: float
    repeats: int  # timed blocks
    calls_per_repeat: int
    images_per_s: float  # batch_size / median
    first_call_s: float  # the first warm-up call (for ``compile``: includes compilation)


@dataclass(frozen=True)
class LatencyResult:
    """What :func:`measure_latency` measured, with where and how: device, threads, versions, date."""

    backend: str
    device: str
    device_name: str
    threads: int
    image_shape: tuple[int, ...]
    params: int
    torch: str
    onnxruntime: str | None
    date: str
    git_commit: str
    timings: tuple[Timing, ...] = field(default_factory=tuple)

    def timing(self, batch_size: int) -> Timing:
        """The :class:`Timing` of ``batch_size`` (``KeyError`` naming the measured sizes if absent)."""
        for t in self.timings:
            if t.batch_size == batch_size:
                return t
        raise KeyError(f"batch size {batch_size} was not measured; measured: {[t.batch_size for t in self.timings]}")

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-friendly dict (:meth:`from_dict` reads it back)."""
        d = asdict(self)
        d["image_shape"], d["timings"] = list(self.image_shape), [asdict(t) for t in self.timings]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyResult:
        """Rebuild a result written by :meth:`to_dict`."""
        d = dict(d)
        d["timings"] = tuple(Timing(**t) for t in d["timings"])
        d["image_shape"] = tuple(d["image_shape"])
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _time(fn: Callable[[], Any], *, warmup: int, repeats: int, min_block_s: float) -> tuple[list[float], int, float]:
    """Per-call times of ``repeats`` blocks after ``warmup`` calls; also the calls per block and the first call."""
    t0 = timeit.default_timer()
    fn()
    first = timeit.default_timer() - t0
    warm = [first]
    for _ in range(warmup - 1):
        t0 = timeit.default_timer()
        fn()
        warm.append(timeit.default_timer() - t0)
    per_call = statistics.median(warm[1:] or warm)
    number = max(1, math.ceil(min_block_s / max(per_call, 1e-9)))
    gc.collect()
    blocks = timeit.Timer(fn).repeat(repeat=repeats, number=number)  # gc off while timing, perf_counter
    return [b / number for b in blocks], number, first


def _timing(batch: int, times: list[float], number: int, first: float) -> Timing:
    ms = sorted(t * 1e3 for t in times)
    q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else (ms[0], ms[0], ms[0])
    median = statistics.median(ms)
    return Timing(batch, median, q3 - q1, ms[0], ms[-1], len(ms), number, batch / (median / 1e3), first)


def measure_latency(
    model: nn.Module,
    *,
    batch_sizes: Sequence[int] = (1, 256),
    device: str | torch.device = "cpu",
    backend: Backend = "eager",
    threads: int | None = None,
    image_shape: Sequence[int] = (3, 32, 32),
    repeats: int = 10,
    warmup: int = 3,
    min_block_s: float = 0.1,
) -> LatencyResult:
    """Measure ``model``'s inference time and throughput at each batch size; returns a :class:`LatencyResult`.

    For each size: ``warmup`` untimed calls on random images (the first one compiles for
    ``backend="compile"``), then ``repeats`` timed blocks, each of as many calls as last about
    ``min_block_s``; the result gives the median and interquartile range of the time per call, the
    images per second at the median, and the device, thread count, torch and ONNX Runtime versions,
    commit and date. ``threads`` fixes the CPU threads (default: torch's current count); torch's
    setting is restored afterwards. ``backend="onnxruntime"`` runs on the CPU only. ``model`` is not
    changed (a copy is measured in eval mode).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if not isinstance(batch_sizes, (tuple, list)):
        raise ValueError(f"batch_sizes must be a list of batch sizes such as (1, 256), got {batch_sizes!r}")
    sizes = list(batch_sizes)
    if not sizes:
        raise ValueError("batch_sizes must name at least one batch size, e.g. (1, 256)")
    for b in sizes:
        _check_positive_int("each batch size", b)
        if b > MAX_BATCH:
            raise ValueError(f"batch size {b:,} is more than {MAX_BATCH:,} images at once; measure smaller batches")
    _check_positive_int("repeats", repeats)
    _check_positive_int("warmup", warmup)
    if threads is not None:
        _check_positive_int("threads", threads)
    if isinstance(min_block_s, bool) or not isinstance(min_block_s, (int, float)) or not 0 < min_block_s < math.inf:
        raise ValueError(f"min_block_s must be a positive number of seconds, got {min_block_s!r}")
    shape = _check_image_shape(image_shape)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from e
    if backend == "onnxruntime" and dev.type != "cpu":
        raise ValueError(f"backend 'onnxruntime' runs on the CPU only (the CPU build of onnxruntime); got device {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available")
    n_threads = threads if threads is not None else torch.get_num_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    ort_version = None
    try:
        name = device_name(dev)
        if backend == "onnxruntime":
            ort = _onnxruntime()
            ort_version = ort.__version__
            run_at = _onnxruntime_runner(model, shape, n_threads)
        else:
            run_at = _torch_runner(model, dev, backend, shape)
        timings = []
        for b in sizes:
            fn = run_at(_inputs(b, shape))
            timings.append(_timing(b, *_time(fn, warmup=warmup, repeats=repeats, min_block_s=min_block_s)))
    finally:
        torch.set_num_threads(before)
    return LatencyResult(
        backend=backend, device=str(dev), device_name=name, threads=n_threads, image_shape=shape,
        params=count_params(model), torch=torch.__version__, onnxruntime=ort_version,
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), git_commit=running_commit(),
        timings=tuple(timings),
    )


def benchmark(model: nn.Module, **kwargs: Any) -> LatencyResult:
    """Deprecated name of :func:`measure_latency` (same arguments, same result): "bench" is compress-bench."""
    warnings.warn("compress.benchmark is deprecated; use compress.measure_latency (same arguments)",
                  DeprecationWarning, stacklevel=2)
    return measure_latency(model, **kwargs)


def _torch_runner(model: nn.Module, dev: torch.device, backend: str,
                  shape: tuple[int, ...]) -> Callable[[torch.Tensor], Callable[[], Any]]:
    net = _eval_copy(model, dev)
    _check_runs(net, shape, dev)
    if backend == "compile":
        torch.compiler.reset()  # a fresh cache: earlier models must not use up the recompile limit
        net = torch.compile(net, dynamic=False)

    def at(x: torch.Tensor) -> Callable[[], Any]:
        x = x.to(dev)

        def call() -> Any:
            with torch.inference_mode():
                y = net(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return y

        return call

    return at


def _onnxruntime_runner(model: nn.Module, shape: tuple[int, ...], threads: int) -> Callable[[torch.Tensor], Callable[[], Any]]:
    ort = _onnxruntime()
    with tempfile.TemporaryDirectory(prefix="compress-onnx-") as d:
        path = export(model, Path(d) / "model.onnx", image_shape=shape).path
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def at(x: torch.Tensor) -> Callable[[], Any]:
        feed = {"input": x.numpy()}
        return lambda: session.run(None, feed)

    return at


# several models, a run folder ---------------------------------------------------------------------
def _entry(result: LatencyResult, reference: LatencyResult | None, ref_flops: int | None) -> dict[str, Any]:
    """One backend's measurement as stored in a row, with the reference's timings of the same session."""
    d = result.to_dict()
    if reference is not None:
        d["reference"] = {
            "name": REFERENCE, "flops": ref_flops, "params": reference.params,
            "median_ms": {str(t.batch_size): t.median_ms for t in reference.timings},
        }
    return d


def measure(
    models: Mapping[str, nn.Module],
    *,
    backends: Sequence[str] = ("eager",),
    batch_sizes: Sequence[int] = (1, 256),
    threads: int | None = None,
    repeats: int = 10,
    warmup: int = 3,
    min_block_s: float = 0.1,
    reference: bool = True,
    log: Callable[[str], None] = lambda s: None,
    image_shape: Sequence[int] = (3, 32, 32),
) -> list[dict[str, Any]]:
    """Benchmark each named CPU model with each backend on images of ``image_shape`` (no batch
    dimension; FLOPs are counted at that size too, so any model class works); returns one row per model.

    A row is ``{"recipe": name, "params", "flops", "latency": {backend: LatencyResult.to_dict() +
    "reference"}}``. With ``reference=True`` a fresh :data:`REFERENCE` ResNet-18 is measured with each
    backend too (unless a model of that name is given) and its median times are stored in every entry,
    so the report can print speed-ups taken on the same machine in the same session.
    """
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {b!r}")
    for name, m in models.items():
        if not isinstance(m, nn.Module):
            raise TypeError(f"models[{name!r}] must be an nn.Module, got {type(m).__name__}")
    kwargs = dict(batch_sizes=batch_sizes, threads=threads, repeats=repeats, warmup=warmup, min_block_s=min_block_s,
                  image_shape=tuple(image_shape))
    one = (1, *image_shape)
    ref_model = models.get(REFERENCE) if reference else None
    if reference and ref_model is None:
        ref_model = resnet18()
    ref_flops = count_flops(ref_model, example_input=one) if ref_model is not None else None
    rows = [{"recipe": n, "params": count_params(m), "flops": count_flops(m, example_input=one), "latency": {}}
            for n, m in models.items()]
    for backend in backends:
        ref = None
        if ref_model is not None:
            log(f"{REFERENCE} (reference): {backend}")
            ref = measure_latency(ref_model, backend=backend, **kwargs)
        for row, model in zip(rows, models.values()):
            log(f"{row['recipe']}: {backend}")
            result = ref if row["recipe"] == REFERENCE and ref is not None else measure_latency(model, backend=backend, **kwargs)
            row["latency"][backend] = _entry(result, ref, ref_flops)
    return rows


def measure_run(run_dir: str | os.PathLike, names: Sequence[str] = (), **kwargs: Any) -> list[dict[str, Any]]:
    """Deprecated: moved to :func:`compress.runfolder.measure_run` (the same arguments and result)."""
    from . import runfolder  # imported here: compress.runfolder imports this module

    warnings.warn("compress.deploy.measure_run moved to compress.runfolder.measure_run", DeprecationWarning, stacklevel=2)
    return runfolder.measure_run(run_dir, names, **kwargs)
