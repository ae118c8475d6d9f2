"""The winner's curse of a search's front, by simulation (docs/design.md 6a).

    python benchmarks/winners_curse.py --trials 40 --repeats 2 --sims 2000
    python benchmarks/winners_curse.py --rule before      # the front and Δ as they were computed before

A simulated search with no real differences: ``--trials`` designs (trial 0
the attention-free baseline) with random MACs, every seed's accuracy drawn
from one normal with std 1 (sigma, the unit of every figure printed). The
search's own repeat rule decides which trial gets its further seeds: the
baseline always; any other one when its first seed is near the front
(:func:`nas.training.noise.near_front`, twice the pooled seed std of the trials
repeated so far), as :meth:`nas.search.objective.Objective._repeat_if_near_front`
does. Then the front and its Δ against the baseline:

* ``after`` (the tool now): the front on each trial's selecting seed
  (:func:`nas.training.noise.selecting_accuracy`, as :func:`nas.search.results.pareto_front`
  takes it) and Δ on the seeds drawn after the selection, baseline alike
  (:func:`nas.training.noise.front_gain`);
* ``before``: the front on the seed means and Δ = mean minus the
  baseline's mean, all seeds.

Printed: the mean Δ of front designs against the baseline and of the best
front design, in sigmas, with their standard errors over the simulations;
without real differences both should be 0.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.search.halving import nondominated_ranks  # noqa: E402
from nas.training.noise import front_gain, near_front, selecting_accuracy, trial_noise  # noqa: E402


def _trial(number: int, seeds: list[float], macs: float):
    return SimpleNamespace(number=number, values=[statistics.fmean(seeds), macs],
                           user_attrs={"seed_accuracies": seeds, "seeds": list(range(len(seeds))), "macs": macs,
                                       **({"baseline": True} if number == 0 else {})})


def search_once(rng: np.random.Generator, trials: int, repeats: int, rule: str = "after") -> list[float]:
    """One simulated search; the Δ (in sigmas) of each front design against
    the baseline (the baseline itself left out)."""
    done = []
    for i in range(trials):
        macs = 30.0 if i == 0 else float(rng.uniform(10, 50))
        first = float(rng.normal())
        noise = 2.0 * trial_noise(done).std
        if rule == "after":
            points = [(selecting_accuracy(t), t.values[1]) for t in done]
        else:
            points = [(t.values[0], t.values[1]) for t in done]
        seeds = [first]
        if i == 0 or near_front((first, macs), points, noise):
            seeds += [float(x) for x in rng.normal(size=repeats - 1)]
        done.append(_trial(i, seeds, macs))
    base, designs = done[0], done[1:]
    if rule == "after":
        ranks = nondominated_ranks([(selecting_accuracy(t), t.values[1]) for t in designs])
        front = [t for t, r in zip(designs, ranks) if r == 0]
        return [front_gain(t, base, trial_noise(done)).delta for t in front]
    ranks = nondominated_ranks([(t.values[0], t.values[1]) for t in designs])
    return [t.values[0] - base.values[0] for t, r in zip(designs, ranks) if r == 0]


def winners_curse(trials: int = 40, repeats: int = 2, sims: int = 2000, seed: int = 0,
                  rule: str = "after") -> dict[str, float]:
    """Mean Δ of front designs and of the best front design against the
    baseline over ``sims`` searches, with standard errors (sigma units)."""
    rng = np.random.default_rng(seed)
    per_search, best = [], []
    for _ in range(sims):
        deltas = search_once(rng, trials, repeats, rule)
        if deltas:
            per_search.append(statistics.fmean(deltas))
            best.append(max(deltas))

    def se(xs):
        return statistics.stdev(xs) / math.sqrt(len(xs))

    return {"front_mean": statistics.fmean(per_search), "front_se": se(per_search),
            "best_mean": statistics.fmean(best), "best_se": se(best), "searches": len(per_search)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--sims", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rule", choices=("after", "before", "both"), default="both")
    args = p.parse_args(argv)
    if args.trials < 2 or args.repeats < 2 or args.sims < 2:
        p.error("--trials, --repeats and --sims must be at least 2")
    started = time.perf_counter()
    print(f"# {args.sims} simulated searches of {args.trials} trials, repeats {args.repeats}, no real differences; "
          f"Δ of front designs against the baseline, in seed stds")
    print("| rule | mean Δ of front designs | ± se | Δ of the best front design | ± se |")
    print("|---|---|---|---|---|")
    for rule in (("before", "after") if args.rule == "both" else (args.rule,)):
        r = winners_curse(args.trials, args.repeats, args.sims, args.seed, rule)
        print(f"| {rule} | {r['front_mean']:+.3f} | {r['front_se']:.3f} | {r['best_mean']:+.3f} | {r['best_se']:.3f} |")
    print(f"# {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
