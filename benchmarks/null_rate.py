"""How often the tool's verdicts are wrong: the false-win rate and the power
of the real decision path (docs/design.md 6a), by simulation.

    python benchmarks/null_rate.py --designs 1 3 8 --seeds 2 --sims 20000           # false wins (no effect)
    python benchmarks/null_rate.py --designs 3 --seeds 3 --effect 2                  # power at a 2-sigma gain
    python benchmarks/null_rate.py --designs 1 3 8 --rule normal                     # the rule before the t-based one

A simulated promotion: K attention designs and the baseline, each trained
with N seeds (the same seeds for all, as promote trains them), accuracies
drawn from one normal per design with seed std 1 (the unit of ``--effect``),
the first design ``--effect`` sigmas better than the others. The seed std is
pooled over all K + 1 designs and the best design is judged against the
baseline by :func:`nas.training.noise.judge_best` (promote's verdict: t-based, at the
Bonferroni bar 1 - 0.1 / K). The rate of "beats the baseline beyond noise"
is the false-win rate when ``--effect`` is 0 and the power otherwise; it is
printed with its binomial standard error.

A simulated front (``--front``): T search trials with random MACs, each
with a selecting seed and one seed drawn after the selection (repeats 2),
no real differences; the front is taken on the selecting seeds and
:func:`nas.training.noise.neighbour_marks` marks each step up; the rate of steps
marked resolved should be at most 1 - RESOLVED.

``--rule normal`` replays the rule before this one (the normal probability,
the unweighted mean of the designs' variances) for the before/after table.
"""
from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.training.noise import (
    RESOLVED,
    bonferroni,
    judge_best,
    neighbour_marks,
    pooled_noise,
    seeds_needed,
)


def _normal_verdict(designs: list[list[float]], baseline: list[float]) -> bool:
    """The verdict before the t-based rule: the normal probability with the
    unweighted mean of the per-design variances (kept here only to measure
    what it did)."""
    groups = [*designs, baseline]
    std = math.sqrt(statistics.fmean(statistics.variance(g) for g in groups))
    best = max(designs, key=statistics.fmean)
    z = (statistics.fmean(best) - statistics.fmean(baseline)) / (std * math.sqrt(1 / len(best) + 1 / len(baseline)))
    return 0.5 * (1 + math.erf(z / math.sqrt(2))) >= bonferroni(len(designs))


def promotion_rate(designs: int, seeds: int, sims: int, effect: float = 0.0, seed: int = 0,
                   rule: str = "t") -> tuple[float, float]:
    """The fraction of ``sims`` simulated promotions whose verdict is "beats
    the baseline beyond noise", and its binomial standard error."""
    rng = np.random.default_rng(seed)
    labels = list(range(seeds))
    wins = 0
    for _ in range(sims):
        acc = rng.normal(size=(designs + 1, seeds))
        acc[0] += effect  # design 0 is better by `effect` sigmas; the last row is the baseline
        rows = [list(map(float, r)) for r in acc]
        if rule == "normal":
            wins += _normal_verdict(rows[:-1], rows[-1])
            continue
        noise = pooled_noise([dict(zip(labels, r)) for r in rows])
        verdict = judge_best(rows[:-1], rows[-1], noise, seeds=[labels] * designs, baseline_seeds=labels)
        wins += verdict.beats
    rate = wins / sims
    return rate, math.sqrt(rate * (1 - rate) / sims)


def _trial(number: int, seeds: list[float], macs: float):
    return SimpleNamespace(number=number, values=[statistics.fmean(seeds), macs],
                           user_attrs={"seed_accuracies": seeds, "seeds": list(range(len(seeds))), "macs": macs})


def front_mark_rate(trials: int, sims: int, seed: int = 0) -> tuple[float, float, int]:
    """Over ``sims`` simulated searches with no real differences: the
    fraction of front steps marked resolved, its standard error, and the
    number of steps judged."""
    from nas.search.halving import nondominated_ranks
    from nas.training.noise import selecting_accuracy, trial_noise

    rng = np.random.default_rng(seed)
    resolved = judged = 0
    for _ in range(sims):
        ts = [_trial(i, list(map(float, rng.normal(size=2))), float(rng.uniform(10, 50))) for i in range(trials)]
        noise = trial_noise(ts)
        ranks = nondominated_ranks([(selecting_accuracy(t), t.values[1]) for t in ts])
        front = sorted((t for t, r in zip(ts, ranks) if r == 0), key=lambda t: t.values[1])
        marks = neighbour_marks(front, noise)[1:]
        judged += len(marks)
        resolved += sum(1 for m in marks if m == "")
    rate = resolved / max(1, judged)
    return rate, math.sqrt(rate * (1 - rate) / max(1, judged)), judged


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--designs", type=int, nargs="+", default=[1, 3, 8], help="attention designs K per promotion")
    p.add_argument("--seeds", type=int, default=2, help="seeds N per design (and the baseline)")
    p.add_argument("--sims", type=int, default=20000, help="simulated promotions per K")
    p.add_argument("--effect", type=float, default=0.0,
                   help="the true gain of one design, in seed stds (0: the false-win rate)")
    p.add_argument("--rule", choices=("t", "normal"), default="t",
                   help="t: the tool's decision function; normal: the rule before it")
    p.add_argument("--front", type=int, default=0, help="also simulate searches of this many trials (front marks)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name, value in (("--seeds", args.seeds - 1), ("--sims", args.sims), *(("--designs", k) for k in args.designs)):
        if value < 1:
            p.error(f"{name}: too small")
    started = time.perf_counter()
    what = "false-win rate" if args.effect == 0 else f"power at a true gain of {args.effect:g} sigma"
    print(f"# {_cpu()}, python {platform.python_version()}; {args.sims} "
          f"simulated promotions per row, {args.seeds} seeds per design, rule {args.rule}; nominal "
          f"{1 - RESOLVED:.2f} (Bonferroni bar 1 - {1 - RESOLVED:.2f} / K)")
    print(f"| designs K | {what} | ± binomial se | nominal | seeds needed (item 7) |")
    print("|---|---|---|---|---|")
    for k in args.designs:
        rate, se = promotion_rate(k, args.seeds, args.sims, args.effect, args.seed, args.rule)
        need = seeds_needed(args.effect, 1.0, level=bonferroni(k), arms=k + 1) if args.effect > 0 else None
        print(f"| {k} | {rate:.4f} | {se:.4f} | {1 - RESOLVED:.2f} | {need if need is not None else '-'} |")
    if args.front:
        rate, se, judged = front_mark_rate(args.front, max(1, args.sims // 10), args.seed)
        print(f"front marks, {args.front}-trial searches, no real differences: {judged} steps judged, "
              f"{rate:.4f} ± {se:.4f} marked resolved (nominal at most {1 - RESOLVED:.2f})")
    print(f"# {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
