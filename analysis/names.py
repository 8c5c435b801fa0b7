"""Model names in their canonical order, one colour per model, and how to draw each hyperparameter.

The orders repeat ``model.VARIANTS`` and ``model.BASELINES`` (a test checks they agree) so that
reading results never needs torch. Every figure takes its colours from :func:`model_color`, so a
variant has the same colour everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

VARIANTS: tuple[str, ...] = ("ltc_mhn", "ltc", "zero_beta", "fixed_beta", "matched_ltc")
BASELINES: tuple[str, ...] = ("xgboost", "random_forest", "gam", "ridge", "tree")
MODEL_NAMES: tuple[str, ...] = VARIANTS + BASELINES
ABLATION_VARIANTS: tuple[str, ...] = ("ltc", "zero_beta", "fixed_beta", "matched_ltc", "ltc_mhn")
MAIN_VARIANT = "ltc_mhn"
NO_MEMORY_VARIANT = "ltc"

# Okabe–Ito colours for the neural variants (colour-blind safe), muted colours for baselines.
_COLORS: dict[str, str] = {
    "ltc_mhn": "#D55E00",  # vermillion
    "ltc": "#0072B2",  # blue
    "zero_beta": "#E69F00",  # orange
    "fixed_beta": "#CC79A7",  # reddish purple
    "matched_ltc": "#009E73",  # bluish green
    "xgboost": "#56B4E9",  # sky blue
    "random_forest": "#8C6D31",  # brown
    "gam": "#7F7F7F",  # grey
    "ridge": "#AAAA11",  # olive
    "tree": "#444444",  # dark grey
}
_FALLBACK = ("#882255", "#117733", "#332288", "#44AA99", "#999933", "#AA4499", "#661100")

_LABELS: dict[str, str] = {
    "ltc_mhn": "LTC+MHN",
    "ltc": "LTC",
    "zero_beta": "zero β",
    "fixed_beta": "fixed β",
    "matched_ltc": "matched LTC",
    "xgboost": "XGBoost",
    "random_forest": "random forest",
    "gam": "GAM",
    "ridge": "ridge",
    "tree": "tree",
}


def model_color(name: str) -> str:
    """The colour of a model or variant, identical in every figure."""
    if name in _COLORS:
        return _COLORS[name]
    return _FALLBACK[sum(map(ord, name)) % len(_FALLBACK)]


def model_label(name: str) -> str:
    """A short human-readable label for legends (``ltc_mhn`` → ``LTC+MHN``)."""
    return _LABELS.get(name, name)


def order_models(names) -> list[str]:
    """Names in canonical order (variants, then baselines), unknown names last, alphabetically."""
    names = list(dict.fromkeys(names))
    known = [name for name in MODEL_NAMES if name in names]
    return known + sorted(name for name in names if name not in MODEL_NAMES)


def is_baseline(name: str) -> bool:
    return name in BASELINES


@dataclass(frozen=True)
class ParameterInfo:
    """How a searched hyperparameter is named in captions (``label``) and on an axis (``symbol``, ``unit``)."""

    name: str
    label: str
    symbol: str
    log: bool
    unit: str = "dimensionless"


PARAMETERS: dict[str, ParameterInfo] = {
    "beta": ParameterInfo("beta", "initial inverse temperature β0", "β0", log=True),
    "hopfield_size": ParameterInfo("hopfield_size", "Hopfield size N", "N", log=True, unit="stored patterns"),
    "heads": ParameterInfo("heads", "number of heads H", "H", log=True, unit="heads"),
    "alpha": ParameterInfo("alpha", "coupling initialisation α0", "α0", log=False),
    "delta": ParameterInfo("delta", "coupling initialisation δ0", "δ0", log=True),
    "learning_rate": ParameterInfo("learning_rate", "learning rate", "learning rate", log=True),
    "hidden_size": ParameterInfo("hidden_size", "width n", "n", log=True, unit="hidden units"),
    "unfolds": ParameterInfo("unfolds", "unfolds T", "T", log=False, unit="RK4 steps"),
}


DEFAULTS: dict[str, float] = {
    "beta": 0.25, "hopfield_size": 16, "heads": 4, "alpha": 1.0, "delta": 0.5,
    "learning_rate": 1e-3, "hidden_size": 64, "unfolds": 6,
}
"""MODEL.md defaults: the first configuration every search evaluates."""


def parameter_info(name: str, values=None) -> ParameterInfo:
    """Axis description of a hyperparameter; unknown ones get a log axis when positive and spanning ≥ 20×."""
    if name in PARAMETERS:
        return PARAMETERS[name]
    log = False
    if values is not None:
        import numpy as np

        finite = np.asarray(values, dtype=float)
        finite = finite[np.isfinite(finite)]
        log = bool(finite.size and finite.min() > 0 and finite.max() / finite.min() >= 20)
    readable = name.replace("_", " ")
    return ParameterInfo(name, readable, readable, log=log, unit="as searched")


def axis_label(info: ParameterInfo) -> str:
    """Short axis label with the unit in brackets (``β0 [dimensionless]``)."""
    return f"{info.symbol} [{info.unit}]"
