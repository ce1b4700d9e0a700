"""Training: config objects, the CIFAR trainer and its GPU data pipeline."""

from .config import *  # noqa: F401,F403
from .config import __all__ as _config_all

__all__ = list(_config_all)
