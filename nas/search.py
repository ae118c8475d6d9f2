"""The search: an Optuna study whose trials are architectures sampled from a
:class:`~nas.space.SearchSpace`, trained by the proxy trainer and judged on
(validation accuracy, MACs).

One trial, in order (design.md sections 2, 6, 7):

1. sample the architecture, build it, count its cost (MACs, params,
   element-wise work) and write all of that, the structural hash and the
   config YAML as user attrs *before* training, so even a failed or pruned
   trial shows what it was;
2. over the MACs/params ceiling: not trained, completed as infeasible
   (accuracy 0 and a positive ``constraints`` attr, which the samplers'
   ``constraints_func`` reads and the report excludes);
3. an architecture already evaluated at the same fidelity (same structural
   hash and budget): its result is reused, nothing is trained;
4. otherwise train; after each rung the Pareto-aware halving rule
   (:mod:`nas.halving`) decides whether it goes on; a stopped trial ends
   PRUNED with its rung accuracies recorded.
"""
from __future__ import annotations

import contextlib
import math
import signal
import statistics
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import TrialState

from . import halving
from .device import configure_threads, resolve_runtime
from .errors import ConfigError, NasError
from .evaluate import EVALUATION, TrainingData, build_seeded, check_same_data, load_training_data, train_architecture
from .progress import progress_for_terminal
from .numerics import check_plan, planned
from .noise import (SeedNoise, front_gain, marks_legend, near_front, neighbour_marks, selecting_accuracy,
                    shown_accuracies, trial_noise)
from .profile import measure_step_latency, profile
from .provenance import versions
from .space import OBJECTIVE_ATTRS, SearchSpace
from .storage import (HEARTBEAT_INTERVAL, WORKER_ATTR, TrialBeat, is_journal, mask_url,
                      open_storage, reap_dead_trials, storage_for_search, worker_identity)
from .train import DivergedError

#: study user attr holding the space file the study was created with
SPACE_ATTR = "space_yaml"


class TrialFailed(Exception):
    """A trial could not be evaluated; the reason is in its user attrs."""


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled like Ctrl-C (the running trial fails, the rest stays)."""


class _StopRequest:
    """Ctrl-C / SIGTERM in this process. The signal handler only raises
    while a trial is being evaluated (the trial then fails with the reason);
    anywhere else, e.g. inside Optuna's bookkeeping between trials, it just
    stops the study after the current step, so no half-written state is
    left. Repeated signals are ignored."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.in_trial = False
        self.study: optuna.Study | None = None

    def interrupt(self) -> KeyboardInterrupt:
        return Terminated() if self.signum == signal.SIGTERM else KeyboardInterrupt()

    def handler(self, signum, frame) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        if self.study is not None:
            with contextlib.suppress(RuntimeError):  # outside optimize() there is nothing to stop
                self.study.stop()
        if self.in_trial:
            self.in_trial = False
            raise self.interrupt()


_STOP = _StopRequest()


#: Optuna 5 takes constraints from ``trial.set_constraint``; older versions
#: from the samplers' ``constraints_func`` (deprecated in 5)
_SET_CONSTRAINT = hasattr(optuna.trial.Trial, "set_constraint")


def _make_sampler(space: SearchSpace, seed: int, constraints: bool) -> optuna.samplers.BaseSampler:
    constraints_func = _constraints_of if constraints and not _SET_CONSTRAINT else None
    if space.sampler == "nsga2":
        # a small population: a CPU search finishes a few dozen trials, and
        # with Optuna's default of 50 every one of them would be random
        return optuna.samplers.NSGAIISampler(population_size=space.population_size, seed=seed,
                                             constraints_func=constraints_func)
    if space.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          constraints_func=constraints_func, n_startup_trials=space.population_size)
    return optuna.samplers.RandomSampler(seed=seed)


def _constraints_of(trial: optuna.trial.FrozenTrial) -> list[float]:
    return list(trial.user_attrs.get("constraints", [0.0]))


def create_or_resume(space: SearchSpace, study_name: str, storage: str | None, seed: int,
                     heartbeat: int | None = None, data_fingerprint: str | None = None) -> optuna.Study:
    """The study ``study_name``, created for ``space`` or resumed. A study
    made from another space file, or (``data_fingerprint``) on other data, is
    refused before anything is written to it. ``seed`` is the sampler's (each
    worker of a parallel run gets its own)."""
    store = open_storage(storage, heartbeat=heartbeat)
    existing = {s.study_name: s for s in optuna.study.get_all_study_summaries(store)}
    n_done = 0
    if study_name in existing:
        old = optuna.load_study(study_name=study_name, storage=store)
        if old.user_attrs.get(SPACE_ATTR) not in (None, space.source):
            raise NasError(f"study {study_name!r} was created from a different space file; "
                           f"use --study NEW_NAME for this one")
        check_same_data(study_name, old.user_attrs, data_fingerprint)
        n_done = len(old.trials)
    # the sampler's seed moves on with the study, so a resumed run does not
    # propose the first run's architectures again
    sampler = _make_sampler(space, seed + n_done, bool(space.constraints))
    directions = ["maximize", "minimize"] + (["minimize"] if len(space.objectives) > 2 else [])
    study = optuna.create_study(study_name=study_name, storage=store, sampler=sampler, directions=directions,
                                load_if_exists=True)
    if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in directions]:
        raise NasError(f"study {study_name!r} has {len(study.directions)} objectives, this space "
                       f"{len(directions)}; use --study NEW_NAME")
    if study.metric_names and list(study.metric_names) != list(space.objectives):
        raise NasError(f"study {study_name!r} has objectives {list(study.metric_names)}, this space "
                       f"{list(space.objectives)}; use --study NEW_NAME")
    if not study.metric_names:
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and what the dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(space.objectives))
    return study


# --------------------------------------------------------------------------- the objective


#: kept for callers of the earlier name
_Data = TrainingData


def load_search_data(space: SearchSpace, data_dir: str | None) -> TrainingData:
    return load_training_data(space.fidelity, data_dir)


@dataclass
class Objective:
    """Evaluates one trial; see the module docstring for the steps."""

    space: SearchSpace
    data: _Data
    runtime: Any
    #: False: every trial trains its full budget (the baseline of benchmarks/search_efficiency.py)
    halving: bool = True
    #: ``trial_number -> progress hook`` for a live status line (a terminal), or None
    progress: Callable[[int], Any] | None = None
    #: seconds between a trial's own beats (storages without Optuna's heartbeat; None: none)
    beat_seconds: float | None = None
    #: optuna-dashboard artifact folder: each completed trial gets its exported config there (None: none)
    artifacts: Any = None
    #: the storage as the exported configs' provenance names it
    storage_url: str | None = None
    #: train with this machine's own kernel choices in a study planned on another kind (nas.numerics)
    mix_numerics: bool = False
    fidelity_key: str = field(init=False)
    _bar: Any = field(init=False, default=None)
    _store: Any = field(init=False, default=None)  # the artifact store, made at the first upload
    _latencies: dict[str, float] = field(init=False, default_factory=dict)  # structure hash -> ms per step

    def __post_init__(self) -> None:
        self.fidelity_key = self.space.fidelity.key()

    def __call__(self, trial: optuna.Trial):
        try:
            # lets a later run tell if this process died
            trial.set_user_attr(WORKER_ATTR, worker_identity(self.beat_seconds))
            if _STOP.signum is not None:  # the signal came between Optuna's stop check and this trial
                raise _STOP.interrupt()
            _STOP.in_trial = True
            self._bar = self.progress(trial.number) if self.progress is not None else None
            beat = (TrialBeat(trial.study._storage, trial._trial_id, self.beat_seconds) if self.beat_seconds
                    else contextlib.nullcontext())
            try:
                # the study's numerics plan: its kernel choices pinned, new ones stored, the trial's recorded
                with beat, planned(trial.study, trial, mix=self.mix_numerics):
                    values = self._evaluate(trial)
                if self.artifacts is not None and "not_trained" not in trial.user_attrs:
                    try:
                        self._attach_config(trial, values[0])
                    except Exception as exc:  # the trial's result stands; only the dashboard's copy is missing
                        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                        trial.set_user_attr("artifact_error", reason)
                        warnings.warn(f"trial {trial.number}: its config was not attached as an artifact: {reason}",
                                      RuntimeWarning, stacklevel=1)
                return values
            finally:
                _STOP.in_trial = False
                if self._bar is not None:  # cleared before the trial's own line is printed
                    self._bar.close()
                    self._bar = None
        except KeyboardInterrupt as exc:
            how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"
            trial.set_user_attr("fail_reason", f"{how} during the trial")
            raise
        except (optuna.TrialPruned, TrialFailed):
            raise
        except Exception as exc:
            # one trial's problem, not the study's (divergence, out of memory on
            # CPU or GPU, a module that raises): record why and go on. The
            # traceback is kept too, for the bug report.
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
            trial.set_user_attr("fail_reason", reason)
            trial.set_user_attr("traceback", traceback.format_exc()[-2000:])
            raise TrialFailed(reason) from exc

    def _attach_config(self, trial: optuna.Trial, accuracy: float) -> None:
        """The trial's exported config (``trial-N.yaml``: architecture, metrics,
        provenance) as its artifact in optuna-dashboard; attached now,
        because Optuna refuses artifacts on a finished trial."""
        import tempfile

        from .dashboard import artifact_store
        from .report import exported_config

        if self._store is None:
            self._store = artifact_store(self.artifacts)
        cfg = exported_config(trial.study, trial.number, trial.user_attrs, accuracy, self.storage_url)
        with tempfile.TemporaryDirectory(prefix="nas-artifact-") as tmp:
            path = f"{tmp}/trial-{trial.number}.yaml"
            cfg.save(path)
            optuna.artifacts.upload_artifact(artifact_store=self._store, file_path=path, study_or_trial=trial)

    def _evaluate(self, trial: optuna.Trial):
        space, f = self.space, self.space.fidelity
        cfg = space.sample(trial, num_classes=self.data.num_classes)
        cfg.input_size = self.data.image_size
        try:  # initial weights from the trial's seed, as `search.py train` builds them
            model = build_seeded(cfg, f.seed, self.runtime)
        except ConfigError as exc:
            trial.set_user_attr("fail_reason", f"ConfigError: {exc}")
            raise TrialFailed(str(exc)) from None
        cost = profile(model, self.data.image_size, device=self.runtime.device)
        structure = cfg.structure_hash()
        if "latency" in space.objectives:
            cost["latency_ms"] = self._step_latency(trial, structure, model)
        attrs = {
            "macs": cost["macs"], "params": cost["params"], "elementwise": cost["elementwise"],
            "structure_hash": structure, "config": cfg.to_yaml(), "fidelity_key": self.fidelity_key,
            "fidelity": f.as_dict(), "seed": f.seed, "precision": self.runtime.precision,
            "device": self.runtime.device.type, "validation": self.data.validation,
            "val_split": self.data.val_split,
        }
        if "latency_ms" in cost:
            attrs["latency_ms"] = cost["latency_ms"]
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        # the cost objectives after accuracy: MACs or latency, and an optional third
        costs = [float(cost[OBJECTIVE_ATTRS[o]]) for o in space.objectives[1:]]

        def values(accuracy: float) -> list[float]:
            return [accuracy, *costs]

        # 2. constraints: known before training
        violations = [cost["macs"] - space.constraints["max_macs"] if "max_macs" in space.constraints else 0.0,
                      cost["params"] - space.constraints["max_params"] if "max_params" in space.constraints else 0.0]
        trial.set_user_attr("constraints", [float(v) for v in violations])
        if _SET_CONSTRAINT and space.constraints:
            trial.set_constraint("max_macs", float(violations[0]))
            trial.set_constraint("max_params", float(violations[1]))
        if any(v > 0 for v in violations):
            over = [f"MACs {cost['macs'] / 1e6:.2f}M > max_macs {space.constraints['max_macs'] / 1e6:.2f}M"
                    if violations[0] > 0 else "",
                    f"params {cost['params']:,} > max_params {space.constraints['max_params']:,.0f}"
                    if violations[1] > 0 else ""]
            trial.set_user_attr("not_trained", "infeasible: " + "; ".join(o for o in over if o))
            return values(0.0)

        # 3. the same architecture at the same budget was evaluated already
        previous = self._previous(trial, structure)
        if previous is not None:
            trial.set_user_attr("duplicate_of", previous.number)
            for key in ("rungs", "val_accuracy", "train_seconds", "images_per_second", "pruned_at_epochs",
                        "seed_accuracies", "accuracy_std", "seeds"):
                if key in previous.user_attrs:
                    trial.set_user_attr(key, previous.user_attrs[key])
            if previous.state == TrialState.PRUNED:
                raise optuna.TrialPruned(f"same architecture as trial {previous.number}, which was pruned")
            return values(previous.values[0])

        # 4. train, halving at each rung
        rungs: list[list[float]] = []

        def at_rung(index: int, epochs: float, accuracy: float) -> bool:
            rungs.append([epochs, accuracy])
            trial.set_user_attr("rungs", rungs)
            if index == len(f.rungs) - 1 or not self.halving or trial.user_attrs.get("baseline"):
                return False  # the baseline is every report's reference: it always trains its budget
            # judged on accuracy and every cost objective, once enough peers reached the rung
            others = self._rung_points(trial, index)
            return not halving.continues((accuracy, *costs), others, f.eta)

        # profiling ran in eval mode without gradients: the weights are still the initial ones
        result = train_architecture(cfg, self.data, f, f.seed, self.runtime, callback=at_rung, model=model,
                                    progress=self._bar)
        trial.set_user_attr("images_trained", result.images_seen)
        trial.set_user_attr("train_seconds", round(result.train_seconds, 3))
        trial.set_user_attr("images_per_second", round(result.images_per_second, 1))
        trial.set_user_attr("val_accuracy", result.val_accuracy)
        if result.stopped_early:
            trial.set_user_attr("pruned_at_epochs", result.epochs_done)
            raise optuna.TrialPruned(f"not in the best 1/{f.eta} at {result.epochs_done:g} epochs "
                                     f"(accuracy {result.val_accuracy:.4f})")
        trial.set_user_attr("seed_accuracies", [result.val_accuracy])
        if f.repeats > 1:
            return values(self._repeat_if_near_front(trial, cfg, costs, result))
        return values(result.val_accuracy)

    def _repeat_if_near_front(self, trial: optuna.Trial, cfg, costs: list[float], first) -> float:
        """Train a front candidate with the fidelity's further seeds (docs/design.md
        6a) and return the mean accuracy; any other trial keeps its one seed.

        A candidate is a trial whose first seed no finished trial's first seed
        dominates by more than the noise (every cost objective counted): twice
        the pooled seed std of the trials repeated so far at this fidelity (0
        until two have been, so at first only trials on the front are
        repeated). The first seed is the selection evidence; the further seeds
        are drawn after the selection, so the reports judge gains on them
        (:func:`nas.noise.front_gain`). The baseline takes its further seeds
        the same way, unconditionally. A seed whose training diverges counts
        at chance accuracy, what such a model predicts (in the mean, out of
        the pooled variance, listed in ``seed_failures``; its position in
        ``diverged_seeds``)."""
        f = self.space.fidelity
        others = [t for t in self._others(trial) if t.state == TrialState.COMPLETE and "not_trained" not in t.user_attrs
                  and "duplicate_of" not in t.user_attrs]
        noise = 2.0 * trial_noise(others).std
        trial.set_user_attr("front_noise", noise)
        points = [(selecting_accuracy(t), *t.values[1:]) for t in others if t.values]
        if not trial.user_attrs.get("baseline") and not near_front((first.val_accuracy, *costs), points, noise):
            return first.val_accuracy
        accuracies = [first.val_accuracy]
        images, seconds, failures, diverged = first.images_seen, first.train_seconds, [], []
        kept = [f.seeds()[0]]  # the seed of each entry of seed_accuracies
        for seed in f.seeds()[1:]:
            try:
                if self._bar is not None:
                    self._bar.start(seed)
                again = train_architecture(cfg, self.data, f, seed, self.runtime, progress=self._bar)
            except DivergedError as exc:
                # an architecture that diverges with some seeds is unstable:
                # the mean says so (a diverged model predicts at chance)
                diverged.append(len(accuracies))
                accuracies.append(1.0 / self.data.num_classes)
                kept.append(seed)
                images += exc.images_seen
                seconds += exc.train_seconds
                failures.append(f"seed {seed}: DivergedError: {exc} (counted at chance accuracy)")
            except Exception as exc:  # e.g. out of memory: that seed is lost, the others stand
                failures.append(f"seed {seed}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
                                f"(left out of the mean)")
            else:
                accuracies.append(again.val_accuracy)
                kept.append(seed)
                images += again.images_seen
                seconds += again.train_seconds
            # every seed's images and time count where compute is counted
            trial.set_user_attr("seed_accuracies", accuracies)
            trial.set_user_attr("images_trained", images)
            trial.set_user_attr("train_seconds", round(seconds, 3))
            if failures:
                trial.set_user_attr("seed_failures", failures)
            trial.set_user_attr("diverged_seeds", diverged)
        trial.set_user_attr("seeds", kept)
        if len(accuracies) > 1:
            trial.set_user_attr("accuracy_std", statistics.stdev(accuracies))
        return statistics.fmean(accuracies)

    def _step_latency(self, trial: optuna.Trial, structure: str, model) -> float:
        """Milliseconds per training step at the fidelity's batch size on the
        search device (:func:`nas.profile.measure_step_latency`), measured
        once per architecture: an earlier trial's figure for the same
        structure, in this process or in the study, is reused."""
        if structure not in self._latencies:
            for t in self._others(trial):
                if t.user_attrs.get("structure_hash") == structure and "latency_ms" in t.user_attrs:
                    self._latencies[structure] = float(t.user_attrs["latency_ms"])
                    break
            else:
                self._latencies[structure] = measure_step_latency(
                    model, (3, self.data.image_size, self.data.image_size), self.space.fidelity.batch_size,
                    self.runtime)
        return self._latencies[structure]

    def _others(self, trial: optuna.Trial) -> list[optuna.trial.FrozenTrial]:
        return [t for t in trial.study.get_trials(deepcopy=False)
                if t.number != trial.number and t.user_attrs.get("fidelity_key") == self.fidelity_key]

    def _previous(self, trial: optuna.Trial, structure: str) -> optuna.trial.FrozenTrial | None:
        for t in self._others(trial):
            if (t.user_attrs.get("structure_hash") == structure and "not_trained" not in t.user_attrs
                    and t.state in (TrialState.COMPLETE, TrialState.PRUNED)):
                return t
        return None

    def _rung_points(self, trial: optuna.Trial, index: int) -> list[tuple[float, ...]]:
        """The peers a trial is judged against at rung ``index``
        (:mod:`nas.halving`): (accuracy at the rung, every cost objective) of
        the other trials that reached it, without copies of another trial's
        result and without the attention-free baseline (the reference, not a
        competitor: it trains its full budget)."""
        attrs = [OBJECTIVE_ATTRS[o] for o in self.space.objectives[1:]]
        points = []
        for t in self._others(trial):
            rungs = t.user_attrs.get("rungs") or []
            if (len(rungs) > index and "duplicate_of" not in t.user_attrs and not t.user_attrs.get("baseline")
                    and all(a in t.user_attrs for a in attrs)):
                points.append((float(rungs[index][1]), *(float(t.user_attrs[a]) for a in attrs)))
        return points


# --------------------------------------------------------------------------- running


@dataclass
class SearchRun:
    space: SearchSpace
    study_name: str
    storage: str | None = None
    trials: int | None = 100
    timeout: float | None = 1800.0
    seed: int = 0
    data: str | None = None
    device: str | None = None
    precision: str = "auto"
    command: str = ""
    #: processes sharing this machine (each gets cores / workers threads)
    workers: int = 1
    #: this process's index among them: offsets the sampler's seed so the
    #: workers do not propose the same architectures
    worker_index: int = 0
    #: seconds between heartbeats on RDB storages (None: off)
    heartbeat: int | None = HEARTBEAT_INTERVAL
    #: optuna-dashboard artifact folder (None: beside the storage, see nas.dashboard.artifact_dir)
    artifact_dir: str | None = None
    #: resume or join a study whose numerics plan was measured on another kind of machine (nas.numerics)
    mix_numerics: bool = False


def open_search(run: SearchRun, data: _Data) -> tuple[optuna.Study, str]:
    """Resolve the storage, create or resume the study and record its
    provenance. Returns the study and the storage URL actually used."""
    from .dashboard import artifact_dir, check_artifact_dir  # the report side (it imports this module)

    url = storage_for_search(run.storage, run.study_name, run.workers)
    # a bad --artifact-dir is one line before the study is touched, not a failure after each training
    check_artifact_dir(artifact_dir(url, run.artifact_dir))
    heartbeat = None if is_journal(url) else run.heartbeat
    study = create_or_resume(run.space, run.study_name, url, run.seed + 1000 * run.worker_index, heartbeat,
                             data.fingerprint)
    check_plan(run.study_name, study.user_attrs, run.mix_numerics)
    if not study.user_attrs:
        study.set_user_attr(SPACE_ATTR, run.space.source)
        study.set_user_attr("space_name", run.space.name)
        study.set_user_attr("versions", versions())
        study.set_user_attr("data_fingerprint", data.fingerprint)
        study.set_user_attr("fidelity", run.space.fidelity.as_dict())
        study.set_user_attr("created", time.strftime("%Y-%m-%d %H:%M:%S"))
    else:  # again: another worker may have created it meanwhile
        check_same_data(run.study_name, study.user_attrs, data.fingerprint)
    if run.worker_index == 0:
        enqueue_baseline(study, run.space)
    if run.command and run.worker_index == 0:
        commands = list(study.user_attrs.get("commands", []))
        study.set_user_attr("commands", commands + [mask_url(run.command)])
    return study, url


#: study user attr: the parameters of the attention-free architecture enqueued
#: as the study's first trial (its trial carries user attr ``baseline``)
BASELINE_ATTR = "baseline_params"


def enqueue_baseline(study: optuna.Study, space: SearchSpace) -> None:
    """Make the space's attention-free architecture the first trial of a new
    study, so every report can say what attention bought. Once per study
    (again only if its training was interrupted and nothing queued it
    since); a study made before this, or one whose space has no ``none`` in
    some stage, gets nothing. The trial is marked (user attr ``baseline``) and trains its full
    budget, never stopped by halving."""
    if BASELINE_ATTR in study.user_attrs:
        params = study.user_attrs[BASELINE_ATTR]
        alive = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
        if params is not None and not any(t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False,
                                                                                                 states=alive)):
            # its training was interrupted (Ctrl-C) and nothing queued it again
            study.enqueue_trial(params, user_attrs={"baseline": True})
        return
    if study.trials:  # a study made before baselines were enqueued
        return
    params = space.baseline_params()
    if params is None:
        study.set_user_attr(BASELINE_ATTR, None)  # asked once: this space has no attention-free architecture
        return
    study.set_user_attr(BASELINE_ATTR, params)
    study.enqueue_trial(params, user_attrs={"baseline": True})


def baseline_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's trained attention-free trial: the enqueued baseline, else
    (studies made before it was enqueued) any complete trial of the same
    architecture."""
    superseded = {t.user_attrs["supersedes"] for t in study.get_trials(deepcopy=False) if "supersedes" in t.user_attrs}
    trained = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
               if "not_trained" not in t.user_attrs and t.values and t.user_attrs.get("kind") != EVALUATION
               and t.number not in superseded]
    marked = [t for t in trained if t.user_attrs.get("baseline")]
    if marked:
        return marked[0]
    return next((t for t in trained if _attention_free(t)), None)


def _attention_free(trial: optuna.trial.FrozenTrial) -> bool:
    """The trial's stored architecture has no attention anywhere (read from
    its config, which carries the data's classes and image size)."""
    from .config import ArchConfig

    text = trial.user_attrs.get("config")
    if not text:
        return False
    cfg = ArchConfig.from_yaml(text)
    return all(s.transition is None or s.transition.type == "none" for s in cfg.stages) and all(
        b.attention.type == "none" for _, _, b in cfg.blocks())


def trials_so_far(study: optuna.Study) -> str:
    """``N trials so far`` for a run's first line, queued trials not counted
    (the baseline says it comes first)."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    queued = "; the attention-free baseline is queued first" if any(t.user_attrs.get("baseline") for t in waiting) else ""
    return f"{len(study.trials) - len(waiting)} trials so far{queued}"


def run_search(run: SearchRun, out: Callable[[str], None] = print) -> optuna.Study:
    """Create or resume the study and run trials until ``trials`` more have
    finished or ``timeout`` seconds have passed."""
    # our own one-line-per-trial output says what happened (failures with
    # their reason, in the trial's user attrs too); Optuna's warnings would
    # add a traceback per failed trial
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from .dashboard import artifact_dir, refresh_note  # the report side (it imports this module)

    runtime = resolve_runtime(run.device, run.precision)
    threads = configure_threads(run.workers)
    # everything that can be wrong with the input is checked before the
    # storage is touched, so a bad call writes nothing
    data = load_search_data(run.space, run.data)
    study, url = open_search(run, data)
    reap_dead_trials(study, out)  # trials left RUNNING by a worker that died

    f = run.space.fidelity
    out(f"study {run.study_name!r} in {mask_url(url)}: {trials_so_far(study)}; "
        f"space {run.space.name} ({run.space.sampler}), {len(data.train_labels)} train / {len(data.val_labels)} "
        f"val images, rungs {', '.join(f'{r:g}' for r in f.rungs)} epochs, eta {f.eta}; "
        f"{runtime.device} {runtime.precision}, {threads} threads")
    batch = min(f.batch_size, len(data.train_labels))
    # Optuna's heartbeat where the storage has it (RDB); else the trial's own beat
    beat = None if is_heartbeat_enabled(study._storage) else run.heartbeat
    objective = Objective(run.space, data, runtime, progress=progress_for_terminal(f.rungs, batch), beat_seconds=beat,
                          artifacts=artifact_dir(url, run.artifact_dir), storage_url=url, mix_numerics=run.mix_numerics)
    started = time.perf_counter()
    target = run.trials
    finished = [0]

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        finished[0] += 1
        elapsed = time.perf_counter() - started
        eta = _eta(elapsed, finished[0], target, run.timeout)
        out(f"trial {trial.number:>4} {_summary(trial)}  [{finished[0]}{'/' + str(target) if target else ''}, "
            f"{_minutes(elapsed)} elapsed{', ETA ' + _minutes(eta) if eta is not None else ''}]")
        reap_dead_trials(study, out)  # another worker may have died meanwhile
        if trial.state == TrialState.COMPLETE:
            # the dashboard shows study user attrs: the front as it stands, with its noise
            study.set_user_attr("front", front_summary(pareto_front(study), study_seed_std(study)))
            refresh_note(study, url)  # and the study's note

    with _signals_stop(study):
        study.optimize(objective, n_trials=run.trials, timeout=run.timeout, callbacks=[report],
                       catch=(TrialFailed,), gc_after_trial=False)
        if _STOP.signum is not None:  # stopped between trials: tell the caller how it ended
            raise _STOP.interrupt()
    return study


@contextlib.contextmanager
def _signals_stop(study: optuna.Study):
    """Ctrl-C and SIGTERM end the run cleanly (see :class:`_StopRequest`):
    the running trial fails with the reason, finished trials stay, the
    caller prints how to resume."""
    _STOP.__init__()
    _STOP.study = study
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _STOP.handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _STOP.study = None


def _eta(elapsed: float, done: int, target: int | None, timeout: float | None) -> float | None:
    left = []
    if target:
        left.append(elapsed / done * (target - done))
    if timeout:
        left.append(max(0.0, timeout - elapsed))
    return min(left) if left else None


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _summary(trial: optuna.trial.FrozenTrial) -> str:
    a = trial.user_attrs
    macs = f"MACs {a['macs'] / 1e6:6.2f}M" if "macs" in a else ""
    macs += f"  {a['latency_ms']:.1f} ms/step" if "latency_ms" in a else ""
    if trial.state == TrialState.COMPLETE and "not_trained" in a:
        return f"INFEASIBLE {macs}  {a['not_trained']}"
    if trial.state == TrialState.COMPLETE:
        dup = f"  (same as trial {a['duplicate_of']})" if "duplicate_of" in a else ""
        dup += f"  (retry of trial {a['retry_of']})" if "retry_of" in a else ""
        seeds = a.get("seed_accuracies") or []
        spread = f" ± {a['accuracy_std']:.4f} ({len(seeds)} seeds)" if len(seeds) > 1 else ""
        return f"COMPLETE   acc {trial.values[0]:.4f}{spread}  {macs}{dup}"
    if trial.state == TrialState.PRUNED:
        rungs = a.get("rungs") or [[0, math.nan]]
        return f"PRUNED     acc {rungs[-1][1]:.4f} at {rungs[-1][0]:g} ep  {macs}"
    return f"FAIL       {macs}  {a.get('fail_reason', 'interrupted')}"


def pareto_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Feasible, trained, completed trials not dominated in (accuracy, every
    cost objective), one per architecture, sorted by the first cost (MACs or
    latency). A search trial stands on the accuracy it was selected on, its
    first seed (:func:`nas.noise.selecting_accuracy`), so that its further
    seeds, drawn after the selection, can judge it without the selection's
    bias; a promoted summary on its seed mean."""
    done = [t for t in _results(study) if "not_trained" not in t.user_attrs]
    points = [(selecting_accuracy(t), *t.values[1:]) for t in done]
    ranks = halving.nondominated_ranks(points)
    front = [t for t, r in zip(done, ranks) if r == 0]
    return sorted(front, key=lambda t: (t.values[1], -selecting_accuracy(t)))


def study_seed_std(study: optuna.Study) -> SeedNoise:
    """The pooled seed noise of the study's repeated trials
    (:func:`nas.noise.trial_noise`): the noise the front is judged with."""
    return trial_noise(_results(study))


def _results(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The completed trials that each stand for one architecture's result:
    not a copy of an earlier trial (``duplicate_of``), not one seed's
    training inside a promoted study (kind ``evaluation``: its summary trial
    stands for it), not a summary superseded by a later one."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "duplicate_of" not in t.user_attrs and t.user_attrs.get("kind") != EVALUATION]
    superseded = {t.user_attrs["supersedes"] for t in done if "supersedes" in t.user_attrs}
    return [t for t in done if t.number not in superseded]


def format_front(front: list[optuna.trial.FrozenTrial], seed_std: SeedNoise | float = 0.0,
                 baseline: optuna.trial.FrozenTrial | None = None) -> str:
    """The front as a table: per point the mean validation accuracy of the
    seeds drawn after the search selected it (``*`` after the value: it has
    none, and the value is the selecting seed's, biased upwards), its seed
    std, the noise mark of :func:`nas.noise.neighbour_marks` (explained under
    the table) and, given the study's attention-free ``baseline``, accuracy,
    P(gain > 0) and MACs against it, judged on those seeds too."""
    marks = neighbour_marks(front, seed_std)
    timed = any("latency_ms" in t.user_attrs for t in front)
    lines = [f"{'trial':>5}  {'val acc':>8}  {'± std':>6}  {'seeds':>5}  {'noise':>5}  {'MACs':>8}  "
             + (f"{'ms/step':>8}  " if timed else "") + f"{'params':>9}  "
             + (f"{'Δ acc':>7}  {'P(Δ>0)':>6}  {'Δ MACs':>8}  " if baseline is not None else "") + "attention"]
    biased = False
    for t, mark in zip(front, marks):
        seeds = len(t.user_attrs.get("seed_accuracies") or [0])
        std = t.user_attrs.get("accuracy_std")
        shown, free = shown_accuracies(t)
        biased |= not free
        latency = f"{t.user_attrs.get('latency_ms', math.nan):8.1f}  " if timed else ""
        delta = ""
        if baseline is not None:
            g = front_gain(t, baseline, seed_std)
            p = "" if g.probability is None or t.number == baseline.number else f"{g.probability:.2f}"
            delta = (f"{g.delta:+7.4f}  {p:>6}  "
                     f"{(t.user_attrs['macs'] - baseline.user_attrs['macs']) / 1e6:+7.2f}M  ")
        value = f"{statistics.fmean(shown):7.4f}{' ' if free else '*'}"
        lines.append(f"{t.number:>5}  {value:>8}  {'' if std is None else f'{std:.4f}':>6}  {seeds:>5}  "
                     f"{mark:>5}  {t.user_attrs['macs'] / 1e6:7.2f}M  {latency}{t.user_attrs['params']:>9,}  "
                     f"{delta}{_attention_summary(t)}")
    lines.append("val acc: the mean of the seeds drawn after the search selected the point (its first seed chose it)"
                 + ("; *: no such seed, the selecting seed's accuracy (biased upwards on a front)" if biased else ""))
    if baseline is not None:
        base_shown = statistics.fmean(shown_accuracies(baseline)[0])
        lines.append(f"Δ, P(Δ>0): against the attention-free baseline, trial {baseline.number} "
                     f"(accuracy {base_shown:.4f}, {baseline.user_attrs['macs'] / 1e6:.2f}M MACs), on the seeds "
                     f"after selection, t-based")
    if any(marks):
        lines.append(marks_legend(seed_std))
    return "\n".join(lines)


def front_summary(front: list[optuna.trial.FrozenTrial], seed_std: SeedNoise | float) -> list[dict]:
    """The front as plain data (a study user attr): per point the mean
    accuracy of its seeds after selection (``selection_free`` False: only the
    selecting seed), seed std, seeds and noise mark."""
    out = []
    for t, mark in zip(front, neighbour_marks(front, seed_std)):
        shown, free = shown_accuracies(t)
        out.append({"trial": t.number, "accuracy": round(statistics.fmean(shown), 6), "selection_free": free,
                    "accuracy_std": t.user_attrs.get("accuracy_std"),
                    "seeds": len(t.user_attrs.get("seed_accuracies") or [0]), "noise": mark,
                    "macs": int(t.user_attrs["macs"]),
                    **({"latency_ms": t.user_attrs["latency_ms"]} if "latency_ms" in t.user_attrs else {})})
    return out


def _attention_summary(trial: optuna.trial.FrozenTrial) -> str:
    types = {k: v for k, v in trial.params.items() if k.endswith(".type")}
    return " ".join(f"{k[:-5]}={v}" for k, v in types.items()) or "(fixed)"

