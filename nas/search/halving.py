"""Pareto-aware asynchronous successive halving (docs/design.md section 6).

Optuna's pruners compare one intermediate value per step, which has no
meaning for a multi-objective study (optuna issue 3450). Here a trial that
has reached a rung continues only if it is in the best ``1/eta`` of the
trials that reached that rung, ordered by non-dominated rank on a point
(validation accuracy at the rung: higher is better, then one or more costs
such as MACs, params or latency: lower is better) and, within a rank, by
crowding distance as in NSGA-II (Deb et al. 2002), so the survivors spread
along the front. Asynchronous as ASHA (Li et al. 2018, arXiv 1810.05934)
and MO-ASHA (Schmucker et al. 2021): each trial is judged against whoever
has reported at the rung so far, and at least one trial always continues.

Enough peers first. Judged against a handful of reports, the rule cannot
hold a trade-off point: with eta 3 and fewer than 6 reports only the most
accurate continues, below 9 only the two infinite-crowding ends of the
front do, so a Pareto-optimal design in between was stopped against 3-8
peers. A trial therefore always continues until at least
:func:`minimum_peers` (``MIN_PEERS_PER_ETA * eta``) OTHER trials reached its
rung. The peers are chosen by the caller (:meth:`nas.search.objective.Objective._rung_points`):
not the attention-free baseline (it trains its full budget and is every
report's reference, not a competitor) and not a trial that copies another
trial's result. The last rung stops nobody, and a stop is final.

The minimum, 2 eta, was chosen by ``benchmarks/halving_peers.py``: a seeded
replay of this rule with :func:`continues` on simulated studies of 30
trials (the baseline first) whose first rung orders designs about as weakly
as ``mixed``'s 1-epoch rung (Kendall tau +0.39 against the final accuracy;
the model is in its docstring). ``python benchmarks/halving_peers.py``
(300 studies per row, eta 3, seed 0) printed, per rule, the share of the
truly Pareto-optimal designs stopped, the share of dominated designs
stopped, the share of all trials stopped and the ratio of the first two::

    2 objectives (accuracy, MACs), 4.8 of 29 designs Pareto-optimal per study
      as it was: baseline a peer, min 0   P(front pruned) 0.481 ± 0.013  dominated 0.759  stopped 0.713  ratio 0.634
      min peers  0                                        0.410 ± 0.013            0.717          0.666        0.572
      min peers  3 (1 eta)                                0.375 ± 0.013            0.675          0.625        0.556
      min peers  6 (2 eta)                                0.319 ± 0.012            0.596          0.550        0.536
      min peers  9 (3 eta)                                0.275 ± 0.012            0.516          0.476        0.534
      judged with 1-2 / 3-5 / 6-8 / 9-29 peers: front stopped 0.495 / 0.574 / 0.496 / 0.388,
                                                dominated stopped 0.616 / 0.750 / 0.756 / 0.752
    3 objectives (accuracy, MACs, params), 6.4 of 29 designs Pareto-optimal per study
      as it was: baseline a peer, min 0   P(front pruned) 0.497 ± 0.011  dominated 0.756  stopped 0.699  ratio 0.658
      min peers  0                                        0.454 ± 0.011            0.716          0.658        0.634
      min peers  3 (1 eta)                                0.419 ± 0.011            0.675          0.619        0.621
      min peers  6 (2 eta)                                0.355 ± 0.011            0.594          0.542        0.598
      min peers  9 (3 eta)                                0.294 ± 0.010            0.519          0.470        0.566
      judged with 1-2 / 3-5 / 6-8 / 9-29 peers: front stopped 0.489 / 0.642 / 0.552 / 0.430,
                                                dominated stopped 0.594 / 0.772 / 0.740 / 0.752

Why 2 eta: with up to 2 eta - 2 peers at most one trial of the judged set
survives (``(peers + 1) // eta <= 1``), so a verdict is "the most accurate
so far" and ignores cost; verdicts against 3-5 peers stop Pareto-optimal designs
most often of all. From 0 to 2 eta peers the share of front designs stopped
falls 0.41 -> 0.32 (3 objectives 0.45 -> 0.36) while 55 % of the trials are
still stopped (a third of the training saved with rungs at 1 and 3 epochs),
and the verdicts get more selective (ratio 0.57 -> 0.54). 3 eta lowers it
by 0.04-0.06 more, but stops 7 % fewer trials, and in 2 objectives no more
selectively (0.536 -> 0.534): as much protection as stopping fewer trials
at random would buy. What no minimum fixes: a weak rung stops about a
third of the true front (0.17-0.23 with an equal-cost rung/final
correlation of 0.9, ``--sims 150 --rho 0.9``); the minimum only removes
the verdicts that were made on too few peers.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

#: (accuracy at the rung, cost, ...) of one trial: accuracy is maximised, every
#: cost after it (MACs, params, latency) minimised; all points compared have
#: the same length, at least 2
Point = tuple[float, ...]

#: a trial is judged only once at least ``MIN_PEERS_PER_ETA * eta`` other
#: (non-baseline, non-duplicate) trials reached its rung: chosen by
#: benchmarks/halving_peers.py, see the module docstring
MIN_PEERS_PER_ETA = 2


def minimum_peers(eta: int) -> int:
    """How many other trials must have reached a rung before a trial there
    can be stopped."""
    _check_eta(eta)
    return MIN_PEERS_PER_ETA * eta


def _check_eta(eta: int) -> None:
    if eta < 2:
        raise ValueError(f"eta must be >= 2, got {eta}")


def _dimension(points: Sequence[Point]) -> int:
    """The common length of ``points`` (0 for none); refuses mixed lengths
    and points without a cost."""
    sizes = {len(p) for p in points}
    if len(sizes) > 1:
        raise ValueError(f"points of different lengths {sorted(sizes)}: every point needs the same objectives")
    k = sizes.pop() if sizes else 0
    if points and k < 2:
        raise ValueError(f"a point needs accuracy and at least one cost, got {k} value(s)")
    return k


def dominates(a: Point, b: Point) -> bool:
    """``a`` is at least as good in every objective and better in one
    (the first, accuracy, is maximised; the costs after it are minimised)."""
    if len(a) != len(b):
        raise ValueError(f"points of different lengths {len(a)} and {len(b)}")
    if a[0] < b[0] or any(x > y for x, y in zip(a[1:], b[1:])):
        return False
    return a[0] > b[0] or any(x < y for x, y in zip(a[1:], b[1:]))


def nondominated_ranks(points: Sequence[Point]) -> list[int]:
    """Front number of each point: 0 for the Pareto front, 1 for the front
    once that is removed, and so on (Deb's fast non-dominated sort)."""
    _dimension(points)
    n = len(points)
    beaten_by = [0] * n                       # how many points dominate i
    beats: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                beats[i].append(j)
                beaten_by[j] += 1
            elif dominates(points[j], points[i]):
                beats[j].append(i)
                beaten_by[i] += 1
    ranks = [-1] * n
    front = [i for i in range(n) if beaten_by[i] == 0]
    rank = 0
    while front:
        following = []
        for i in front:
            ranks[i] = rank
            for j in beats[i]:
                beaten_by[j] -= 1
                if beaten_by[j] == 0:
                    following.append(j)
        front = following
        rank += 1
    return ranks


def crowding_distances(points: Sequence[Point]) -> list[float]:
    """NSGA-II crowding distance of each point within its own set (the
    boundary points of each objective get infinity)."""
    k = _dimension(points)
    n = len(points)
    distance = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for m in range(k):
        order = sorted(range(n), key=lambda i: points[i][m])
        low, high = points[order[0]][m], points[order[-1]][m]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for a, i, b in zip(order, order[1:], order[2:]):
            distance[i] += (points[b][m] - points[a][m]) / (high - low)
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
    _check_eta(eta)
    keep = max(1, len(points) // eta)
    return set(selection_order(points)[:keep])


def continues(point: Point, others: Sequence[Point], eta: int, min_peers: int | None = None) -> bool:
    """Whether a trial at ``point`` goes on past the rung, judged against the
    ``others`` that reached the same rung (its peers: without the baseline
    and without duplicates, see the module docstring). With fewer than
    ``min_peers`` of them (default :func:`minimum_peers`) it always goes on;
    ``min_peers=0`` is the bare ranking: whether it is in
    :func:`survivors` of itself and the others."""
    _check_eta(eta)
    needed = minimum_peers(eta) if min_peers is None else min_peers
    if needed < 0:
        raise ValueError(f"min_peers must be >= 0, got {min_peers}")
    _dimension([point, *others])
    if len(others) < needed:
        return True
    return 0 in survivors([point, *others], eta)
