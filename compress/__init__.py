"""compress: structured pruning and layer surgery for CNNs, with exact params/FLOPs.

The public API is small: one function per transform (each returns a new model and never mutates its
input), metrics, and save/load::

    import compress
    m = compress.models.resnet18()
    small = compress.prune(m, 0.5)
    compress.count_params(small), compress.count_flops(small)
    compress.save(small, "small.pt"); same = compress.load("small.pt")
    compress.export(small, "small.onnx"); compress.measure_latency(small, backend="onnxruntime")
    trained = compress.models.from_checkpoint(compress.weights.fetch("resnet56-4bfd9763"))  # published by others
    compress.evaluate(trained, compress.data.cifar10("data"))   # accuracy, loss, per class
"""

from . import provenance  # first: it notes HEAD's commit (from .git files; no git runs) as the code is imported
from . import data, models, training, transforms, weights
from .deploy import benchmark, export, measure_latency
from .evaluation import EvalResult, evaluate
from .io import load, save
from .metrics import count_flops, count_params, example_input, flops_by_module, summary
from .models import ResNet, ResNetConfig, resnet18
from .transforms import (
    Compose,
    PruneConfig,
    add_se,
    compose,
    insert_stage,
    prune,
    redistribute_blocks,
    remove_stage,
    scale_width,
    set_kernels,
    transform,
    whiten_stem,
)
from .training.prune_trained import PruneTrainedResult, SparseConfig, prune_trained

__version__ = "0.1.0"

__all__ = [
    "data",
    "models",
    "training",
    "transforms",
    "weights",
    "prune",
    "PruneConfig",
    "prune_trained",
    "SparseConfig",
    "PruneTrainedResult",
    "remove_stage",
    "insert_stage",
    "scale_width",
    "redistribute_blocks",
    "set_kernels",
    "add_se",
    "whiten_stem",
    "compose",
    "Compose",
    "transform",
    "ResNet",
    "ResNetConfig",
    "resnet18",
    "count_params",
    "count_flops",
    "flops_by_module",
    "example_input",
    "summary",
    "save",
    "load",
    "export",
    "measure_latency",
    "benchmark",  # deprecated name of measure_latency
    "evaluate",
    "EvalResult",
]
