"""The one budget search: the smallest pruning ratio whose result fits a params or FLOPs budget.

Both budget kinds (``target_params``, ``target_flops``) and both modes (one-shot plans, costed by
:class:`~compress.transforms._cost.CostModel`, and sequential pruning, measured) bisect through
:func:`smallest_ratio`; only what one ratio costs differs.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from .._depgraph import PruneError

T = TypeVar("T")


def smallest_ratio(
    evaluate: Callable[[float], tuple[T, int]], goal: int, *, hi: float, tol: float
) -> tuple[tuple[T, int] | None, tuple[float, int] | None]:
    """Bisect the ratio in [0, ``hi``] down to ``tol`` for the smallest one whose cost is at most ``goal``.

    ``evaluate(r)`` gives (the result at ``r``, its cost), or raises :class:`PruneError` where ``r`` is
    too high (a layer would be emptied). Returns (result, cost) at the best ratio found, None if none
    fits, and (ratio, cost) of the highest ratio that could be evaluated (None if none could).
    """
    lo, best, floor = 0.0, None, None
    while hi - lo > tol:
        mid = (lo + hi) / 2
        try:
            result, cost = evaluate(mid)
        except PruneError:
            hi = mid
            continue
        if floor is None or mid > floor[0]:
            floor = (mid, cost)
        if cost <= goal:
            hi, best = mid, (result, cost)
        else:
            lo = mid
    return best, floor


def label(what: str) -> str:
    """How a budget kind is written in messages."""
    return "params" if what == "params" else "FLOPs"
