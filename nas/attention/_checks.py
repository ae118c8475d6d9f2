"""Argument checks shared by the attention modules: each failure is a
``ValueError`` naming the module, the parameter and the allowed values."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def check_int(module: str, name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise ValueError(f"{module}: {name} must be {allowed}, got {value!r}")
    return value


def check_choice(module: str, name: str, value: Any, allowed: Sequence[Any]) -> Any:
    if value not in allowed:
        raise ValueError(f"{module}: {name} must be one of {', '.join(map(str, allowed))}, got {value!r}")
    return value


def check_divides(module: str, name: str, value: int, total: int, what: str) -> int:
    """``value`` must divide ``total`` (``what`` names the total)."""
    check_int(module, name, value, 1)
    if total % value:
        divisors = [d for d in range(1, total + 1) if total % d == 0]
        raise ValueError(
            f"{module}: {name}={value} must divide {what}={total}; allowed: {', '.join(map(str, divisors))}"
        )
    return value


def check_odd(module: str, name: str, value: Any, low: int = 1) -> int:
    check_int(module, name, value, low)
    if value % 2 == 0:
        raise ValueError(f"{module}: {name} must be an odd kernel size >= {low}, got {value}")
    return value


def check_int_list(module: str, name: str, value: Any, length: int | None = None) -> list[int]:
    if not isinstance(value, (list, tuple)) or not value or any(
        isinstance(v, bool) or not isinstance(v, int) for v in value
    ):
        raise ValueError(f"{module}: {name} must be a non-empty list of integers, got {value!r}")
    if length is not None and len(value) != length:
        raise ValueError(f"{module}: {name} must have {length} entries, got {len(value)}")
    return list(value)
