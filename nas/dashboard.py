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

import json
import os
import shlex
import statistics
import tempfile
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from .errors import NasError
from .noise import RESOLVED, SeedNoise, marks_legend, shown_accuracies, what_it_would_take
from .storage import DEFAULT_STORAGE, is_journal, is_sqlite, mask_url

#: environment variable naming the artifact folder (as --artifact-dir)
ARTIFACT_DIR_ENV = "NAS_ARTIFACTS"
#: for storages that are not a local file (PostgreSQL, the gRPC proxy)
DEFAULT_ARTIFACT_DIR = "studies/artifacts"
#: Optuna's system-attr prefix of artifact metadata (optuna.artifacts._upload)
_ARTIFACT_PREFIX = "artifacts:"
#: the first line of every note we write: tells our notes from a user's
NOTE_HEADER = "_Written by search.py: the next search or report replaces this note (edits made here too)._"


def artifact_dir(storage: str | None, override: str | None = None) -> Path:
    """The artifact folder of ``storage``: ``override`` (``--artifact-dir``),
    else $NAS_ARTIFACTS, else beside a local storage file
    (``studies/nas.db`` -> ``studies/nas-artifacts``), else
    :data:`DEFAULT_ARTIFACT_DIR`."""
    if override:
        return Path(override)
    if os.environ.get(ARTIFACT_DIR_ENV):
        return Path(os.environ[ARTIFACT_DIR_ENV])
    url = storage or DEFAULT_STORAGE
    path = None
    if is_journal(url):
        path = Path(url)
    elif is_sqlite(url) and url[len("sqlite:///"):] not in ("", ":memory:"):
        path = Path(url[len("sqlite:///"):])
    if path is None:
        return Path(DEFAULT_ARTIFACT_DIR)
    return path.with_name(path.stem + "-artifacts")


def check_artifact_dir(folder: Path) -> None:
    """A one-line error if ``folder`` could not hold artifacts, without
    creating it (a run refused for another reason leaves nothing behind):
    it, or the nearest folder above it that exists, must be a writable
    folder."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        what = "is not a folder" if not existing.is_dir() else "is not writable"
        raise NasError(f"--artifact-dir: cannot write artifacts to {folder}: {existing} {what} (choose another "
                       f"with --artifact-dir DIR or $NAS_ARTIFACTS)")


def artifact_store(folder: Path) -> optuna.artifacts.FileSystemArtifactStore:
    """The store in ``folder``, created and checked writable (a one-line
    error otherwise, before anything is trained)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise NasError(f"--artifact-dir: cannot write artifacts to {folder}: {exc.strerror or exc} (choose another "
                       f"with --artifact-dir DIR or $NAS_ARTIFACTS)") from None
    return optuna.artifacts.FileSystemArtifactStore(str(folder))


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
    from .report import COST_UNITS, cost_objective, front_frame, hypervolume, pick_trial, reference_point
    from .search import baseline_trial, study_seed_std

    attrs = study.user_attrs
    states = [t.state for t in study.get_trials(deepcopy=False)]
    counts = ", ".join(f"{states.count(s)} {s.name.lower()}" for s in TrialState if states.count(s))
    lines = [NOTE_HEADER, "", f"## Study `{study.study_name}`", ""]
    name = attrs.get("space_name", "?")
    description = ""
    if attrs.get("space_yaml"):
        import yaml

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
    from optuna_dashboard import get_note, save_note

    body = study_note(study, storage)
    for _ in range(3):
        if get_note(study) == body:
            break
        save_note(study, body)
    return body


# --------------------------------------------------------------------------- artifacts


def _artifacts(system_attrs: dict[str, Any]) -> dict[str, str]:
    """filename -> artifact id of the artifacts in these system attrs
    (entries the dashboard deleted are JSON null)."""
    found = {}
    for key, value in system_attrs.items():
        if key.startswith(_ARTIFACT_PREFIX):
            meta = json.loads(value)
            if meta:
                found[meta["filename"]] = meta["artifact_id"]
    return found


def _put(store, study: optuna.Study, path: Path) -> str:
    """Attach ``path`` to the study by its file name; an artifact of that
    name already there is rewritten in place."""
    existing = study_artifacts(study)
    if path.name in existing:
        with open(path, "rb") as f:
            store.write(existing[path.name], f)
        return existing[path.name]
    return optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study)


def publish(study: optuna.Study, report: dict[str, Any], storage: str | None, folder: Path) -> dict[str, Any]:
    """After :func:`nas.report.write_report`: refresh the note and attach the
    plot and ``trials.csv`` to the study (each completed trial got its config
    from ``search`` while it ran). Returns the note, ``{owner: [file names]}``
    and the folder."""
    store = artifact_store(folder)
    attached: dict[str, list[str]] = {"study": []}
    for path in (Path(report["plot"]), Path(report["trials_csv"])):
        _put(store, study, path)
        attached["study"].append(path.name)
    return {"note": refresh_note(study, storage), "artifacts": attached, "folder": folder}


def trial_artifacts(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, str]:
    """filename -> artifact id of a trial's artifacts."""
    return _artifacts(study._storage.get_trial_system_attrs(trial._trial_id))


def study_artifacts(study: optuna.Study) -> dict[str, str]:
    return _artifacts(study._storage.get_study_system_attrs(study._study_id))
