"""Picking a trial from a study's Pareto front (the knee over the attention
designs, the most accurate, the smallest, or a number) and writing it as a
config file that rebuilds the same network."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ..errors import NasError
from ..model.config import ArchConfig
from ..model.network import build_model
from ..model.profile import profile
from ..search.results import exported_config, is_baseline, pareto_front

PICKS = ("knee", "accuracy", "smallest")


# --------------------------------------------------------------------------- export


def pick_trial(study: optuna.Study, pick: str = "knee", max_macs: float | None = None,
               trial_number: int | None = None) -> optuna.trial.FrozenTrial:
    """A trained, completed trial: ``trial_number`` if given, else from the
    Pareto front (under ``max_macs``) the most accurate, the smallest, or the
    knee — the point furthest from the line joining those two, with both
    objectives scaled to [0, 1] over the front. The knee is taken over the
    front's attention designs (:func:`knee_candidates`): the attention-free
    baseline is the reference a design is measured against, not a design to
    choose (nor to ablate); it is the knee only when no attention design is
    on the front."""
    if trial_number is not None:
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        t = trials.get(trial_number)
        if t is None:
            raise NasError(f"--trial: study {study.study_name!r} has no trial {trial_number} "
                           f"(trials 0..{len(trials) - 1})")
        if t.state != TrialState.COMPLETE or "not_trained" in t.user_attrs:
            raise NasError(f"--trial: trial {trial_number} is {t.state.name.lower()}"
                           f"{' (infeasible, never trained)' if 'not_trained' in t.user_attrs else ''}; "
                           "export takes a completed, trained trial")
        return t
    if pick not in PICKS:
        raise NasError(f"--pick: {pick!r} is not one of {', '.join(PICKS)}")
    front = pareto_front(study)
    if not front:
        raise NasError(f"study {study.study_name!r} has no completed, trained trial yet")
    if max_macs is not None:
        front = [t for t in front if t.user_attrs["macs"] <= max_macs]
        if not front:
            raise NasError(f"--max-macs: no Pareto-front trial has at most {max_macs:,.0f} MACs")
    if pick == "accuracy":
        return max(front, key=lambda t: (t.values[0], -t.values[1]))
    if pick == "smallest":
        return min(front, key=lambda t: (t.values[1], -t.values[0]))
    return _knee(knee_candidates(front)[0])


def knee_candidates(front: list[optuna.trial.FrozenTrial]
                    ) -> tuple[list[optuna.trial.FrozenTrial], list[optuna.trial.FrozenTrial]]:
    """(the front points the knee is taken over, the baselines left out):
    the attention designs when the front has any, else the whole front."""
    designs = [t for t in front if not is_baseline(t)]
    if not designs:
        return list(front), []
    return designs, [t for t in front if is_baseline(t)]


def _knee(front: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial:
    accs = [t.values[0] for t in front]
    macs = [t.values[1] for t in front]

    def scaled(v, lo, hi):
        return 0.0 if hi == lo else (v - lo) / (hi - lo)

    pts = [(scaled(a, min(accs), max(accs)), scaled(m, min(macs), max(macs))) for a, m in zip(accs, macs)]
    # the line from the smallest (0 MACs, 0 acc after scaling) to the most accurate (1, 1)
    # distance of (a, m) to the diagonal a = m is |a - m| / sqrt(2); above the line: a > m
    best = max(range(len(front)), key=lambda i: (pts[i][0] - pts[i][1], accs[i]))
    return front[best]


def export_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, path: str | Path,
                 storage: str | None = None) -> dict[str, Any]:
    """Write ``trial``'s architecture with its metrics and provenance; check
    that the file rebuilds the same network (params, MACs, hash)."""
    a = trial.user_attrs
    cfg = exported_config(study, trial.number, a, trial.values[0], storage)
    metrics = cfg.meta["metrics"]
    rebuilt = ArchConfig.from_yaml(cfg.to_yaml())
    cost = profile(build_model(rebuilt), rebuilt.input_size)
    got = {"params": cost["params"], "macs": cost["macs"], "structure_hash": rebuilt.structure_hash()}
    want = {"params": a["params"], "macs": a["macs"], "structure_hash": a["structure_hash"]}
    if got != want:  # would be a bug in the config round trip, never the user's fault
        raise RuntimeError(f"exported config does not rebuild trial {trial.number}: {got} != {want}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    cfg.save(path)
    return {"path": str(path), "trial": trial.number, **metrics}
