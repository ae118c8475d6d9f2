"""A study's numerics, decided once and kept (docs/design.md section 6).

Which formulation of an attention op runs, and in which precision (bf16 or
fp32 under autocast), is chosen by timing (:func:`nas.kernels.choice.run_fastest`):
a race on the machine at that moment, so the same config and seed could
train with different numerics in two processes (on ``sk``'s trial-1
config, 0.6620 against 0.6420 validation accuracy), and a resumed or
distributed study would compare architectures whose numerics a race chose.

Decided here: a **plan per study**. The first time a study's process meets
an op on a shape, it measures the choice as before; the choice is then
stored in the study (user attr :data:`PLAN_ATTR`: the machine it was
measured on and key -> (formulation, fp32)), and every later trial, worker
and resume takes the stored choice without timing. Every trained evaluation
records the choices it ran with (trial user attr :data:`PLAN_ATTR`), so a
result always says which numerics produced it. A plan belongs to a kind of
machine (CPU model and its bf16/AMX instructions, torch): a study
joined or resumed on another kind is refused in one line unless the caller
allows mixing (``--mix-numerics``), in which case this machine measures its
own choices and each trial records them.

Why a stored plan rather than fixing the precision by rule and racing only
equivalent formulations: equivalent formulations still round differently,
and training amplifies any rounding difference into a seed-noise-sized
change of accuracy, so only fixed choices make two processes agree.
"""
from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch
import yaml

from ..errors import NasError
from .choice import kernel_plan

#: study and trial user attr holding a plan
PLAN_ATTR = "kernel_plan"


def machine_kind() -> str:
    """What a plan's choices depend on: the CPU model and the instructions
    that change which kernels are fast or right (bf16, AMX, AVX-512) and
    torch's version. Not the thread count: ``--workers N`` runs the same plan
    on fewer threads each (a choice made with more threads may be slower
    there, but it computes the same thing)."""
    model, flags = platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == platform.machine():
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = "+".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "baseline"
    return f"{model} ({isa}), torch {torch.__version__}"


def _plan_of(attrs: dict) -> dict:
    plan = attrs.get(PLAN_ATTR) or {}
    return plan if isinstance(plan, dict) else {}


def check_plan(name: str, attrs: dict, mix: bool = False) -> None:
    """One line when study ``name`` holds a plan measured on another kind
    of machine (refused unless ``mix``)."""
    plan = _plan_of(attrs)
    if plan.get("machine") and plan["machine"] != machine_kind() and not mix:
        raise NasError(f"study {name!r} keeps the numerics (kernel choices and their precision) measured on "
                       f"{plan['machine']}; this is {machine_kind()}: its trials would train with other numerics. "
                       f"Resume it on that kind of machine, or pass --mix-numerics (each trial records its own)")


@contextlib.contextmanager
def planned(study, record_on=None, mix: bool = False):
    """Train inside the study's plan: its stored choices pinned (when
    measured on this kind of machine), new choices measured and added to it
    afterwards, and the choices used written on ``record_on`` (a trial, or
    anything with ``set_user_attr``) as its plan. Yields the
    :class:`nas.kernels.choice.PlanRecord`."""
    here = machine_kind()
    stored = _plan_of(study.user_attrs)
    own = not stored.get("machine") or stored["machine"] == here
    if not own and not mix:
        check_plan(study.study_name, study.user_attrs)
    choices = stored.get("choices", {}) if own else {}
    if os.environ.get("NAS_KERNELS") == "reference":
        choices = {}
    with kernel_plan(choices) as record:
        try:
            yield record
        finally:  # a pruned or failed training ran with these numerics too
            if record_on is not None:  # also an empty plan: the trial says it ran no tunable op
                record_on.set_user_attr(PLAN_ATTR, {"machine": here, "planned": own,
                                                    "choices": {k: list(v) for k, v in record.used.items()}})
            if own and record.measured:
                _merge(study, here, record.measured)


def _merge(study, machine: str, measured: dict) -> None:
    """Add this process's new choices to the study's plan; a key another
    worker stored meanwhile keeps that worker's choice (the next trial here
    takes it too)."""
    plan = _plan_of(study.user_attrs)
    choices = dict(plan.get("choices", {}))
    added = {k: list(v) for k, v in measured.items() if k not in choices}
    if added or not plan.get("machine"):
        study.set_user_attr(PLAN_ATTR, {"machine": plan.get("machine") or machine, "choices": {**choices, **added}})


class PlanFile:
    """A plan kept in a YAML file instead of a study (the ``train``
    command's, beside its config): the same interface :func:`planned` reads
    and writes (``study_name``, ``user_attrs``, ``set_user_attr``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.study_name = str(self.path)

    @property
    def user_attrs(self) -> dict:
        if not self.path.is_file():
            return {}
        try:
            data = yaml.safe_load(self.path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise NasError(f"{self.path}: not a numerics plan ({' '.join(str(exc).split())[:200]}); remove it to "
                           f"measure a new one") from None
        return {PLAN_ATTR: data} if isinstance(data, dict) else {}

    def set_user_attr(self, key: str, value) -> None:
        if key != PLAN_ATTR:
            raise KeyError(key)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(value, sort_keys=True))
        tmp.replace(self.path)


class RunRecord(dict):
    """Where a run outside any study (``train``) collects its plan."""

    def set_user_attr(self, key: str, value) -> None:
        self[key] = value
