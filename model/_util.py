"""Small helpers shared by the model modules: argument checks and the softplus inverse."""

from __future__ import annotations

import math
from numbers import Integral, Real


def inverse_softplus(value: float) -> float:
    """Return ``raw`` with ``softplus(raw) == value`` (``value`` must be positive)."""
    if not value > 0:
        raise ValueError(f"inverse_softplus needs a positive value, got {value!r}")
    # softplus(raw) = log(1 + e^raw)  =>  raw = log(e^value - 1) = value + log(1 - e^-value)
    return value + math.log(-math.expm1(-value))


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive(name: str, value: object, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite float > 0 (or >= 0), or raise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return float(value)


def check_choice(name: str, value: object, choices: tuple) -> object:
    """Return ``value`` if it is one of ``choices``, else raise a ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
