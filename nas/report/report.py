"""What a finished (or running) study says: the table of trials, the Pareto
front of validation accuracy against MACs, its hypervolume, a plot, and the
export of one chosen architecture to a YAML that rebuilds it exactly.
"""
from __future__ import annotations

import functools
import math
import statistics
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from ..errors import NasError
from ..model.network import build_model
from ..model.profile import profile
from ..search.results import baseline_trial, pareto_front, study_seed_std
from ..search.space import parse_space
from ..training.noise import front_gain, neighbour_marks, shown_accuracies

# --------------------------------------------------------------------------- tables


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial with its state, objectives, cost and rung results."""
    rows = []
    superseded = {t.user_attrs["supersedes"] for t in study.get_trials(deepcopy=False) if "supersedes" in t.user_attrs}
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        rungs = a.get("rungs") or []
        rows.append({
            "trial": t.number,
            "state": "INFEASIBLE" if "not_trained" in a else t.state.name,
            # a promoted study: "evaluation" (one seed's training) or "promoted" (their mean); a search: empty
            "kind": a.get("kind", ""),
            # a promoted summary replaced by a later one (more seeds): kept, not drawn
            "superseded": t.number in superseded,
            "val_accuracy": t.values[0] if t.state == TrialState.COMPLETE and "not_trained" not in a
            else (rungs[-1][1] if rungs else math.nan),
            "epochs": rungs[-1][0] if rungs else 0.0,
            "macs": a.get("macs"),
            "latency_ms": a.get("latency_ms"),
            "params": a.get("params"),
            "elementwise": a.get("elementwise"),
            "structure_hash": a.get("structure_hash"),
            "rungs": " ".join(f"{e:g}:{acc:.4f}" for e, acc in rungs),
            "duplicate_of": a.get("duplicate_of"),
            "retry_of": a.get("retry_of"),
            "worker": (f"{a['worker'].get('host')}:{a['worker'].get('pid')}"
                       if isinstance(a.get("worker"), dict) else None),
            "train_seconds": a.get("train_seconds"),
            "images_per_second": a.get("images_per_second"),
            "seed": a.get("seed"),
            "seed_accuracies": " ".join(f"{x:.4f}" for x in a.get("seed_accuracies") or []),
            "accuracy_std": a.get("accuracy_std"),
            "attention": " ".join(f"{k[:-5]}={v}" for k, v in t.params.items() if k.endswith(".type")),
            "note": a.get("not_trained") or a.get("fail_reason")
            or ("lost: no heartbeat (worker died); parameters queued again"
                if t.state == TrialState.FAIL and _has_retry(study, t.number) else ""),
        })
    return pd.DataFrame(rows)


def _has_retry(study: optuna.Study, number: int) -> bool:
    """A trial Optuna's own heartbeat check failed has no reason of ours, but
    its retry names it."""
    return any(t.user_attrs.get("retry_reason", "").startswith(f"trial {number}:")
               for t in study.get_trials(deepcopy=False))


def front_frame(study: optuna.Study, seed_std) -> pd.DataFrame:
    """The front (:func:`nas.search.results.pareto_front`) with each point's
    accuracy as the mean of the seeds drawn after the search selected it
    (``selection_free`` False: it has none, and the value is its selecting
    seed's, biased upwards), its seed spread, its noise mark against the
    cheaper neighbour (:func:`nas.training.noise.neighbour_marks`) and its accuracy,
    P(gain > 0) and MACs against the study's attention-free baseline
    (``delta_*``, ``p_gain``, on the same seeds; empty when the study has no
    trained baseline)."""

    front = pareto_front(study)
    marks = neighbour_marks(front, seed_std)
    base = baseline_trial(study)

    def delta(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
        # what attention bought and cost against the attention-free backbone
        if base is None:
            return {"delta_accuracy": None, "p_gain": None, "delta_macs": None}
        g = front_gain(t, base, seed_std)
        return {"delta_accuracy": g.delta, "p_gain": None if t.number == base.number else g.probability,
                "delta_macs": int(t.user_attrs["macs"]) - int(base.user_attrs["macs"])}

    rows = []
    for t, mark in zip(front, marks):
        shown, free = shown_accuracies(t)
        rows.append({
            "trial": t.number, "val_accuracy": statistics.fmean(shown), "selection_free": free,
            "accuracy_std": t.user_attrs.get("accuracy_std"),
            "seeds": len(t.user_attrs.get("seed_accuracies") or [0]), "noise": mark,
            "macs": int(t.user_attrs["macs"]), "latency_ms": t.user_attrs.get("latency_ms"), "cost": t.values[1],
            "params": t.user_attrs["params"],
            "elementwise": t.user_attrs.get("elementwise"), "structure_hash": t.user_attrs["structure_hash"],
            "attention": " ".join(f"{k[:-5]}={v}" for k, v in t.params.items() if k.endswith(".type")),
            **delta(t), "baseline": bool(t.user_attrs.get("baseline")) or (base is not None and t.number == base.number),
        })
    return pd.DataFrame(rows, columns=["trial", "val_accuracy", "selection_free", "accuracy_std", "seeds", "noise",
                                       "macs", "latency_ms", "cost", "params", "elementwise", "structure_hash",
                                       "attention", "delta_accuracy", "p_gain", "delta_macs", "baseline"])


def cost_objective(study: optuna.Study) -> str:
    """What the study's front trades accuracy against: ``macs`` or ``latency``."""
    names = study.metric_names
    return names[1] if names and len(names) > 1 else "macs"


#: per cost objective: the unit the hypervolume and the plot show it in
COST_UNITS = {"macs": (1e6, "MACs (millions)", "M MACs"), "latency": (1.0, "ms per training step", " ms/step")}


# --------------------------------------------------------------------------- hypervolume


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float], scale: float = 1e6) -> float:
    """Area dominated by ``points`` (accuracy: higher is better, cost: lower
    is better) and bounded by ``reference`` = (accuracy, cost) — the worst
    corner. Points no better than the reference in both add nothing. The
    cost is divided by ``scale``: MACs in millions, so the figure reads as
    accuracy x MMACs; latency in ms (scale 1)."""
    ref_acc, ref_macs = reference
    useful = sorted({(a, m) for a, m in points if a > ref_acc and m < ref_macs}, key=lambda p: (p[1], -p[0]))
    area, best_acc = 0.0, ref_acc
    # sweep from the cheapest point: each adds the strip of accuracy it gains
    # over everything cheaper, times the MACs left up to the reference
    for acc, macs in useful:
        if acc > best_acc:
            area += (acc - best_acc) * (ref_macs - macs) / scale
            best_acc = acc
    return area


def reference_point(study: optuna.Study) -> tuple[float, float]:
    """(accuracy 0, cost ceiling). MACs: the space's max_macs when it has
    one, else twice the attention-free backbone's MACs. Latency (a figure
    of the machine the search ran on, which the report's machine cannot
    measure again): 1.1 x the slowest trial's ms per step."""
    text = study.user_attrs.get("space_yaml")
    if text is None:
        raise NasError(f"study {study.study_name!r} was not made by search.py (no space recorded)")
    if cost_objective(study) == "latency":
        timed = [t.user_attrs["latency_ms"] for t in study.get_trials(deepcopy=False) if "latency_ms" in t.user_attrs]
        return 0.0, 1.1 * max(timed, default=1.0)
    return 0.0, _macs_ceiling(text, study.user_attrs.get("space_name", "space"))


@functools.lru_cache(maxsize=32)
def _macs_ceiling(text: str, name: str) -> float:
    """The MACs reference of a space file (cached: parsing a space builds
    every choice once, ~1 s, and the search refreshes the note after every
    trial)."""
    ceiling = (yaml.safe_load(text).get("constraints") or {}).get("max_macs")
    if ceiling is not None:
        return float(ceiling)
    base = parse_space(text, name=name, check=False).base_config()  # checked when the study was made
    return 2.0 * profile(build_model(base), base.input_size)["macs"]


# --------------------------------------------------------------------------- report


def write_report(study: optuna.Study, out_dir: str | Path) -> dict[str, Any]:
    """Trials and front as CSV, the plot as PNG; returns paths and figures."""
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if not finished:
        raise NasError(f"study {study.study_name!r} has no finished trial yet ({len(study.trials)} trials, none "
                       f"completed or pruned); nothing to report")
    # everything that can fail on the study's contents runs before a file is written
    trials = trials_frame(study)
    seed_std = study_seed_std(study)
    front = front_frame(study, seed_std)
    base = baseline_trial(study)
    ref = reference_point(study)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    objective = cost_objective(study)
    hv = hypervolume([(r.val_accuracy, r.cost) for r in front.itertuples()], ref, COST_UNITS[objective][0])
    trials.to_csv(out / "trials.csv", index=False)
    front.to_csv(out / "pareto.csv", index=False)
    plot = out / "pareto.png"
    _plot(trials, front, ref, hv, study.study_name, plot, objective)
    return {"trials": trials, "front": front, "hypervolume": hv, "reference": ref, "seed_std": seed_std,
            "cost_objective": objective,
            "baseline": None if base is None else {"trial": base.number, "val_accuracy": base.values[0],
                                                   "accuracy_std": base.user_attrs.get("accuracy_std"),
                                                   "macs": int(base.user_attrs["macs"])},
            "trials_csv": out / "trials.csv", "pareto_csv": out / "pareto.csv", "plot": plot}


def _plot(trials: pd.DataFrame, front: pd.DataFrame, ref, hv: float, name: str, path: Path,
          objective: str = "macs") -> None:
    import matplotlib  # lazy: matplotlib costs ~1 s at import; only plotting commands pay it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib costs ~1 s at import; only plotting commands pay it

    scale, label, unit = COST_UNITS[objective]
    column = {"macs": "macs", "latency": "latency_ms"}[objective]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    done = trials[(trials.state == "COMPLETE") & trials.duplicate_of.isna() & (trials.kind != "evaluation")
                  & ~trials.superseded]
    pruned = trials[trials.state == "PRUNED"]
    ax.scatter(pruned[column] / scale, pruned.val_accuracy, marker="x", color="0.6",
               label="pruned (accuracy at its last rung)")
    ax.scatter(done[column] / scale, done.val_accuracy, color="tab:blue", label="completed")
    if len(front):
        f = front.sort_values("cost")
        ax.step(f.cost / scale, f.val_accuracy, where="post", color="tab:red", zorder=1)
        ax.scatter(f.cost / scale, f.val_accuracy, color="tab:red", s=60, zorder=3, label="Pareto front (seed mean)")
        spread = f[f.accuracy_std.notna()]
        if len(spread):
            ax.errorbar(spread.cost / scale, spread.val_accuracy, yerr=spread.accuracy_std.astype(float), fmt="none",
                        ecolor="tab:red", capsize=3, zorder=2, label="± seed std")
        for row in f.itertuples():
            ax.annotate(str(row.trial), (row.cost / scale, row.val_accuracy), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    ax.set_xlabel(label)
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"study {name}: hypervolume {hv:.3f} (reference: accuracy {ref[0]:g}, {ref[1] / scale:g}{unit})",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
