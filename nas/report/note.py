"""What a study shows in optuna-dashboard, with the dashboard's own features.

* **The study note** (``optuna_dashboard.save_note``, Markdown): the space
  (name, description, its YAML), the fidelity, the Pareto front with each
  point's seed spread and its gain over the attention-free baseline, the
  hypervolume and its reference point, the baseline, and the exact commands
  that export and retrain the knee. ``search`` refreshes it after every
  completed trial and ``report`` when it runs; a refresh replaces the note
  (one note per study, whatever the number of refreshes).
* **Artifacts** (Optuna's artifact API, a :class:`FileSystemArtifactStore`
  in a folder beside the storage, :func:`artifact_dir`): ``search`` gives
  every completed trial its exported config ``trial-N.yaml`` (architecture,
  metrics, provenance: ``search.py train FILE`` retrains it) while the
  trial runs, since Optuna refuses artifacts on a finished trial, so every
  front trial has one; ``report`` puts the Pareto plot and ``trials.csv``
  on the study, and running it again rewrites them in place (refreshed,
  not duplicated). A worker on another machine writes its trials' configs
  into its own machine's folder: share the folder (NFS) or run
  ``report``/``dashboard`` where it is.

``search.py dashboard`` serves the storage with that artifact folder; the
plain ``optuna-dashboard STORAGE --artifact-dir DIR`` does the same.
"""
from __future__ import annotations

import shlex
import statistics
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from ..search.results import baseline_trial, study_seed_std
from ..storage.artifacts import artifact_store, put_artifact
from ..storage.backends import DEFAULT_STORAGE, mask_url
from ..training.noise import (
    RESOLVED,
    SeedNoise,
    marks_legend,
    shown_accuracies,
    what_it_would_take,
)
from .export import pick_trial
from .report import (
    COST_UNITS,
    cost_objective,
    front_frame,
    hypervolume,
    reference_point,
)

#: the first line of every note we write: tells our notes from a user's
NOTE_HEADER = "_Written by search.py: the next search or report replaces this note (edits made here too)._"


# --------------------------------------------------------------------------- the note


def _fmt(value, spec: str) -> str:
    return "" if value is None or value != value else format(value, spec)


def _macs_delta(value) -> str:
    """+1.23M, or +1.2K for what a light module adds (SE: ~1K MACs on resnet20)."""
    if value is None or value != value:
        return ""
    return f"{value / 1e6:+.2f}M" if abs(value) >= 1e5 or value == 0 else f"{value / 1e3:+.1f}K"


def _front_table(front: pd.DataFrame, has_baseline: bool) -> list[str]:
    latency = front.latency_ms.notna().any()
    head = ["trial", "val accuracy", "± seed std", "seeds", "noise", "MACs", *(["ms/step"] if latency else []),
            "params", *(["Δ accuracy", "P(Δ>0)", "Δ MACs"] if has_baseline else []), "attention"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in front.itertuples():
        cells = [str(r.trial) + (" (baseline)" if r.baseline else ""),
                 f"{r.val_accuracy:.4f}" + ("" if r.selection_free else "*"),
                 _fmt(r.accuracy_std, ".4f"), str(r.seeds), r.noise or "", f"{r.macs / 1e6:.2f}M",
                 *([_fmt(r.latency_ms, ".1f")] if latency else []), f"{r.params:,}",
                 *([_fmt(r.delta_accuracy, "+.4f"), _fmt(r.p_gain, ".2f"), _macs_delta(r.delta_macs)]
                   if has_baseline else []),
                 f"`{r.attention}`" if r.attention else "(fixed)"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _within_noise(front: pd.DataFrame, seed_std) -> list[str]:
    """What it would take: where the front's best gain over the baseline is
    within noise, the seeds per arm that would resolve it."""
    gains = front[front.p_gain.notna() & ~front.baseline]
    if gains.empty or (gains.p_gain >= RESOLVED).any() or not isinstance(seed_std, SeedNoise):
        return []
    best = gains.loc[gains.delta_accuracy.idxmax()]
    return ["", f"**Within noise**: no front design's gain over the baseline is resolved (best: trial "
                f"{int(best.trial)}, {best.delta_accuracy:+.4f}, P = {best.p_gain:.2f}); "
                + what_it_would_take(float(best.delta_accuracy), seed_std, arms=len(front))]


def _export_commands(study_name: str, storage: str | None, trial: int) -> str:
    """The commands that export and retrain ``trial``; ``--storage`` only
    where the commands' default would not find the study."""
    where, first = "", ""
    if storage and storage != DEFAULT_STORAGE:
        if mask_url(storage) != storage:  # a password: the command must not carry it, nor a *** in its place
            first = f"# with NAS_STORAGE set to {mask_url(storage)} (its password filled in)\n"
        else:
            where = f" --storage {shlex.quote(storage)}"
    out = f"{study_name}-trial{trial}.yaml"
    return (f"{first}python search.py export --study {shlex.quote(study_name)}{where} --trial {trial} "
            f"-o {shlex.quote(out)}\npython search.py train {shlex.quote(out)}")


def study_note(study: optuna.Study, storage: str | None = None) -> str:
    """The study's note (Markdown), from the storage alone (no files)."""

    attrs = study.user_attrs
    states = [t.state for t in study.get_trials(deepcopy=False)]
    counts = ", ".join(f"{states.count(s)} {s.name.lower()}" for s in TrialState if states.count(s))
    lines = [NOTE_HEADER, "", f"## Study `{study.study_name}`", ""]
    name = attrs.get("space_name", "?")
    description = ""
    if attrs.get("space_yaml"):

        description = (yaml.safe_load(attrs["space_yaml"]) or {}).get("description", "")
    lines.append(f"**Space** `{name}`" + (f": {description}" if description else ""))
    promoted = attrs.get("kind") == "promoted"
    if promoted:
        lines += ["", f"**Promoted** from study `{attrs.get('promoted_from')}`: each architecture retrained at the "
                      f"budget below with several seeds. One trial per training (user attr kind `evaluation`, its "
                      f"checkpoint attached) and one per architecture with their mean (kind `promoted`), on which "
                      f"the front is drawn; `proxy_trial` names the search trial each came from."]
    f = attrs.get("fidelity") or {}
    if f:
        rungs = ", ".join(f"{r:g}" for r in f.get("rungs", []))
        lines += ["", f"**Fidelity** (every trial's budget): {f.get('dataset')}, {f.get('subset') or 'all'} training / "
                      f"{f.get('val_size')} validation images, rungs {rungs} epochs (eta {f.get('eta')}), batch "
                      f"{f.get('batch_size')}, lr {f.get('lr')}, seed {f.get('seed')}, repeats {f.get('repeats', 1)}"
                      + (f"; data fingerprint `{attrs['data_fingerprint'][:12]}`" if attrs.get("data_fingerprint")
                         else "")]
    lines += ["", f"**Trials**: {len(states)} ({counts or 'none yet'})", ""]

    seed_std = study_seed_std(study)
    front = front_frame(study, seed_std)
    base = baseline_trial(study)
    objective = cost_objective(study)
    scale, _, unit = COST_UNITS[objective]
    lines.append(f"### Pareto front: validation accuracy against {objective}")
    if len(front):
        ref = reference_point(study)
        hv = hypervolume([(r.val_accuracy, r.cost) for r in front.itertuples()], ref, scale)
        lines += [""] + _front_table(front, base is not None) + [
            "", "val accuracy: the mean of the seeds drawn after the search selected the point; Δ and P(Δ>0) "
                "(t-based) on the same seeds" + ("; *: no such seed, the selecting seed's accuracy (biased upwards)"
                                                 if not front.selection_free.all() else ""),
            "", f"**Hypervolume** {hv:.4f} (reference point: accuracy {ref[0]:g}, {ref[1] / scale:g}{unit})"]
        if front.noise.astype(bool).any():
            lines += ["", marks_legend(seed_std)]
        lines += _within_noise(front, seed_std)
    else:
        lines += ["", "(no completed, trained trial yet)"]
    if base is not None:
        std = "" if base.user_attrs.get("accuracy_std") is None else f" ± {base.user_attrs['accuracy_std']:.4f}"
        shown = statistics.fmean(shown_accuracies(base)[0])
        lines += ["", f"**Baseline** (no attention): trial {base.number}, accuracy {shown:.4f}{std}, "
                      f"{int(base.user_attrs['macs']) / 1e6:.2f}M MACs; the Δ columns are against it"]
    else:
        lines += ["", "**Baseline** (no attention): not trained in this study, so no Δ columns"]
    if len(front):
        knee = pick_trial(study, "knee")
        lines += ["", f"### The knee: trial {knee.number}", "Export it (config, metrics, provenance) and retrain it "
                  "at full budget:", "", "```sh", _export_commands(study.study_name, storage, knee.number), "```"]
    per_trial = ("each training's checkpoint (`model-HASH-seedS.pt`, on its trial)" if promoted else
                 "each completed trial's config (`trial-N.yaml`, on the trial)")
    lines += ["", f"Artifacts: {per_trial}; the Pareto plot and "
                  f"`trials.csv` (on the study) once `python search.py report --study {shlex.quote(study.study_name)}` "
                  "has run."]
    if attrs.get("space_yaml"):
        lines += ["", f"### Space file `{name}`", "",
                  "As written; the fidelity above is what ran (the command line may override the file's).",
                  "", "```yaml", attrs["space_yaml"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def refresh_note(study: optuna.Study, storage: str | None = None) -> str:
    """Write the study's note (replacing the previous one); returns it.
    Unchanged notes are not written again. ``save_note`` writes a note in
    pieces, so two workers refreshing at once could interleave them: the
    note is read back and written again until it reads whole."""
    from optuna_dashboard import (  # lazy: optuna-dashboard pulls in its web server; only note writing needs it
        get_note,
        save_note,
    )

    body = study_note(study, storage)
    for _ in range(3):
        if get_note(study) == body:
            break
        save_note(study, body)
    return body


def publish(study: optuna.Study, report: dict[str, Any], storage: str | None, folder: Path) -> dict[str, Any]:
    """After :func:`nas.report.report.write_report`: refresh the note and attach the
    plot and ``trials.csv`` to the study (each completed trial got its config
    from ``search`` while it ran). Returns the note, ``{owner: [file names]}``
    and the folder."""
    store = artifact_store(folder)
    attached: dict[str, list[str]] = {"study": []}
    for path in (Path(report["plot"]), Path(report["trials_csv"])):
        put_artifact(store, study, path)
        attached["study"].append(path.name)
    return {"note": refresh_note(study, storage), "artifacts": attached, "folder": folder}
