"""How many peers Pareto-aware halving needs before it may stop a trial: a
seeded replay of the rung decision with the real :func:`nas.search.halving.continues`
on simulated studies, for 2 objectives (accuracy, MACs) and 3 (accuracy,
MACs, params), per candidate minimum number of peers (0, eta, 2 eta, 3 eta),
plus the rule as it was (judged from the first report on, the attention-free
baseline counted as a peer).

The model of one study (``--trials`` trials, one after another, as one worker
runs them; each is judged at the first rung against every earlier trial that
reached it, stopped ones included, as in ASHA):

* trial 0 is the attention-free baseline: the cheapest design (every cost
  0.9 of the cheapest draw), trained to the end, never stopped;
* every other design draws a size ``s ~ U(0, 1)`` (log MACs, scaled);
  MACs = ``s``; with 3 objectives params = ``0.6 s + 0.4 v``, ``v ~ U(0, 1)``
  (correlated with MACs, not equal: attention adds params at few MACs);
* capacity ``c`` = ``s`` (2 objectives) or ``0.6 s + 0.4 params`` (3);
  true final accuracy = ``0.80 + --trend sqrt(c) + q``, ``q ~ N(0,
  --quality)``: the design's quality at its cost (attention type and
  placement; defaults 0.03 and 0.015: in ``mixed`` the module choice, not
  the cost, decides most of the accuracy, docs/measurements/calibration.md "Calibrating ``mixed``, measured");
* accuracy at the first rung = ``0.55 + --trend sqrt(c) + --quality *
  (rho z + sqrt(1 - rho^2) e)``, ``z = q / --quality``, ``e ~ N(0, 1)``:
  the rung sees the cost trend and, through ``--rho``, part of the quality
  (the rest is a rung-1 noise: seed noise and designs that learn early
  faster or slower). ``--rho`` is the correlation of rung and final accuracy
  among designs of equal cost (default 0.5); the printed Kendall tau and
  Spearman are the resulting rung/final rank correlations over all designs,
  cost trend included (calibrate measured tau +0.43 for ``mixed``'s 1-epoch
  rung against its 10-epoch reference).

A design is truly Pareto-optimal if no design of the study (baseline
included) dominates it on (true final accuracy, costs). Printed per rule:
``P(front pruned)``, the share of the truly Pareto-optimal designs (not the
baseline) that are stopped at the rung (with its binomial standard error;
designs of one study are not independent, so read it as a lower bound);
``studies losing one``, the share of studies that stop at least one of them;
``P(dominated pruned)``, the same share among the dominated designs (how
selective the rule still is); ``stopped``, the share of the searched trials
stopped, i.e. the compute saved is ``stopped x (1 - rung / budget)`` of
their training (2/3 of it with rungs at 1 and 3 epochs); ``front/dominated``,
the ratio of the two shares (1: the verdicts stop Pareto-optimal designs as
often as dominated ones, i.e. carry no information about the front; lower is
better). Then, for the rule without a minimum, the same two shares by how
many peers a trial was judged against: what a verdict with that few peers
is worth.

    python benchmarks/halving_peers.py [--sims 300] [--trials 30] [--eta 3] [--rho 0.5] [--trend 0.03]
                                       [--quality 0.015] [--seed 0]

About 30 s with the defaults on a 2-core machine.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

from nas.search import halving


def simulate_study(rng: np.random.Generator, trials: int, k: int, rho: float, quality: float, trend: float):
    """(rung points, final points) of one study, trial 0 the baseline; each
    point is (accuracy, cost, ...) with ``k`` values."""
    n = trials - 1
    size = rng.uniform(0.0, 1.0, n)
    costs = [size]
    if k == 3:
        costs.append(0.6 * size + 0.4 * rng.uniform(0.0, 1.0, n))
    capacity = size if k == 2 else 0.6 * size + 0.4 * costs[1]
    z = rng.standard_normal(n)
    final = 0.80 + trend * np.sqrt(capacity) + quality * z
    rung = 0.55 + trend * np.sqrt(capacity) + quality * (rho * z + math.sqrt(1.0 - rho ** 2) * rng.standard_normal(n))
    # the baseline: cheapest in every cost, average quality at its capacity
    base_costs = [0.9 * float(c.min()) for c in costs]
    base_capacity = base_costs[0] if k == 2 else 0.6 * base_costs[0] + 0.4 * base_costs[1]
    base_final = 0.80 + trend * math.sqrt(base_capacity)
    base_rung = 0.55 + trend * math.sqrt(base_capacity)
    rung_points = [(base_rung, *base_costs)] + [(float(rung[i]), *(float(c[i]) for c in costs)) for i in range(n)]
    final_points = [(base_final, *base_costs)] + [(float(final[i]), *(float(c[i]) for c in costs)) for i in range(n)]
    return rung_points, final_points


def replay(rung_points, eta: int, min_peers: int, baseline_is_peer: bool) -> list[bool]:
    """Whether each searched trial (1, 2, ...) is stopped at the rung, judged
    in arrival order by :func:`nas.search.halving.continues`."""
    stopped = []
    for i in range(1, len(rung_points)):
        peers = rung_points[:i] if baseline_is_peer else rung_points[1:i]
        stopped.append(not halving.continues(rung_points[i], peers, eta, min_peers=min_peers))
    return stopped


def ranks(a) -> np.ndarray:
    return np.argsort(np.argsort(a))


def kendall(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    sa, sb = np.sign(a[:, None] - a[None, :]), np.sign(b[:, None] - b[None, :])
    n = len(a)
    return float((sa * sb).sum() / (n * (n - 1)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=300, help="simulated studies per objective count")
    parser.add_argument("--trials", type=int, default=30, help="trials per study, the baseline included")
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--rho", type=float, default=0.5,
                        help="correlation of rung and final accuracy among designs of equal cost")
    parser.add_argument("--quality", type=float, default=0.015, help="std of a design's accuracy at its cost")
    parser.add_argument("--trend", type=float, default=0.03, help="accuracy gained from the cheapest to the costliest")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.trials < 3 or args.sims < 1 or args.eta < 2 or not 0 <= args.rho <= 1:
        parser.error("--trials must be >= 3, --sims >= 1, --eta >= 2 and --rho in [0, 1]")
    eta = args.eta
    rules = [("as it was: baseline a peer, min 0", 0, True)] + [
        (f"min peers {m:>2} ({f} eta)" if f else f"min peers {m:>2}", m, False)
        for f, m in ((0, 0), (1, eta), (2, 2 * eta), (3, 3 * eta))]
    buckets = [(1, eta), (eta, 2 * eta), (2 * eta, 3 * eta), (3 * eta, args.trials)]
    started = time.perf_counter()
    print(f"# {args.sims} studies x {args.trials} trials (trial 0 the baseline), eta {eta}, rho {args.rho}, "
          f"trend {args.trend}, quality std {args.quality}, seed {args.seed}; nas.search.halving's default minimum: "
          f"{halving.MIN_PEERS_PER_ETA} x eta = {halving.minimum_peers(eta)} peers")
    for k in (2, 3):
        rng = np.random.default_rng([args.seed, k])
        front_pruned = {r: 0 for r, _, _ in rules}
        lost = {r: 0 for r, _, _ in rules}
        dominated_pruned = {r: 0 for r, _, _ in rules}
        stopped = {r: 0 for r, _, _ in rules}
        by_peers = {b: [0, 0, 0, 0] for b in buckets}  # front judged, front stopped, dominated judged, stopped
        fronts = dominated = 0
        taus, rhos = [], []
        for _ in range(args.sims):
            rung_points, final_points = simulate_study(rng, args.trials, k, args.rho, args.quality, args.trend)
            rung_acc, final_acc = [p[0] for p in rung_points[1:]], [p[0] for p in final_points[1:]]
            taus.append(kendall(rung_acc, final_acc))
            rhos.append(float(np.corrcoef(ranks(rung_acc), ranks(final_acc))[0, 1]))
            on_front = [r == 0 for r in halving.nondominated_ranks(final_points)][1:]
            fronts += sum(on_front)
            dominated += len(on_front) - sum(on_front)
            for name, m, baseline_is_peer in rules:
                verdicts = replay(rung_points, eta, m, baseline_is_peer)
                hit = sum(v and f for v, f in zip(verdicts, on_front))
                front_pruned[name] += hit
                lost[name] += hit > 0
                dominated_pruned[name] += sum(v and not f for v, f in zip(verdicts, on_front))
                stopped[name] += sum(verdicts)
                if m == 0 and not baseline_is_peer:  # every trial judged: by how many peers it had
                    for peers, (v, f) in enumerate(zip(verdicts, on_front)):
                        for low, high in buckets:
                            if low <= peers < high:
                                by_peers[low, high][0 if f else 2] += 1
                                by_peers[low, high][1 if f else 3] += v
        searched = args.sims * (args.trials - 1)
        objectives = "accuracy, MACs" if k == 2 else "accuracy, MACs, params"
        print(f"\n{k} objectives ({objectives}): {fronts / args.sims:.1f} of {args.trials - 1} searched designs "
              f"truly Pareto-optimal per study; rung vs final accuracy: Kendall tau {np.mean(taus):+.2f}, "
              f"Spearman {np.mean(rhos):+.2f}")
        print(f"  {'rule':<34} {'P(front pruned)':>17} {'studies losing one':>19} {'P(dominated pruned)':>20} "
              f"{'stopped':>8} {'front/dominated':>16}")
        for name, _, _ in rules:
            p = front_pruned[name] / fronts
            se = math.sqrt(p * (1 - p) / fronts)
            q = dominated_pruned[name] / dominated
            print(f"  {name:<34} {p:>9.3f} ± {se:.3f} {lost[name] / args.sims:>19.3f} "
                  f"{q:>20.3f} {stopped[name] / searched:>8.3f} {p / q if q else math.nan:>16.3f}")
        print("  judged with P peers (min peers 0):  P(front pruned)  P(dominated pruned)")
        for (low, high), (fj, fs, dj, ds) in by_peers.items():
            if fj or dj:
                print(f"    {f'{low}-{high - 1}':>6} peers {'':>20} {fs / max(fj, 1):>9.3f} {ds / max(dj, 1):>20.3f}")
    print(f"\n# {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
