"""Search efficiency at an equal compute budget: this search (NSGA-II with
Pareto-aware successive halving) against random sampling without pruning,
same space, same data, same training recipe, one run.

The budget is images trained (``--budget`` full-trial equivalents of the
space's fidelity). Each method runs trials until it has trained that many
images; a trial counts towards the front once it has finished inside the
budget. Prints, for each method, the trials run, images used and the
hypervolume of its (accuracy, MACs) front against the same reference point;
the ratio of the two; and the share of the budget this search needed to
reach random search's final hypervolume.

    python benchmarks/search_efficiency.py [--space mixed] [--budget 16] [--subset 5000] [--val-size 2000]
"""
from __future__ import annotations

import argparse
import time

import optuna
from optuna.trial import TrialState

import nas
from nas.device import configure_threads, resolve_runtime
from nas.report import hypervolume
from nas.search import Objective, TrialFailed, load_search_data
from nas.space import load_space


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="mixed")
    parser.add_argument("--budget", type=float, default=16, help="budget in full-trial equivalents")
    parser.add_argument("--subset", type=int, default=5000)
    parser.add_argument("--val-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="dataset folder (default: $NAS_DATA, else data/<dataset>)")
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    threads = configure_threads()
    runtime = resolve_runtime()
    space = load_space(args.space)
    space.fidelity.subset, space.fidelity.val_size = args.subset, args.val_size
    data = load_search_data(space, args.data)
    full_trial = round(space.fidelity.epochs * len(data.train_labels))
    budget_images = int(args.budget * full_trial)
    base = space.base_config(data.num_classes)
    ceiling = space.constraints.get("max_macs") or 2 * nas.profile(nas.build_model(base), base.input_size)["macs"]
    reference = (0.0, float(ceiling))
    print(f"# space {args.space}, {len(data.train_labels)} train / {len(data.val_labels)} val images, rungs "
          f"{space.fidelity.rungs} epochs, eta {space.fidelity.eta}; budget {args.budget:g} full trials = "
          f"{budget_images:,} images; reference point (accuracy 0, {ceiling / 1e6:g}M MACs); "
          f"{runtime.device} {runtime.precision}, {threads} threads")

    ours = run_method("nsga2+sh", space, data, runtime,
                      optuna.samplers.NSGAIISampler(population_size=space.population_size, seed=args.seed),
                      True, budget_images)
    rand = run_method("random", space, data, runtime, optuna.samplers.RandomSampler(seed=args.seed), False,
                      budget_images)

    hv_ours = front_hypervolume(ours, reference, budget_images)
    hv_rand = front_hypervolume(rand, reference, budget_images)
    for name, log, hv in (("nsga2+halving", ours, hv_ours), ("random, no pruning", rand, hv_rand)):
        inside = [r for r in log if r["cumulative"] <= budget_images]
        states = {s: sum(r["state"] == s for r in inside) for s in ("COMPLETE", "PRUNED", "FAIL")}
        print(f"{name:<20} {len(inside):>3} trials ({states['COMPLETE']} complete, {states['PRUNED']} pruned, "
              f"{states['FAIL']} failed), {inside[-1]['cumulative'] if inside else 0:,} images, "
              f"hypervolume {hv:.4f}")
    print(f"hypervolume ratio (nsga2+halving / random): {hv_ours / hv_rand:.3f}" if hv_rand > 0 else
          "random search found no front inside the budget")
    needed = next((r["cumulative"] for r in ours
                   if front_hypervolume(ours, reference, r["cumulative"]) >= hv_rand), None) if hv_rand > 0 else None
    if hv_rand <= 0:
        pass
    elif needed is None:
        print("nsga2+halving did not reach random search's final hypervolume inside the budget")
    else:
        print(f"nsga2+halving matched random search's final hypervolume after {needed:,} images "
              f"({needed / budget_images:.0%} of the budget)")


if __name__ == "__main__":
    main()
