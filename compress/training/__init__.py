"""Training: config objects, the CIFAR trainer and its GPU data pipeline.

``train(model, data, config)`` (see :mod:`compress.training.trainer`) is the entry point; the pieces it
is built from (batched augmentations, optimizer/schedule builders, Lookahead, EMA, torch.distributed
helpers, knowledge distillation) live in :mod:`.augment`, :mod:`.optim`, :mod:`.distributed` and
:mod:`.distill`.
"""

from .config import *  # noqa: F401,F403
from .checks import DIVERGED_LOSS, check_inputs
from .config import __all__ as _config_all
from .distill import Distiller, distillation_loss
from .optim import EMA, Lookahead, build_ema, build_optimizer, build_scheduler
from .trainer import NonFiniteLossError, TrainResult, train

__all__ = list(_config_all) + [
    "train",
    "TrainResult",
    "NonFiniteLossError",
    "check_inputs",
    "DIVERGED_LOSS",
    "Lookahead",
    "EMA",
    "build_optimizer",
    "build_scheduler",
    "build_ema",
    "Distiller",
    "distillation_loss",
]
