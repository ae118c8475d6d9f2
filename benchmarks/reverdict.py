"""Judge stored promotions and ablations again with the current decision
function, without training anything (docs/design.md 6a).

    python benchmarks/reverdict.py --storage sqlite:///benchmarks/results/sk-search/nas.db \\
        --promoted sk:promoted --ablation ablate:sk-trial32 --search sk

Reads the trainings a ``promote`` and an ``ablate`` stored, and prints their
tables as the commands print them now (t-based P(Δ>0) with the seed std
pooled by degrees of freedom, diverged seeds at chance, the Bonferroni
verdict and what it would take), and the search's front with its gains
judged on the seeds drawn after selection. The trainings themselves are the
stored ones: a promotion stored before the confirmation split and the seed
offsets was validated on the search's validation images with the proxy's
seeds, so its verdict here is the new rule on the old evidence; the
commands would retrain it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.model.config import ArchConfig  # noqa: E402
from nas.search.results import (  # noqa: E402
    baseline_trial,
    format_front,
    pareto_front,
    study_seed_std,
)
from nas.training.budget import Fidelity  # noqa: E402
from nas.training.evaluate import EVALUATION  # noqa: E402
from nas.training.noise import pooled_noise  # noqa: E402
from nas.training.splits import DEFAULT_VAL_SIZE  # noqa: E402
from nas.workflows.ablate import Ablation, Variant, format_ablation  # noqa: E402
from nas.workflows.promote import (  # noqa: E402
    Promoted,
    Promotion,
    _candidate_of,
    format_promotion,
    summaries,
)


def promotion(storage: str, name: str) -> Promotion:
    study = optuna.load_study(study_name=name, storage=storage)
    proxy = optuna.load_study(study_name=study.user_attrs["promoted_from"], storage=storage)
    rows = [Promoted(_candidate_of(s, proxy), s, list(s.user_attrs["seed_accuracies"]), s.user_attrs["train_seconds"])
            for s in summaries(study).values()]
    noise = pooled_noise([r.stable() for r in rows])
    front = sorted(t.number for t in pareto_front(study))
    with_proxy = [r for r in rows if r.candidate.proxy is not None]
    tau = None
    if len(with_proxy) >= 2:
        from nas.workflows.calibrate import rank_agreement

        tau = rank_agreement([r.candidate.proxy.values[0] for r in with_proxy], [r.accuracy for r in with_proxy])[0]
    f = study.user_attrs.get("fidelity") or {}
    runs = [t for t in study.trials if t.user_attrs.get("kind") == EVALUATION]
    return Promotion(proxy.study_name, study, Fidelity(**{k: v for k, v in f.items() if k in Fidelity.__annotations__}),
                     runs[0].user_attrs.get("train_images", 0) if runs else 0, f.get("val_size") or DEFAULT_VAL_SIZE,
                     sorted({s for r in rows for s in r.seeds}), rows, front,
                     next((r for r in rows if r.candidate.baseline), None), noise, tau,
                     max(with_proxy, key=lambda r: r.candidate.proxy.values[0], default=None))


def ablation(storage: str, name: str) -> Ablation:
    from nas.workflows.ablate import variants

    study = optuna.load_study(study_name=name, storage=storage)
    cfg = ArchConfig.from_yaml(study.user_attrs["config"])
    vs: list[Variant] = variants(cfg)
    step_ms = study.user_attrs.get("step_ms") or {}
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("kind") == EVALUATION]
    seeds = sorted({t.user_attrs["seed"] for t in done})
    for v in vs:
        h = v.cfg.structure_hash()
        mine = sorted((t for t in done if t.user_attrs["structure_hash"] == h), key=lambda t: t.user_attrs["seed"])
        v.accuracies = [t.values[0] for t in mine]
        v.seeds = [t.user_attrs["seed"] for t in mine]
        if mine:
            v.macs, v.params = int(mine[0].user_attrs["macs"]), int(mine[0].user_attrs["params"])
        v.step_ms = float(step_ms.get(h, 0.0))
    unique = {v.cfg.structure_hash(): v for v in vs if v.accuracies}
    noise = pooled_noise([dict(zip(v.seeds, v.accuracies)) for v in unique.values()])
    f = study.user_attrs.get("fidelity") or {}
    return Ablation(name, study, (f.get("rungs") or [0])[-1], done[0].user_attrs.get("train_images", 0) if done else 0,
                    f.get("val_size") or DEFAULT_VAL_SIZE, seeds, vs, noise, [])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--promoted")
    p.add_argument("--ablation")
    p.add_argument("--search")
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if args.search:
        study = optuna.load_study(study_name=args.search, storage=args.storage)
        print(f"search {args.search!r}: the front (chosen on each trial's first seed), gains on the seeds after")
        print(format_front(pareto_front(study), study_seed_std(study), baseline_trial(study)))
        print()
    if args.promoted:
        print(format_promotion(promotion(args.storage, args.promoted)))
        print()
    if args.ablation:
        print(format_ablation(ablation(args.storage, args.ablation)))


if __name__ == "__main__":
    main()
