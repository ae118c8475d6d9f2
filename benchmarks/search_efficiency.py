"""Search efficiency at an equal compute budget: this search (NSGA-II with
Pareto-aware successive halving) against random sampling without pruning,
same space, same data, same training recipe, side by side, repeated with
``--seeds`` sampler seeds.

The budget is images trained (``--budget`` full-trial equivalents of the
space's fidelity; a repeated front candidate's extra seeds count too). Each
method runs trials until it has trained that many images; a trial counts
towards the front once it has finished inside the budget. Prints, for each
seed and method, the trials run, images used and the hypervolume of its
(accuracy, MACs) front against the same reference point; then the ratio of
the two as mean +- std over the seeds, and the share of the budget this
search needed to reach random search's final hypervolume. Each finished
(method, seed) run is kept in ``--log`` (JSON), so the command resumes after
a kill with the runs it had not finished.

    python benchmarks/search_efficiency.py [--space mixed] [--budget 16] [--seeds 3] [--subset N] [--val-size N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import _cifar
import optuna
from optuna.trial import TrialState

import nas
from nas.device import configure_threads, resolve_runtime
from nas.report.report import hypervolume
from nas.search.objective import Objective, TrialFailed, load_search_data
from nas.search.space import load_space


def run_method(name: str, space, data, runtime, sampler, halving: bool, budget_images: int) -> list[dict]:
    """Trials in the order they finished: number, state, images, accuracy, MACs."""
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    objective = Objective(space, data, runtime, halving=halving)
    log: list[dict] = []
    used = [0]
    started = time.perf_counter()

    def account(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        images = trial.user_attrs.get("images_trained", 0)
        used[0] += images
        acc = trial.values[0] if trial.state == TrialState.COMPLETE else None
        log.append({"trial": trial.number, "state": trial.state.name, "images": images, "cumulative": used[0],
                    "accuracy": acc, "macs": trial.user_attrs.get("macs"),
                    "trained": "not_trained" not in trial.user_attrs and "duplicate_of" not in trial.user_attrs})
        print(f"  {name:<8} trial {trial.number:>3} {trial.state.name:<8} "
              f"{'' if acc is None else f'acc {acc:.4f} '}MACs {trial.user_attrs.get('macs', 0) / 1e6:6.2f}M  "
              f"images {used[0]:>8,} / {budget_images:,}  ({time.perf_counter() - started:5.0f} s)", flush=True)
        if used[0] >= budget_images:
            study.stop()

    study.optimize(objective, callbacks=[account], catch=(TrialFailed,))
    return log


def front_hypervolume(log: list[dict], reference, budget_images: int | None = None) -> float:
    points = [(row["accuracy"], row["macs"]) for row in log
              if row["accuracy"] is not None and row["trained"]
              and (budget_images is None or row["cumulative"] <= budget_images)]
    return hypervolume(points, reference)


def _needed(log: list[dict], reference, target: float) -> int | None:
    """Images this search needed to reach hypervolume ``target``."""
    return next((r["cumulative"] for r in log if front_hypervolume(log, reference, r["cumulative"]) >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="mixed")
    parser.add_argument("--budget", type=float, default=16, help="budget in full-trial equivalents")
    parser.add_argument("--subset", type=int, default=None, help="override the space's training subset")
    parser.add_argument("--val-size", type=int, default=None, help="override the space's validation size")
    parser.add_argument("--seeds", type=int, default=3, help="sampler seeds 0..N-1, each a run of both methods")
    parser.add_argument("--data", help="dataset folder (default: $NAS_DATA, else data/<dataset>)")
    parser.add_argument("--log", default=None, help="runs kept for resuming (default: "
                        "studies/benchmarks/search_efficiency-<space>-<budget>.json)")
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    threads = configure_threads()
    runtime = resolve_runtime()
    space = load_space(args.space)
    if args.subset is not None:
        space.fidelity.subset = args.subset
    if args.val_size is not None:
        space.fidelity.val_size = args.val_size
    data = load_search_data(space, args.data)
    full_trial = round(space.fidelity.epochs * len(data.train_labels))
    budget_images = int(args.budget * full_trial)
    base = space.base_config(data.num_classes)
    ceiling = space.constraints.get("max_macs") or 2 * nas.profile(nas.build_model(base), base.input_size)["macs"]
    reference = (0.0, float(ceiling))
    f = space.fidelity
    print(f"# space {args.space}, {len(data.train_labels)} train / {len(data.val_labels)} val images, rungs "
          f"{f.rungs} epochs, eta {f.eta}, repeats {f.repeats}; budget {args.budget:g} full trials = "
          f"{budget_images:,} images; reference point (accuracy 0, {ceiling / 1e6:g}M MACs); "
          f"{_cifar.cpu_model()}, {runtime.device} {runtime.precision}, {threads} threads", flush=True)

    setup = {"space": space.source, "fidelity": f.as_dict(), "budget": args.budget, "data": data.fingerprint,
             "cpu": _cifar.cpu_model(), "precision": runtime.precision, "version": nas.__version__}
    path = Path(args.log or f"studies/benchmarks/search_efficiency-{args.space}-{args.budget:g}.json")
    runs: dict[str, list[dict]] = {}
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("setup") == setup:
            runs = saved["runs"]
        else:
            aside = path.with_name(path.name + f".other-{int(time.time())}")
            path.rename(aside)
            print(f"note: {path} was written for another setup; moved to {aside.name}")
    path.parent.mkdir(parents=True, exist_ok=True)

    def keep(key: str, log: list[dict]) -> None:
        runs[key] = log
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"setup": setup, "runs": runs}, indent=1))
        os.replace(tmp, path)

    ratios, shares = [], []
    for seed in range(args.seeds):
        for key, name, sampler, halving in (
                (f"nsga2+sh/{seed}", "nsga2+sh",
                 lambda: optuna.samplers.NSGAIISampler(population_size=space.population_size, seed=seed), True),
                (f"random/{seed}", "random", lambda: optuna.samplers.RandomSampler(seed=seed), False)):
            if key in runs:
                print(f"  {key}: kept from {path}")
                continue
            keep(key, run_method(name, space, data, runtime, sampler(), halving, budget_images))
        ours, rand = runs[f"nsga2+sh/{seed}"], runs[f"random/{seed}"]
        hv_ours = front_hypervolume(ours, reference, budget_images)
        hv_rand = front_hypervolume(rand, reference, budget_images)
        print(f"seed {seed}:")
        for name, log, hv in (("nsga2+halving", ours, hv_ours), ("random, no pruning", rand, hv_rand)):
            inside = [r for r in log if r["cumulative"] <= budget_images]
            states = {s: sum(r["state"] == s for r in inside) for s in ("COMPLETE", "PRUNED", "FAIL")}
            print(f"  {name:<20} {len(inside):>3} trials ({states['COMPLETE']} complete, {states['PRUNED']} pruned, "
                  f"{states['FAIL']} failed), {inside[-1]['cumulative'] if inside else 0:,} images, "
                  f"hypervolume {hv:.4f}")
        if hv_rand > 0:
            ratios.append(hv_ours / hv_rand)
            needed = _needed(ours, reference, hv_rand)
            shares.append(None if needed is None else needed / budget_images)
            print(f"  hypervolume ratio (nsga2+halving / random): {ratios[-1]:.3f}; random's final hypervolume "
                  + ("not reached inside the budget" if needed is None else
                     f"reached after {needed:,} images ({needed / budget_images:.0%} of the budget)"))
        else:
            print("  random search found no front inside the budget")
    if ratios:
        spread = f" ± {statistics.stdev(ratios):.3f} (std)" if len(ratios) > 1 else ""
        print(f"hypervolume ratio over {len(ratios)} seed(s): {statistics.fmean(ratios):.3f}{spread}; "
              f"per seed {', '.join(f'{r:.3f}' for r in ratios)}")
        reached = [x for x in shares if x is not None]
        print(f"random search's final hypervolume reached in {len(reached)} of {len(shares)} seeds"
              + (f", after {statistics.fmean(reached):.0%} of the budget on average" if reached else ""))


if __name__ == "__main__":
    main()
