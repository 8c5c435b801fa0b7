"""Search spaces as data: the liquid–memory space of MODEL.md §6, the xgboost space, and the
define-by-run function that turns a space into Optuna suggestions.

A space maps hyperparameter names to domains (:class:`FloatRange`, :class:`IntRange`,
:class:`Choice`, :class:`Fixed`). Every searched domain carries the default that the search
evaluates first. Nothing here imports Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:  # trials import this module; keep Optuna out of them
    import optuna

# Model names, as in model.VARIANTS / model.BASELINES (the contract); spec validation checks
# against these without importing torch.
VARIANTS: tuple[str, ...] = ("ltc_mhn", "ltc", "zero_beta", "fixed_beta", "matched_ltc")
BASELINES: tuple[str, ...] = ("xgboost", "random_forest", "gam", "ridge", "tree")
SEARCHED_BASELINES: tuple[str, ...] = ("xgboost",)

# Name of the constant the define-by-run function adds to every trial's config: the Optuna
# trial number, which links a Ray trial to its Optuna trial.
TRIAL_NUMBER_KEY = "optuna_trial_number"


@dataclass(frozen=True)
class FloatRange:
    """A float in [low, high], log-uniform when ``log``."""

    low: float
    high: float
    default: float
    log: bool = False


@dataclass(frozen=True)
class IntRange:
    """An integer in [low, high] (both included), log-uniform when ``log``."""

    low: int
    high: int
    default: int
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """One of a few values (categorical)."""

    choices: tuple
    default: Any


@dataclass(frozen=True)
class Fixed:
    """A value held constant (not searched)."""

    value: Any


Domain = Union[FloatRange, IntRange, Choice, Fixed]
Space = dict[str, Domain]

# MODEL.md §6, with the defaults of MODEL.md §1–4 (the first point every search evaluates).
NEURAL_SPACE: Space = {
    "beta": FloatRange(1e-2, 1e1, default=0.25, log=True),  # β0
    "hopfield_size": Choice((4, 8, 16, 32, 64), default=16),  # N
    "heads": Choice((1, 2, 4, 8), default=4),  # H, must divide M = n
    "alpha": FloatRange(0.25, 2.0, default=1.0),  # α0
    "delta": FloatRange(1e-2, 2.0, default=0.5, log=True),  # δ0
    "learning_rate": FloatRange(3e-4, 3e-2, default=1e-3, log=True),
    "hidden_size": Choice((32, 64, 128), default=64),  # n
    "unfolds": IntRange(2, 8, default=6),  # T
}
NEURAL_PARAMS: tuple[str, ...] = tuple(NEURAL_SPACE)
INTEGER_PARAMS = frozenset({"hopfield_size", "heads", "hidden_size", "unfolds", "max_depth", "n_estimators"})
MEMORY_PARAMS: tuple[str, ...] = ("beta", "hopfield_size", "heads", "alpha", "delta")

# The usual xgboost space (CTR23 used eta, max_depth, subsample, colsample_bytree, lambda, alpha,
# min_child_weight, nrounds); defaults are xgboost's own where they lie inside the range.
XGBOOST_SPACE: Space = {
    "learning_rate": FloatRange(1e-3, 1.0, default=0.3, log=True),  # eta
    "max_depth": IntRange(1, 12, default=6),
    "subsample": FloatRange(0.3, 1.0, default=1.0),
    "colsample_bytree": FloatRange(0.3, 1.0, default=1.0),
    "reg_lambda": FloatRange(1e-3, 1e3, default=1.0, log=True),  # lambda
    "reg_alpha": FloatRange(1e-3, 1e3, default=1e-3, log=True),  # alpha (xgboost default 0)
    "min_child_weight": FloatRange(0.1, 100.0, default=1.0, log=True),
    "n_estimators": IntRange(10, 2000, default=100, log=True),  # nrounds
}
XGBOOST_PARAMS: tuple[str, ...] = tuple(XGBOOST_SPACE)

# Every hyperparameter name a trials table may carry a `param_<name>` column for.
ALL_PARAMS: tuple[str, ...] = NEURAL_PARAMS + tuple(p for p in XGBOOST_PARAMS if p not in NEURAL_PARAMS)


def variant_params(variant: str) -> tuple[str, ...]:
    """The hyperparameters a model searches: all of §6 for the memory variants (β excepted for
    ``zero_beta``, whose β ≡ 0), the non-memory ones for ``ltc`` / ``matched_ltc``, the xgboost
    space for ``xgboost``, none for the fitted baselines."""
    if variant in ("ltc_mhn", "fixed_beta"):
        return NEURAL_PARAMS
    if variant == "zero_beta":
        return tuple(p for p in NEURAL_PARAMS if p != "beta")
    if variant in ("ltc", "matched_ltc"):
        return tuple(p for p in NEURAL_PARAMS if p not in MEMORY_PARAMS)
    if variant == "xgboost":
        return XGBOOST_PARAMS
    if variant in BASELINES:
        return ()
    raise ValueError(f"variant must be one of {', '.join(VARIANTS + BASELINES)}; got {variant!r}")


def is_searched(variant: str) -> bool:
    """Whether a model goes through a hyperparameter search (neural variants and xgboost)."""
    return variant in VARIANTS or variant in SEARCHED_BASELINES


def space_for(variant: str, neural_space: Space, xgboost_space: Space) -> Space:
    """The part of a study's space that ``variant`` uses."""
    source = xgboost_space if variant == "xgboost" else neural_space
    return {name: source[name] for name in variant_params(variant)}


def default_point(space: Space) -> dict[str, Any]:
    """The default configuration of the searched parameters (the first point evaluated)."""
    return {name: domain.default for name, domain in space.items() if not isinstance(domain, Fixed)}


def default_config(space: Space) -> dict[str, Any]:
    """Every parameter of the space at its default (fixed ones at their value)."""
    return {
        name: domain.value if isinstance(domain, Fixed) else domain.default for name, domain in space.items()
    }


def fixed_values(space: Space) -> dict[str, Any]:
    """The parameters held constant."""
    return {name: domain.value for name, domain in space.items() if isinstance(domain, Fixed)}


def suggest(trial: "optuna.Trial", space: Space) -> dict[str, Any]:
    """Ask ``trial`` for a value of every searched parameter of ``space`` (define-by-run)."""
    values: dict[str, Any] = {}
    for name, domain in space.items():
        if isinstance(domain, FloatRange):
            values[name] = trial.suggest_float(name, domain.low, domain.high, log=domain.log)
        elif isinstance(domain, IntRange):
            values[name] = trial.suggest_int(name, domain.low, domain.high, log=domain.log)
        elif isinstance(domain, Choice):
            values[name] = trial.suggest_categorical(name, list(domain.choices))
    return values


class DefineByRun:
    """The define-by-run function handed to Ray's ``OptunaSearch``.

    It suggests the searched parameters and adds the Optuna trial number as a constant, so every
    Ray trial's config says which Optuna trial it is. Picklable (Ray snapshots its searcher).
    """

    def __init__(self, space: Space) -> None:
        self.space = dict(space)

    def __call__(self, trial: "optuna.Trial") -> dict[str, Any]:
        suggest(trial, self.space)
        return {TRIAL_NUMBER_KEY: trial.number}


def same_point(params: dict[str, Any], point: dict[str, Any]) -> bool:
    """Whether an Optuna trial's params equal a configuration (floats compared to 1e-12)."""
    if set(params) != set(point):
        return False
    for name, value in point.items():
        other = params[name]
        if isinstance(value, float) or isinstance(other, float):
            if not math.isclose(float(value), float(other), rel_tol=1e-12, abs_tol=0.0):
                return False
        elif value != other:
            return False
    return True
