"""Budget-constrained architecture search over compress's transforms, on Optuna.

``compress.search(base, space, budget, data=..., out=...)`` (this package is callable: it is
:func:`compress.search.search`) searches the number of stages, blocks per stage, widths, kernel sizes,
squeeze-and-excitation and a whitening stem of a compress ResNet for the most accurate model within a
budget of params, FLOPs and/or measured latency; each candidate within budget is trained by
:func:`compress.training.train` on a short proxy (a validation split carved from the training set).
The best one comes out as a recipe that ``compress-bench`` trains. See ``docs/search.md``.
"""

import sys as _sys
import types as _types

from .output import pareto_front, trial_record
from .space import SE_PLACES, Budget, Proxy, SearchSpace, build
from .study import OBJECTIVES, STORAGE_FILE, SearchResult, default_storage, resolve_base, search, trained_trials

__all__ = [
    "search",
    "SearchResult",
    "SearchSpace",
    "Budget",
    "Proxy",
    "SE_PLACES",
    "OBJECTIVES",
    "STORAGE_FILE",
    "build",
    "default_storage",
    "resolve_base",
    "trained_trials",
    "trial_record",
    "pareto_front",
]


class _CallableModule(_types.ModuleType):
    """Lets ``compress.search(...)`` call :func:`search` while ``compress.search.SearchSpace`` etc. stay
    reachable (the package and the function share one name)."""

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003 - exactly search()'s arguments
        return search(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
