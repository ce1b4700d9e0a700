"""The planner: from per-group ratios and channel scores to which units of each group go.

Pure arithmetic on groups described by their size and scores (no model, no graph): anything with
``key``, ``units``, ``ch_groups``, ``scores`` and ``tag`` attributes, such as a traced
:class:`~compress.transforms._depgraph.Group` or a :class:`Slot`. A *unit* is one channel position
(a channel, or the same position in every channel group of a grouped layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import torch

from .._depgraph import PruneError

Plan = dict  # group key -> sorted unit positions to remove


class Plannable(Protocol):
    """What the planner reads of a group."""

    key: str
    ch_groups: int
    scores: torch.Tensor | None
    tag: str

    @property
    def units(self) -> int: ...


@dataclass(frozen=True)
class Slot:
    """A group as the planner sees it, without a model: ``units`` positions with their ``scores``."""

    key: str
    scores: torch.Tensor
    ch_groups: int = 1
    tag: str = ""
    members: tuple[str, ...] = ()

    @property
    def units(self) -> int:
        return len(self.scores)


class Planner:
    """Turns scores and target ratios into a plan: which units of which group to remove.

    ``initial`` is each group's units before the first step (ratios are fractions of it); ``ranking``
    is ``"local"`` (each group its own ratio), ``"global"`` or ``"isomorphic"`` (the weakest units across
    groups of one scope); no group loses more than ``max_ratio`` of its units or its last one; kept
    widths are rounded down to a multiple of ``round_to``.
    """

    def __init__(self, initial: Mapping[str, int], ranking: str, max_ratio: float, round_to: int | None) -> None:
        self.initial = dict(initial)
        self.ranking = ranking
        self.max_ratio = max_ratio
        self.round_to = round_to

    def plan(self, groups: Sequence[Plannable], targets: Mapping[str, tuple[float, int]]) -> Plan:
        """The units to remove per group; ``targets`` maps group keys to (ratio, ranking scope)."""
        groups = [g for g in groups if g.key in targets]
        if self.ranking == "local":
            return {g.key: self._local(g, targets[g.key][0]) for g in groups}
        scopes: dict[Any, list[Plannable]] = {}
        for g in groups:
            scope = (targets[g.key][1], g.tag if self.ranking == "isomorphic" else "")
            scopes.setdefault(scope, []).append(g)
        plan = {}
        for members in scopes.values():
            plan.update(self._ranked(members, targets[members[0].key][0]))
        return plan

    def fewest(self, groups: Sequence[Plannable]) -> Plan:
        """The plan keeping the fewest channels allowed in every group (one, or one round_to multiple,
        and no less than ``max_ratio`` allows)."""
        plan = {}
        for g in groups:
            unit = round_unit(self.round_to, g.ch_groups)
            floor = max(1, int(self.initial[g.key] * (1 - self.max_ratio)))
            keep = min(g.units, -(-floor // unit) * unit)
            plan[g.key] = weakest(g.scores, g.units - keep)
        return plan

    def _local(self, g: Plannable, ratio: float) -> list[int]:
        ratio = min(ratio, self.max_ratio)
        keep = int(self.initial[g.key] * (1 - ratio))
        keep = min(round_down(keep, round_unit(self.round_to, g.ch_groups)), g.units)
        if keep < 1:
            raise PruneError(
                f"{layer_label(g)} would keep no channel: ratio {ratio:g} of {self.initial[g.key] * g.ch_groups} channels"
                + (f" rounded down to a multiple of round_to={self.round_to}" if self.round_to else "")
                + "; lower the ratio for it or leave it out (ignore=...)"
            )
        return weakest(g.scores, g.units - keep)

    def _ranked(self, groups: Sequence[Plannable], ratio: float) -> Plan:
        """Remove the weakest units across ``groups``: ``ratio`` of all their initial units in total."""
        total = sum(self.initial[g.key] for g in groups)
        to_remove = sum(g.units for g in groups) - int(total * (1 - ratio))
        floors = {g.key: max(1, int(self.initial[g.key] * (1 - self.max_ratio))) for g in groups}
        chosen: dict[str, list[int]] = {g.key: [] for g in groups}
        if to_remove > 0:
            order = sorted(
                ((float(s), i, u) for i, g in enumerate(groups) for u, s in enumerate(g.scores.tolist())),
                key=lambda t: (t[0], t[1], t[2]),
            )
            for _, i, u in order:
                if to_remove <= 0:
                    break
                g = groups[i]
                if g.units - len(chosen[g.key]) > floors[g.key]:
                    chosen[g.key].append(u)
                    to_remove -= 1
        plan = {}
        for g in groups:
            keep = g.units - len(chosen[g.key])
            unit = round_unit(self.round_to, g.ch_groups)
            if unit > 1 and keep < g.units:
                if g.units < unit:
                    keep = g.units
                else:
                    lowest = -(-floors[g.key] // unit) * unit
                    keep = min(g.units, max(round_down(keep, unit), lowest, unit))
            plan[g.key] = weakest(g.scores, g.units - keep)
        return plan


def kept_channels(groups: Sequence[Plannable], plan: Plan) -> dict[str, int]:
    """Channels each group keeps under ``plan`` (its units left times its channel groups)."""
    return {g.key: (g.units - len(plan.get(g.key, ()))) * g.ch_groups for g in groups}


def round_unit(round_to: int | None, ch_groups: int) -> int:
    """Kept units must be a multiple of this so that kept channels are a multiple of ``round_to``."""
    if not round_to:
        return 1
    return round_to // math.gcd(round_to, ch_groups)


def round_down(n: int, unit: int) -> int:
    """``n`` rounded down to a multiple of ``unit``."""
    return n - n % unit if unit > 1 else n


def weakest(scores: torch.Tensor, n: int) -> list[int]:
    """The positions of the ``n`` lowest ``scores`` (ties: the first), sorted."""
    if n <= 0:
        return []
    return sorted(torch.argsort(scores, stable=True)[:n].tolist())


def layer_label(g: Any) -> str:
    """A group named by its first layers (its key when it has none)."""
    members = list(getattr(g, "members", ()) or (g.key,))
    return ", ".join(members[:3]) + (f" (and {len(members) - 3} coupled layers)" if len(members) > 3 else "")
