"""The search: an Optuna study whose trials are architectures sampled from a
:class:`~nas.search.space.SearchSpace`, trained by the proxy trainer and judged on
(validation accuracy, MACs).

One trial, in order (docs/design.md sections 2, 6, 7):

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
   (:mod:`nas.search.halving`) decides whether it goes on; a stopped trial ends
   PRUNED with its rung accuracies recorded.
"""
from __future__ import annotations

import contextlib
import signal
import statistics
import tempfile
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from ..errors import ConfigError, NasError
from ..kernels.plan import planned
from ..model.profile import measure_step_latency, profile
from ..storage.artifacts import artifact_store
from ..storage.backends import open_storage
from ..storage.liveness import WORKER_ATTR, TrialBeat, worker_identity
from ..training.evaluate import (
    TrainingData,
    build_seeded,
    check_same_data,
    load_training_data,
    train_architecture,
)
from ..training.noise import near_front, selecting_accuracy, trial_noise
from ..training.train import DivergedError
from . import halving
from .results import BASELINE_ATTR, SPACE_ATTR, exported_config
from .space import OBJECTIVE_ATTRS, SearchSpace


class TrialFailed(Exception):
    """A trial could not be evaluated; the reason is in its user attrs."""


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


def load_search_data(space: SearchSpace, data_dir: str | None) -> TrainingData:
    return load_training_data(space.fidelity, data_dir)


@dataclass
class Objective:
    """Evaluates one trial; see the module docstring for the steps."""

    space: SearchSpace
    data: TrainingData
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
    #: train with this machine's own kernel choices in a study planned on another kind (nas.kernels.plan)
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
            if STOP.signum is not None:  # the signal came between Optuna's stop check and this trial
                raise STOP.interrupt()
            STOP.in_trial = True
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
                STOP.in_trial = False
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
        (:func:`nas.training.noise.front_gain`). The baseline takes its further seeds
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
        search device (:func:`nas.model.profile.measure_step_latency`), measured
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
        (:mod:`nas.search.halving`): (accuracy at the rung, every cost objective) of
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



STOP = _StopRequest()
