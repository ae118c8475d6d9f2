"""``python search.py ablate CONFIG.yaml``: what does the attention in each
stage buy? (docs/design.md section 6a)

The config is trained beside its variants, each with one stage's attention
removed (every block of the stage and its transition set to ``none``), and
the attention-free baseline, all at the same budget
(:func:`nas.training.evaluate.full_budget`) and seeds. Every training is a stored
evaluation (:mod:`nas.training.evaluate`) in the study ``ablate:NAME``, so a killed
ablation resumes; a variant equal to another (the stage was the only one
with attention: its variant is the baseline) is trained once.

Per variant the table gives the accuracy the removed attention buys (the
full config's seed mean minus the variant's) with the standard error of
that difference and the probability that it is real (the decision
function :func:`nas.training.noise.gain`: t-based, the seed std pooled over the
variants), and what it
costs: MACs, parameters and milliseconds per training step (measured once
per variant on this machine, as the ``latency`` objective measures it).
"""
from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from ..device import configure_threads, resolve_runtime
from ..errors import NasError
from ..model.config import ArchConfig, AttentionSpec, load_config
from ..model.network import build_model
from ..model.profile import measure_step_latency, profile
from ..storage.artifacts import artifact_dir
from ..storage.backends import mask_url, storage_for_search
from ..training.datasets import load_dataset
from ..training.evaluate import (
    SEED_OFFSETS,
    Job,
    check_config_fits,
    find_evaluation,
    full_budget,
    load_training_data,
    mean_std,
    open_evaluations,
    run_jobs,
    sibling_evaluations,
)
from ..training.noise import RESOLVED, SeedNoise, gain, pooled_noise, what_it_would_take
from .promote import is_diverged

ABLATE = "ablate"
#: rounds of step timing per variant (each the median of 5 steps), in turns
STEP_ROUNDS = 3


@dataclass
class AblationRun:
    config: str
    storage: str | None = None
    study_name: str | None = None
    seeds: int = 2
    epochs: float | None = None
    subset: int | None = None
    val_size: int | None = None
    data: str | None = None
    dataset: str | None = None
    device: str | None = None
    precision: str = "auto"
    command: str = ""
    #: makes each training's progress hook (the CLI's status bar or periodic lines); None: silent
    progress: Callable[[], Callable[[int, int, float], None]] | None = None
    #: resume an ablation whose numerics plan was measured on another kind of machine (nas.kernels.plan)
    mix_numerics: bool = False


@dataclass
class Variant:
    name: str  # "full", "without s2", "baseline"
    removed: str  # what was taken out, e.g. "s2: sk x3"
    cfg: ArchConfig
    accuracies: list[float] = field(default_factory=list)
    #: the seed of each accuracy, and the positions of diverged ones (counted at chance accuracy)
    seeds: list[int] = field(default_factory=list)
    diverged: list[int] = field(default_factory=list)
    macs: int = 0
    params: int = 0
    step_ms: float = 0.0


@dataclass
class Ablation:
    config: str
    study: optuna.Study
    epochs: float
    train_images: int
    val_images: int
    seeds: list[int]
    variants: list[Variant]
    seed_std: SeedNoise
    failed: list[str]


def _stage_attention(cfg: ArchConfig, s: int) -> list[str]:
    """The attention types in stage ``s`` (blocks, then its transition)."""
    stage = cfg.stages[s]
    found = [b.attention.type for b in stage.blocks if b.attention.type != "none"]
    if stage.transition is not None and stage.transition.type != "none":
        found.append(f"{stage.transition.type} (transition)")
    return found


def _without(cfg: ArchConfig, stages: list[int]) -> ArchConfig:
    """A copy of ``cfg`` with no attention in ``stages`` (0-based)."""
    out = ArchConfig.from_yaml(cfg.to_yaml())
    out.meta = {}
    for s in stages:
        stage = out.stages[s]
        for block in stage.blocks:
            block.attention = AttentionSpec()
        stage.transition = None
    return out


def variants(cfg: ArchConfig) -> list[Variant]:
    """The config, one variant per stage with attention (that stage's
    removed), and the baseline (all removed)."""
    full = ArchConfig.from_yaml(cfg.to_yaml())
    full.meta = {}
    out = [Variant("full", "-", full)]
    with_attention = [s for s in range(len(cfg.stages)) if _stage_attention(cfg, s)]
    for s in with_attention:
        kinds = _stage_attention(cfg, s)
        counted = ", ".join(f"{k} x{kinds.count(k)}" if kinds.count(k) > 1 else k for k in dict.fromkeys(kinds))
        out.append(Variant(f"without s{s + 1}", f"s{s + 1}: {counted}", _without(cfg, [s])))
    out.append(Variant("baseline", "all attention", _without(cfg, list(range(len(cfg.stages))))))
    return out


def open_ablation(name: str, url: str, cfg: ArchConfig, budget, fingerprint: str,
                  mix_numerics: bool = False) -> optuna.Study:
    return open_evaluations(
        name, url, ABLATE, "an ablation", "--study", budget, fingerprint,
        same={"structure_hash": (cfg.structure_hash(), f"ablates another architecture ({{old}}, this config is "
                                                       f"{cfg.structure_hash()})")},
        attrs={"structure_hash": cfg.structure_hash(), "config": cfg.to_yaml()}, mix_numerics=mix_numerics)


def run_ablation(run: AblationRun, out: Callable[[str], None] = print) -> Ablation:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    path = Path(run.config)
    cfg = load_config(path)
    vs = variants(cfg)
    if len(vs) == 2:
        raise NasError(f"{path}: the config has no attention in any stage; nothing to ablate")
    dataset = run.dataset or cfg.meta.get("dataset", "cifar10")
    runtime = resolve_runtime(run.device, run.precision)
    threads = configure_threads()
    budget = full_budget(dataset, run.epochs, run.subset, run.val_size)
    images = load_dataset(dataset, run.data)
    check_config_fits(cfg, images, dataset, str(path))
    data = load_training_data(budget, images=images)
    name = run.study_name or f"{ABLATE}:{path.stem}"
    url = storage_for_search(run.storage, name, 1)
    study = open_ablation(name, url, vs[0].cfg, budget, images.fingerprint, run.mix_numerics)
    if run.command:
        study.set_user_attr("commands", list(study.user_attrs.get("commands", [])) + [mask_url(run.command)])
    # seeds of its own: never the promote's that selected the config (a copy of those trainings would
    # judge the design on its selection evidence); other ablations' trainings at these seeds are copied
    seeds = [SEED_OFFSETS["ablate"] + i for i in range(run.seeds)]

    # cost first (cheap), once per ablation: stored, so a resumed run shows the same step times; the
    # variants are timed in turns, several rounds, so a slow spell of the machine falls on all of them
    step_ms = dict(study.user_attrs.get("step_ms") or {})
    shape = (cfg.in_channels, cfg.input_size, cfg.input_size)
    models = {}
    for v in vs:
        h = v.cfg.structure_hash()
        cost = profile(build_model(v.cfg), cfg.input_size)
        v.macs, v.params = int(cost["macs"]), int(cost["params"])
        if h not in step_ms:
            models[h] = build_model(v.cfg)
    rounds: dict[str, list[float]] = {h: [] for h in models}
    for _ in range(STEP_ROUNDS if models else 0):
        for h, model in models.items():
            rounds[h].append(measure_step_latency(model, shape, budget.batch_size, runtime))
    step_ms.update({h: round(statistics.median(times), 3) for h, times in rounds.items()})
    for v in vs:
        v.step_ms = step_ms[v.cfg.structure_hash()]
    study.set_user_attr("step_ms", step_ms)

    out(f"ablate {path} in study {name!r} ({mask_url(url)}): {len(vs)} variants ({', '.join(v.name for v in vs)}) x "
        f"{len(seeds)} seeds x {len(data.train_labels)} images x {budget.epochs:g} epochs, {len(data.val_labels)} "
        f"validation images; {runtime.device} {runtime.precision}, {threads} threads")
    jobs = [Job(v.cfg, seed, v.name, v.name) for v in vs for seed in seeds]
    done, failures = run_jobs(study, jobs, budget, data, runtime, out,
                              state_dir=artifact_dir(url).parent / "train-states",
                              progress=run.progress, sources=sibling_evaluations(study))
    failed = [f"{j.label} seed {j.seed}: {reason}" for j, reason in failures]
    key = budget.budget_key()
    for v in vs:
        h = v.cfg.structure_hash()
        for s in seeds:
            if (h, key, s) in done:
                v.accuracies.append(done[(h, key, s)].values[0])
            elif _diverged(study, h, key, s):  # counted at chance accuracy, as the search counts it
                v.diverged.append(len(v.accuracies))
                v.accuracies.append(1.0 / cfg.num_classes)
            else:
                continue
            v.seeds.append(s)

    unique = {v.cfg.structure_hash(): v for v in vs if v.accuracies}  # a variant equal to another counts once
    seed_std = pooled_noise([{s: a for i, (s, a) in enumerate(zip(v.seeds, v.accuracies)) if i not in v.diverged}
                             for v in unique.values()])
    return Ablation(str(path), study, budget.epochs, len(data.train_labels), len(data.val_labels), seeds, vs,
                    seed_std, failed)


def _diverged(study: optuna.Study, structure_hash: str, budget_key: str, seed: int) -> bool:
    t = find_evaluation(study, structure_hash, budget_key, seed, include_failed=True)
    return t is not None and is_diverged(t)


def format_ablation(a: Ablation) -> str:
    full = a.variants[0]
    judged = []
    lines = [f"ablation of {a.config}: study {a.study.study_name!r} ({a.train_images} training images x {a.epochs:g} "
             f"epochs, {a.val_images} validation images, seeds {', '.join(map(str, a.seeds))})",
             f"{'variant':<12}  {'removed':<22}  {'val acc':>7}  {'± std':>6}  {'buys acc':>8}  {'± Δ':>6}  "
             f"{'P(Δ>0)':>6}  {'costs MACs':>10}  {'params':>8}  {'ms/step':>8}  {'costs ms':>8}"]
    for v in a.variants:
        if not v.accuracies:
            lines.append(f"{v.name:<12}  {v.removed:<22}  (no finished training)")
            continue
        mean, std = mean_std(v.accuracies)
        row = f"{v.name:<12}  {v.removed:<22}  {mean:7.4f}  {'' if std is None else f'{std:.4f}':>6}  "
        if v is full or not full.accuracies:
            row += f"{'':>8}  {'':>6}  {'':>6}  {'':>10}  {'':>8}  {v.step_ms:8.1f}  {'':>8}"
        else:
            g = gain(full.accuracies, v.accuracies, a.seed_std, higher_seeds=full.seeds, lower_seeds=v.seeds)
            d, se, prob = g.delta, g.se, g.probability
            judged.append((v, g))
            row += (f"{d:+8.4f}  {'' if se is None else f'{se:.4f}':>6}  {'' if prob is None else f'{prob:.2f}':>6}  "
                    f"{(full.macs - v.macs) / 1e6:+9.2f}M  {full.params - v.params:+8,}  {v.step_ms:8.1f}  "
                    f"{full.step_ms - v.step_ms:+8.1f}")
        lines.append(row)
    tests = sorted({g.test for _, g in judged if g.probability is not None})
    lines.append("buys / costs: the full config minus the variant, i.e. what the removed attention adds; "
                 + (f"± Δ: standard error of the accuracy difference ({', '.join(tests) or 'pooled t'}; pooled seed "
                    f"std {a.seed_std.std:.4f}, {a.seed_std.df} df); P(Δ>0): t-based probability that the gain is "
                    f"real (resolved at >= {RESOLVED:g}); seeds {', '.join(map(str, a.seeds))}"
                    if a.seed_std.known else "one seed per variant: noise unknown, no ± Δ"))
    # within noise: resolved neither as a gain nor as a loss
    unresolved = [(v, g) for v, g in judged if g.probability is not None and 1 - RESOLVED < g.probability < RESOLVED]
    if unresolved:
        v, g = max(unresolved, key=lambda vg: abs(vg[1].delta))
        lines.append(f"within noise: {', '.join(v.name for v, _ in unresolved)}; "
                     + what_it_would_take(g.delta, a.seed_std, arms=len({x.cfg.structure_hash() for x in a.variants})))
    diverged = [f"{v.name} seed {v.seeds[i]}" for v in a.variants for i in v.diverged]
    if diverged:
        lines.append("diverged (counted at chance accuracy in the mean, out of the pooled std): " + ", ".join(diverged))
    lines.append(f"ms/step: one training step (forward, loss, backward, SGD) at the budget's batch size on this "
                 f"machine, the median of {STEP_ROUNDS} rounds of 5 steps, the variants in turns")
    for line in a.failed:
        lines.append(f"failed: {line}")
    return "\n".join(lines)
