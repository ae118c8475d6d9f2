"""Pareto-aware successive halving (design.md section 6).

Optuna's pruners compare one intermediate value per step, which has no
meaning for a multi-objective study (optuna issue 3450). Here a trial that
has reached a rung continues only if it is in the best ``1/eta`` of all
trials that reached that rung, ordered by non-dominated rank on
(validation accuracy at the rung: higher is better, MACs: lower is better)
and, within a rank, by crowding distance as in NSGA-II (Deb et al. 2002),
so the survivors spread along the front. Asynchronous, in the spirit of
MO-ASHA (Schmucker et al. 2021): each trial is judged against whoever has
reported at the rung so far, and at least one trial always continues.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

#: (accuracy at the rung, MACs) of one trial
Point = tuple[float, float]


def dominates(a: Point, b: Point) -> bool:
    """``a`` is at least as good in both objectives and better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def nondominated_ranks(points: Sequence[Point]) -> list[int]:
    """Front number of each point: 0 for the Pareto front, 1 for the front
    once that is removed, and so on."""
    ranks = [-1] * len(points)
    remaining = set(range(len(points)))
    rank = 0
    while remaining:
        front = {i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining if j != i)}
        for i in front:
            ranks[i] = rank
        remaining -= front
        rank += 1
    return ranks


def crowding_distances(points: Sequence[Point]) -> list[float]:
    """NSGA-II crowding distance of each point within its own set (the
    boundary points of each objective get infinity)."""
    n = len(points)
    distance = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for k in range(2):
        order = sorted(range(n), key=lambda i: points[i][k])
        low, high = points[order[0]][k], points[order[-1]][k]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for a, i, b in zip(order, order[1:], order[2:]):
            distance[i] += (points[b][k] - points[a][k]) / (high - low)
    return distance


def selection_order(points: Sequence[Point]) -> list[int]:
    """Indices of ``points`` from best to worst: by non-dominated rank, then
    by crowding distance (larger first), then by accuracy, then by index."""
    ranks = nondominated_ranks(points)
    crowding = [0.0] * len(points)
    for r in set(ranks):
        members = [i for i, x in enumerate(ranks) if x == r]
        for i, d in zip(members, crowding_distances([points[i] for i in members])):
            crowding[i] = d
    return sorted(range(len(points)), key=lambda i: (ranks[i], -crowding[i], -points[i][0], i))


def survivors(points: Sequence[Point], eta: int) -> set[int]:
    """Indices of the points in the best ``1/eta`` (at least one)."""
    if eta < 2:
        raise ValueError(f"eta must be >= 2, got {eta}")
    keep = max(1, len(points) // eta)
    return set(selection_order(points)[:keep])


def continues(point: Point, others: Sequence[Point], eta: int) -> bool:
    """Whether a trial at ``point`` goes on past the rung, judged against the
    ``others`` that reached the same rung."""
    return 0 in survivors([point, *others], eta)
