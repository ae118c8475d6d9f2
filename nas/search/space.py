"""Search spaces: a YAML file that says what the search may change, and the
sampler that turns an Optuna trial into an :class:`~nas.model.config.ArchConfig`.

A space file (``search_spaces/<name>.yaml``, or any path)::

    description: one line shown by `search.py spaces`
    backbone: resnet20              # preset; width_multiplier optional
    stages: [1, 2, 3]               # stages (1-based) attention may go into
    placement: stage                # stage: one choice per stage; block: per block
    types: [none, sk]               # candidates; "none" makes placement a choice
    params:                         # searched hyper-parameters, per type
      sk:
        M: [2, 3]                   # a list: one categorical choice per stage
        G: 8                        # a scalar: fixed, not searched
        kernels: {choices: [3, 5, 7], per_block: true}   # list parameter: per element
    stage_params:                   # optional per-stage replacements of params
      1: {sk: {G: [4, 8, 16]}}
    fidelity: {dataset: cifar10, subset: 10000, val_size: 5000, rungs: [1, 3], eta: 3}
    objectives: [accuracy, macs]    # or [accuracy, latency]; plus params, latency or macs as a third
    constraints: {max_macs: 60e6}
    sampler: nsga2                  # nsga2, tpe or random
    population_size: 8              # NSGA-II generation; TPE's random start-up trials

Only parameters of the chosen type are suggested (a conditional space), so
they never split the sampler's model. Parameter names in the study are
``s<stage>.type``, ``s<stage>.<type>.<param>`` and, per block,
``s<stage>.b<block>.<type>.<param>``; list parameters get one name per
element (``...kernels0``, ``...kernels1``).

Every choice is checked when the file is loaded: each value is built into
the backbone at every stage it may reach, so a value that cannot work (G not
dividing a stage's channels, DANet at 32x32) is a one-line error naming the
key, not a failed trial hours later.
"""
from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import attention as _attention
from ..errors import ConfigError
from ..model.config import POSITIONS, ArchConfig, AttentionSpec, safe_load_yaml
from ..model.network import build_model, stage_feature_sizes
from ..model.presets import preset_config, preset_names
from ..model.profile import profile
from ..training.budget import Fidelity
from ..training.datasets import DATASETS

SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
OBJECTIVES = ("accuracy", "macs", "params", "latency")
#: what the front trades accuracy against (the study's second objective)
COST_OBJECTIVES = ("macs", "latency")
#: the trial user attr that holds each cost objective's value
OBJECTIVE_ATTRS = {"macs": "macs", "params": "params", "latency": "latency_ms"}
SAMPLERS = ("nsga2", "tpe", "random")
PLACEMENTS = ("stage", "block")
_TOP_KEYS = ("description", "backbone", "width_multiplier", "stages", "placement", "types", "params",
             "stage_params", "fidelity", "objectives", "constraints", "sampler", "population_size", "seed")
_FIDELITY_KEYS = ("dataset", "subset", "val_size", "rungs", "eta", "batch_size", "lr", "warmup", "grad_clip", "seed",
                  "repeats", "validation")
#: the held-out splits a fidelity can validate on (see Fidelity.validation)
VALIDATION_SPLITS = ("search", "confirmation")
_CONSTRAINT_KEYS = ("max_macs", "max_params")


# --------------------------------------------------------------------------- the parsed space


@dataclass(frozen=True)
class ParamSpec:
    """How one hyper-parameter of one module is chosen."""

    choices: tuple  # one value: fixed
    per_block: bool = False
    is_list: bool = False  # a list parameter, chosen element by element
    key: str = ""  # where the space file sets it, for error messages

    @property
    def searched(self) -> bool:
        return len(self.choices) > 1


@dataclass
class SearchSpace:
    name: str
    description: str
    backbone: str
    width_multiplier: float
    stages: list[int]  # 1-based
    placement: str
    types: list[str]
    params: dict[int, dict[str, dict[str, ParamSpec]]]  # stage -> type -> param -> spec
    stage_types: dict[int, list[str]]  # the types each stage may hold (after fitting)
    fidelity: Fidelity
    objectives: list[str]
    constraints: dict[str, float]
    sampler: str
    source: str  # the YAML text the space was read from
    path: str | None = None
    seed: int = 0
    population_size: int = 8  # NSGA-II generation size; TPE's random start-up trials

    # ---- structure
    def base_config(self, num_classes: int | None = None) -> ArchConfig:
        return preset_config(self.backbone, num_classes=num_classes, width_multiplier=self.width_multiplier)

    # ---- sampling
    def baseline_params(self) -> dict[str, str] | None:
        """The trial parameters that make :meth:`sample` build the
        attention-free backbone (every searched stage or block ``none``), or
        None when a stage of the space does not offer ``none``."""
        params: dict[str, str] = {}
        for s in self.stages:
            choices = self.stage_types[s]
            if "none" not in choices:
                return None
            if self.placement == "stage":
                if len(choices) > 1:
                    params[f"s{s}.type"] = "none"
            else:
                block_choices = [c for c in choices if _attention.attention_kind(c) != "transition"]
                if len(block_choices) > 1:
                    n_blocks = len(self.base_config().stages[s - 1].blocks)
                    params.update({f"s{s}.b{b}.type": "none" for b in range(n_blocks)})
        return params

    def sample(self, trial, num_classes: int | None = None) -> ArchConfig:
        """The architecture of ``trial`` (an ``optuna.Trial``; anything with
        ``suggest_categorical`` works). Only the chosen type's parameters are
        suggested."""
        cfg = self.base_config(num_classes)
        for s in self.stages:
            stage = cfg.stages[s - 1]
            choices = self.stage_types[s]
            if self.placement == "stage":
                t = _suggest(trial, f"s{s}.type", choices)
                if t == "none":
                    continue
                if _attention.attention_kind(t) == "transition":
                    stage.transition = self._spec(trial, s, None, t)
                    continue
                for b, block in enumerate(stage.blocks):
                    block.attention = self._spec(trial, s, b, t)
            else:
                block_choices = [c for c in choices if _attention.attention_kind(c) != "transition"]
                for b, block in enumerate(stage.blocks):
                    t = _suggest(trial, f"s{s}.b{b}.type", block_choices)
                    if t != "none":
                        block.attention = self._spec(trial, s, b, t)
        cfg.backbone = f"{self.backbone}+{self.name}"
        return cfg

    def _spec(self, trial, s: int, b: int | None, t: str) -> AttentionSpec:
        specs = self.params[s].get(t, {})
        values: dict[str, Any] = {}
        for name in _order(t, specs):
            spec = specs[name]
            where = f"s{s}.b{b}.{t}.{name}" if spec.per_block and b is not None else f"s{s}.{t}.{name}"
            if spec.is_list:
                values[name] = [_suggest(trial, f"{where}{i}", spec.choices)
                                for i in range(_list_length(t, name, values))]
            else:
                values[name] = _suggest(trial, where, spec.choices)
        position = values.pop("position", "standard")
        return AttentionSpec(type=t, position=position, params=values)


def _order(t: str, specs: dict[str, ParamSpec]) -> list[str]:
    """The order ``t``'s parameters are chosen in: scalars first (a list's
    length may follow from one), then lists, each kind in the file's order
    but for the module's ``suggest_last`` (a list whose length another list
    sets), which come after the rest of their kind, in that order."""
    last = _attention.module_class(t).suggest_last
    return sorted(specs, key=lambda name: (specs[name].is_list, last.index(name) + 1 if name in last else 0))


def _is_list_param(t: str, name: str) -> bool:
    """A hyper-parameter whose value is a list (kernels per branch or part)."""

    default = _attention.attention_defaults(t).get(name)
    if isinstance(default, (list, tuple)):
        return True
    annotation = inspect.signature(_attention.module_class(t).__init__).parameters[name].annotation
    return str(annotation).startswith("list")


def _list_length(t: str, name: str, values: dict[str, Any]) -> int:
    """How many elements list parameter ``name`` of ``t`` gets, given the
    values chosen so far (the module's ``list_length``)."""
    return _attention.module_class(t).list_length(name, values, _attention.attention_defaults(t))


def _materialise(t: str, specs: dict[str, ParamSpec], override: tuple[str, Any] | None = None) -> dict[str, Any]:
    """Each parameter at its first choice (``override`` replaces one), list
    parameters as that element repeated to their length."""
    values: dict[str, Any] = {}
    for name in _order(t, specs):
        spec = specs[name]
        value = override[1] if override and override[0] == name else spec.choices[0]
        values[name] = [value] * _list_length(t, name, values) if spec.is_list else value
    return values


def _suggest(trial, name: str, choices):
    if len(choices) == 1:
        return choices[0]
    return trial.suggest_categorical(name, list(choices))


# --------------------------------------------------------------------------- loading


def space_names() -> list[str]:
    """Names of the shipped spaces."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name_or_path: str | Path, check: bool = True) -> SearchSpace:
    """A shipped space by name (``sk``) or a user's YAML file by path;
    ``check``: as :func:`parse_space`'s."""
    text_name = str(name_or_path)
    path = Path(text_name)
    if path.suffix in (".yaml", ".yml") or path.is_file() or "/" in text_name:
        if not path.is_file():
            raise ConfigError(f"space file not found: {path}")
        name = path.stem
    else:
        path = SPACES_DIR / f"{text_name}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown space {text_name!r}; available: {', '.join(space_names())} "
                              "(or a path to a YAML file)")
        name = text_name
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read space file {path}: {exc}") from None
    return parse_space(text, name=name, source=str(path), check=check)


def parse_space(text: str, name: str = "custom", source: str = "<string>", check: bool = True) -> SearchSpace:
    """``check``: build every choice once to refuse one that cannot be built
    (~1 s); off for a space a study recorded, which was checked then."""
    data = safe_load_yaml(text, source)
    try:
        space = _parse(data, name, text)
        if check:
            _check_buildable(space)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    space.path = source
    return space


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _int(value: Any, key: str, minimum: int = 1) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    _expect(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
            f"{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def _number(value: Any, key: str, zero_ok: bool = False) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 60e6 as a string
        try:
            value = float(value)
        except ValueError:
            pass
    _expect(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and (value >= 0 if zero_ok else value > 0),
            f"{key}: expected a {'non-negative' if zero_ok else 'positive'} number, got {value!r}")
    return float(value)


def _parse(data: Any, name: str, text: str) -> SearchSpace:
    _expect(isinstance(data, dict), f"expected a mapping at the top level, got {_type_name(data)}")
    for key in data:
        _expect(key in _TOP_KEYS, f"unknown key {key!r}; allowed: {', '.join(_TOP_KEYS)}")
    for key in ("backbone", "types"):
        _expect(key in data, f"missing key {key!r}")

    backbone = data["backbone"]
    _expect(backbone in preset_names(), f"backbone: {backbone!r} is not one of {', '.join(preset_names())}")
    width = _number(data.get("width_multiplier", 1.0), "width_multiplier")

    base = preset_config(backbone, width_multiplier=width)
    n_stages = len(base.stages)
    stages = data.get("stages", list(range(1, n_stages + 1)))
    _expect(isinstance(stages, list) and stages, "stages: expected a non-empty list of stage numbers")
    for s in stages:
        _expect(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= n_stages,
                f"stages: {s!r} is not a stage of {backbone}; allowed: {', '.join(map(str, range(1, n_stages + 1)))}")
    _expect(len(set(stages)) == len(stages), f"stages: {stages} lists a stage twice")
    stages = sorted(stages)

    placement = data.get("placement", "stage")
    _expect(placement in PLACEMENTS, f"placement: {placement!r} is not one of {', '.join(PLACEMENTS)}")

    types = data["types"]
    known = _attention.attention_names()
    _expect(isinstance(types, list) and types, "types: expected a non-empty list of attention types")
    for t in types:
        _expect(t in known, f"types: {t!r} is not an attention type; allowed: {', '.join(known)}")
    _expect(len(set(types)) == len(types), f"types: {types} lists a type twice")

    params_data = data.get("params") or {}
    _expect(isinstance(params_data, dict), f"params: expected a mapping of type -> parameters, "
                                           f"got {_type_name(params_data)}")
    for t in params_data:
        _expect(t in types, f"params: {t!r} is not among types ({', '.join(types)})")
    global_params = {t: _parse_params(t, params_data.get(t) or {}, f"params.{t}") for t in types}

    stage_params_data = data.get("stage_params") or {}
    _expect(isinstance(stage_params_data, dict), "stage_params: expected a mapping of stage -> type -> parameters")
    params: dict[int, dict[str, dict[str, ParamSpec]]] = {}
    for s in stages:
        params[s] = copy.deepcopy(global_params)
    for s, per_type in stage_params_data.items():
        _expect(s in stages, f"stage_params: {s!r} is not one of the searched stages {stages}")
        _expect(isinstance(per_type, dict), f"stage_params.{s}: expected a mapping of type -> parameters")
        for t, pdata in per_type.items():
            _expect(t in types, f"stage_params.{s}: {t!r} is not among types ({', '.join(types)})")
            params[s][t].update(_parse_params(t, pdata or {}, f"stage_params.{s}.{t}"))

    # which types each stage may hold: quadratic-cost modules only where H*W is
    # small enough, stage transitions (BAM) not after the last stage

    sizes = stage_feature_sizes(base)
    stage_types: dict[int, list[str]] = {}
    for s in stages:
        allowed = []
        for t in types:
            limit = getattr(_attention.module_class(t), "max_tokens", None)
            if limit is not None and sizes[s - 1] ** 2 > limit:
                continue
            if _attention.attention_kind(t) == "transition" and (s == n_stages or placement == "block"):
                continue
            allowed.append(t)
        stage_types[s] = allowed
    for t in types:
        if not any(t in stage_types[s] for s in stages):
            why = (f"needs H*W <= {_attention.module_class(t).max_tokens}"
                   if getattr(_attention.module_class(t), "max_tokens", None) else
                   "is a stage transition: it goes after a stage other than the last, with placement: stage")
            raise ConfigError(f"types: {t!r} fits none of the stages {stages} of {backbone} ({t} {why})")
    for s in stages:
        _expect(stage_types[s], f"stages: no listed type fits stage {s}")

    fidelity = parse_fidelity(data.get("fidelity") or {})
    objectives = data.get("objectives", ["accuracy", "macs"])
    _expect(isinstance(objectives, list) and 2 <= len(objectives) <= 3 and objectives[0] == "accuracy"
            and objectives[1] in COST_OBJECTIVES,
            f"objectives: expected [accuracy, macs|latency] plus optionally one of params, latency, macs, "
            f"got {objectives!r}")
    for o in objectives:
        _expect(o in OBJECTIVES, f"objectives: {o!r} is not one of {', '.join(OBJECTIVES)}")
    _expect(len(set(objectives)) == len(objectives), f"objectives: {objectives} lists one twice")

    constraints_data = data.get("constraints") or {}
    _expect(isinstance(constraints_data, dict), "constraints: expected a mapping")
    constraints = {}
    for key, value in constraints_data.items():
        _expect(key in _CONSTRAINT_KEYS, f"unknown key 'constraints.{key}'; allowed: {', '.join(_CONSTRAINT_KEYS)}")
        constraints[key] = _number(value, f"constraints.{key}")

    sampler = data.get("sampler", "nsga2")
    _expect(sampler in SAMPLERS, f"sampler: {sampler!r} is not one of {', '.join(SAMPLERS)}")
    description = data.get("description", "")
    _expect(isinstance(description, str), "description: expected a string")
    seed = _int(data.get("seed", 0), "seed", minimum=0)
    population_size = _int(data.get("population_size", 8), "population_size", minimum=2)
    return SearchSpace(population_size=population_size, name=name, description=" ".join(description.split()), backbone=backbone,
                       width_multiplier=width, stages=stages, placement=placement, types=list(types),
                       params=params, stage_types=stage_types, fidelity=fidelity, objectives=list(objectives),
                       constraints=constraints, sampler=sampler, source=text, seed=seed)


def _parse_params(t: str, data: Any, where: str) -> dict[str, ParamSpec]:
    _expect(isinstance(data, dict), f"{where}: expected a mapping of parameter -> choices, got {_type_name(data)}")
    defaults = _attention.attention_defaults(t)
    kind = _attention.attention_kind(t)
    allowed = list(defaults) + (["position"] if kind == "gate" and t != "none" else [])
    out = {}
    for name, value in data.items():
        key = f"{where}.{name}"
        _expect(name in allowed, f"unknown key {key!r} for attention {t!r}; allowed: {', '.join(allowed) or '(none)'}")
        per_block = False
        if isinstance(value, dict):
            for k in value:
                _expect(k in ("choices", "per_block"), f"unknown key '{key}.{k}'; allowed: choices, per_block")
            _expect("choices" in value, f"missing key '{key}.choices'")
            per_block = value.get("per_block", False)
            _expect(isinstance(per_block, bool), f"{key}.per_block: expected true or false, got {per_block!r}")
            value = value["choices"]
        choices = value if isinstance(value, list) else [value]
        _expect(len(choices) > 0, f"{key}: empty choices; give at least one value")
        is_list = name != "position" and _is_list_param(t, name)
        for c in choices:
            ok = c is None or isinstance(c, (bool, int, float, str))
            _expect(ok, f"{key}: choice {c!r} is a {_type_name(c)}; choices are single values "
                        f"(list parameters are chosen element by element)")
            if name == "position":
                _expect(c in POSITIONS, f"{key}: {c!r} is not one of {', '.join(POSITIONS)}")
            elif is_list:
                _expect(isinstance(c, int) and not isinstance(c, bool),
                        f"{key}: elements of {name} are integers, got {c!r}")
            else:
                _check_type(key, c, defaults[name])
        _expect(len(set(map(repr, choices))) == len(choices), f"{key}: {choices} lists a value twice")
        out[name] = ParamSpec(choices=tuple(choices), per_block=per_block, is_list=is_list, key=key)
    return out


def _check_type(key: str, value: Any, default: Any) -> None:
    if default is None:  # e.g. ECA's k_size: None means adaptive, else an int
        _expect(value is None or (isinstance(value, int) and not isinstance(value, bool)),
                f"{key}: expected null or an integer, got {value!r}")
    elif isinstance(default, bool):
        _expect(isinstance(value, bool), f"{key}: expected true or false, got {value!r}")
    elif isinstance(default, int):
        _expect(isinstance(value, int) and not isinstance(value, bool), f"{key}: expected an integer, got {value!r}")
    elif isinstance(default, float):
        _expect(isinstance(value, (int, float)) and not isinstance(value, bool),
                f"{key}: expected a number, got {value!r}")
    elif isinstance(default, str):
        _expect(isinstance(value, str), f"{key}: expected a string, got {value!r}")


def parse_fidelity(data: Any) -> Fidelity:
    _expect(isinstance(data, dict), f"fidelity: expected a mapping, got {_type_name(data)}")
    for key in data:
        _expect(key in _FIDELITY_KEYS, f"unknown key 'fidelity.{key}'; allowed: {', '.join(_FIDELITY_KEYS)}")
    f = Fidelity()
    if "dataset" in data:
        _expect(data["dataset"] in DATASETS, f"fidelity.dataset: {data['dataset']!r} is not one of {', '.join(DATASETS)}")
        f.dataset = data["dataset"]
    if "subset" in data:
        f.subset = None if data["subset"] is None else _int(data["subset"], "fidelity.subset")
    if "val_size" in data:
        f.val_size = None if data["val_size"] is None else _int(data["val_size"], "fidelity.val_size")
    if "rungs" in data:
        rungs = data["rungs"]
        _expect(isinstance(rungs, list) and rungs, "fidelity.rungs: expected a non-empty list of epochs")
        values = [_number(r, "fidelity.rungs") for r in rungs]
        _expect(values == sorted(set(values)), f"fidelity.rungs: {rungs} must be strictly increasing")
        f.rungs = values
    if "eta" in data:
        f.eta = _int(data["eta"], "fidelity.eta", minimum=2)
    if "batch_size" in data:
        f.batch_size = _int(data["batch_size"], "fidelity.batch_size")
    if "lr" in data:
        f.lr = _number(data["lr"], "fidelity.lr")
    if "warmup" in data:
        f.warmup = _number(data["warmup"], "fidelity.warmup", zero_ok=True)
        _expect(f.warmup < f.epochs, f"fidelity.warmup: {f.warmup:g} epochs must be shorter than the budget "
                                     f"({f.epochs:g} epochs, the last rung)")
    if "grad_clip" in data:
        f.grad_clip = None if data["grad_clip"] is None else _number(data["grad_clip"], "fidelity.grad_clip")
    if "seed" in data:
        f.seed = _int(data["seed"], "fidelity.seed", minimum=0)
    if "repeats" in data:
        f.repeats = _int(data["repeats"], "fidelity.repeats", minimum=1)
    if "validation" in data:
        _expect(data["validation"] in VALIDATION_SPLITS, f"fidelity.validation: {data['validation']!r} is not one of "
                                                         f"{', '.join(VALIDATION_SPLITS)}")
        f.validation = data["validation"]
    return f


# --------------------------------------------------------------------------- checks


def _check_buildable(space: SearchSpace) -> None:
    """Build every single choice into the backbone where it may go, so a value
    that cannot work is reported now, naming its key."""

    for s in space.stages:
        for t in space.stage_types[s]:
            specs = space.params[s].get(t, {})
            # every value of every parameter, fixed ones too, named by its key
            for name, spec in specs.items():
                for choice in spec.choices:
                    _try_build(space, s, t, _materialise(t, specs, (name, choice)), f"{spec.key}: {choice!r}",
                               build_model)
            # then the module's defaults for what the file leaves out (SK's G = 32 ...)
            _try_build(space, s, t, _materialise(t, specs), f"params.{t} (defaults of unlisted parameters)",
                       build_model)


def _with_stage(cfg: ArchConfig, s: int, t: str, values: dict[str, Any]) -> ArchConfig:
    """``cfg`` with type ``t`` and ``values`` in every block of stage ``s``."""
    values = dict(values)
    position = values.pop("position", "standard")
    spec = AttentionSpec(type=t, position=position, params=values)
    stage = cfg.stages[s - 1]
    if _attention.attention_kind(t) == "transition":
        stage.transition = spec
    else:
        for block in stage.blocks:
            block.attention = copy.deepcopy(spec)
    return cfg


def _try_build(space: SearchSpace, s: int, t: str, values: dict[str, Any], what: str, build_model) -> None:
    cfg = _with_stage(space.base_config(), s, t, values)
    try:
        build_model(cfg)
    except ConfigError as exc:
        message = str(exc).split(": ", 1)[-1] if str(exc).startswith("stages[") else str(exc)
        raise ConfigError(f"{what} does not fit stage {s} ({t}): {message}") from None


def check_constraints(space: SearchSpace) -> None:
    """Refuse a ``max_macs``/``max_params`` that no architecture of the space
    can meet, before anything is trained or stored.

    Each stage's attention changes only that stage's cost, so the cheapest
    architecture is the backbone plus, per stage, the cheapest choice there.
    Per stage and type, the cheapest parameter values are found by
    coordinate descent (every value of one parameter with the others held,
    two passes), the same value in every block. The first, quick test: the
    space's first choices ("none" where allowed) already fit.
    """
    if not space.constraints:
        return

    def cost(cfg: ArchConfig) -> dict[str, float]:
        model = build_model(cfg)
        out = {"params": float(sum(p.numel() for p in model.parameters()))}
        if "max_macs" in space.constraints:
            out["macs"] = float(profile(model, cfg.input_size)["macs"])
        return out

    limits = {k[len("max_"):]: float(v) for k, v in space.constraints.items() if k.startswith("max_")}

    def fits(c: dict[str, float]) -> bool:
        return all(c[k] <= v for k, v in limits.items())

    first = space.base_config()
    for s in space.stages:
        t = "none" if "none" in space.stage_types[s] else space.stage_types[s][0]
        if t != "none":
            first = _with_stage(first, s, t, _materialise(t, space.params[s].get(t, {})))
    if fits(cost(first)):
        return
    base = cost(space.base_config())
    for what, limit in limits.items():
        total = base[what]
        for s in space.stages:
            best = math.inf
            for t in space.stage_types[s]:
                if t == "none":
                    best = min(best, base[what])
                    continue
                specs = space.params[s].get(t, {})
                picked = {name: spec.choices[0] for name, spec in specs.items()}

                def stage_cost(choice_of: dict[str, Any]) -> float:
                    values: dict[str, Any] = {}
                    for name in _order(t, specs):  # list parameters take their length from earlier ones
                        v = choice_of[name]
                        values[name] = [v] * _list_length(t, name, values) if specs[name].is_list else v
                    return cost(_with_stage(space.base_config(), s, t, values))[what]

                current = stage_cost(picked)
                for _ in range(2):
                    for name in _order(t, specs):
                        for choice in specs[name].choices:
                            if choice == picked[name]:
                                continue
                            c = stage_cost({**picked, name: choice})
                            if c < current:
                                current, picked = c, {**picked, name: choice}
                best = min(best, current)
            total += best - base[what]
        if total > limit:
            unit = f"{total / 1e6:.2f}M MACs" if what == "macs" else f"{total:,.0f} params"
            raise ConfigError(f"constraints.max_{what}: {limit:g} cannot be met; the cheapest architecture of "
                              f"this space has about {unit}; allowed: a limit of at least that")
