"""Several studies' fronts on one chart: which space gave the better
trade-off, measured against one reference point.

Each study's front is :func:`nas.report.report.front_frame` (seed means, seed std,
delta to its baseline); the hypervolume of each is taken against one common
reference point (accuracy 0, the largest of the studies' own cost ceilings),
so the figures compare; the merged front is the non-dominated set of all
the studies' front points together. Fronts searched at different fidelities
(budget, subset, recipe) are not comparable: that is refused unless asked
for, and then said in the output.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from ..errors import NasError
from ..search.results import study_seed_std
from .report import (
    COST_UNITS,
    cost_objective,
    front_frame,
    hypervolume,
    reference_point,
)

#: what a front point's accuracy depends on besides the architecture: the data
#: and the training budget and recipe (not the halving's eta, the seed repeats,
#: the sampler seed nor the earlier rungs)
_BUDGET_KEYS = ("dataset", "subset", "val_size", "epochs", "batch_size", "lr", "warmup", "grad_clip")


def _budgets(study: optuna.Study, front: pd.DataFrame) -> set[tuple]:
    """The budgets the study's front points were trained at (one, unless the
    study was resumed with other overrides), each with the data fingerprint."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    out = set()
    for number in front.trial:
        fidelity = dict(by_number[int(number)].user_attrs.get("fidelity") or {})
        if fidelity.get("rungs"):
            fidelity["epochs"] = fidelity["rungs"][-1]
        out.add(tuple((k, fidelity.get(k)) for k in _BUDGET_KEYS)
                + (("data", study.user_attrs.get("data_fingerprint")),))
    return out


def _fidelity_difference(studies: list[optuna.Study], fronts: dict[str, pd.DataFrame]) -> str | None:
    """None when every front point of every study was trained at one budget on
    the same data, else what differs, e.g. ``subset: 10000 (se) vs 200 (eca)``."""
    budgets = {s.study_name: _budgets(s, fronts[s.study_name]) for s in studies}
    first = studies[0].study_name
    reference = next(iter(sorted(budgets[first], key=repr)), None)
    for name, found in budgets.items():
        if len(found) > 1:
            return f"the front of {name} mixes budgets (a resume with other overrides)"
        theirs = next(iter(found), None)
        if reference is not None and theirs is not None and theirs != reference:
            ours, other = dict(reference), dict(theirs)
            keys = [k for k in ours if ours[k] != other.get(k)]
            return "; ".join(f"{k}: {'(other data)' if k == 'data' else repr(ours[k])} ({first}) vs "
                             f"{'(other data)' if k == 'data' else repr(other.get(k))} ({name})" for k in keys)
    return None


def _merged_front(points: list[tuple[float, float]]) -> list[bool]:
    """Per point (accuracy, cost): True if no other point is at least as
    good in both and better in one."""
    return [not any((a2 >= a and c2 <= c) and (a2 > a or c2 < c) for a2, c2 in points) for a, c in points]


def compare_studies(studies: list[optuna.Study], out_dir: str | Path,
                    allow_different_fidelity: bool = False) -> dict[str, Any]:
    """One table (``compare.csv``) and one plot (``compare.png``) of the
    studies' fronts; returns them with the hypervolumes, the common
    reference point and any fidelity warning. Checks everything before a
    file is written."""
    names = [s.study_name for s in studies]
    if len(studies) < 2:
        raise NasError(f"compare needs at least two studies, got {len(studies)}: give --study twice or more")
    if len(set(names)) != len(names):
        raise NasError(f"--study: {', '.join(names)} names a study twice")
    objectives = {s.study_name: cost_objective(s) for s in studies}
    if len(set(objectives.values())) > 1:
        raise NasError("the studies trade accuracy against different costs ("
                       + ", ".join(f"{n}: {o}" for n, o in objectives.items()) + "); compare studies of one")
    objective = objectives[names[0]]
    fronts = {s.study_name: front_frame(s, study_seed_std(s)) for s in studies}
    difference = _fidelity_difference(studies, fronts)
    if difference and not allow_different_fidelity:
        raise NasError(f"the studies were searched at different fidelities ({difference}); their accuracies "
                       f"do not compare: pass --allow-different-fidelity to compare them anyway")
    warning = f"warning: different fidelities ({difference}); accuracies do not compare" if difference else None

    table = pd.concat([front.assign(study=name) for name, front in fronts.items()], ignore_index=True)
    if table.empty:
        raise NasError(f"none of the studies {', '.join(names)} has a completed, trained trial yet")
    reference = (0.0, max(reference_point(s)[1] for s in studies))
    scale = COST_UNITS[objective][0]
    hypervolumes = {n: hypervolume([(r.val_accuracy, r.cost) for r in table[table.study == n].itertuples()],
                                   reference, scale) for n in names}
    table["merged_front"] = _merged_front(list(zip(table.val_accuracy, table.cost)))
    merged_hv = hypervolume([(r.val_accuracy, r.cost) for r in table[table.merged_front].itertuples()],
                            reference, scale)
    columns = ["study", "trial", "val_accuracy", "accuracy_std", "seeds", "macs", "latency_ms", "cost", "params",
               "delta_accuracy", "delta_macs", "merged_front", "attention", "structure_hash"]
    table = table[columns].sort_values(["cost", "study"], ignore_index=True)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "compare.csv", index=False)
    _plot(table, names, hypervolumes, reference, objective, out / "compare.png", warning)
    return {"table": table, "hypervolumes": hypervolumes, "merged_hypervolume": merged_hv, "reference": reference,
            "cost_objective": objective, "warning": warning, "csv": out / "compare.csv",
            "plot": out / "compare.png"}


def _plot(table: pd.DataFrame, names: list[str], hypervolumes: dict[str, float], reference, objective: str,
          path: Path, warning: str | None) -> None:
    import matplotlib  # lazy: matplotlib costs ~1 s at import; only plotting commands pay it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib costs ~1 s at import; only plotting commands pay it

    scale, label, unit = COST_UNITS[objective]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    colours = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        front = table[table.study == name].sort_values("cost")
        ax.step(front.cost / scale, front.val_accuracy, where="post", color=colours(i % 10), alpha=0.6)
        ax.scatter(front.cost / scale, front.val_accuracy, color=colours(i % 10), s=40,
                   label=f"{name} (hypervolume {hypervolumes[name]:.3f})")
    merged = table[table.merged_front].sort_values("cost")
    ax.scatter(merged.cost / scale, merged.val_accuracy, facecolors="none", edgecolors="black", s=140,
               linewidths=1.2, label="merged front", zorder=3)
    ax.set_xlabel(label)
    ax.set_ylabel("validation accuracy")
    title = f"fronts against one reference: accuracy {reference[0]:g}, {reference[1] / scale:g}{unit}"
    ax.set_title(title + (f"\n{warning}" if warning else ""), fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
