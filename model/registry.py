"""One name → factory table for every neural variant and baseline, so evaluation code treats all alike."""

from __future__ import annotations

from sklearn.base import BaseEstimator

from .baselines import BASELINE_FACTORIES, BASELINES
from .estimator import LiquidHopfieldRegressor
from .network import VARIANTS

MODEL_NAMES = VARIANTS + BASELINES


def is_neural(name: str) -> bool:
    """True for the liquid–memory variants, False for the baselines."""
    _check_name(name)
    return name in VARIANTS


def make_model(name: str, **params) -> BaseEstimator:
    """An unfitted scikit-learn compatible estimator for any entry of :data:`MODEL_NAMES`.

    Every model accepts ``random_state`` and ``n_jobs`` (for a neural variant ``n_jobs`` means
    ``n_threads``; baselines without randomness or parallelism ignore them). Neural names take
    :class:`LiquidHopfieldRegressor`'s parameters; ``xgboost`` takes learning_rate, max_depth,
    subsample, colsample_bytree, reg_lambda, reg_alpha, min_child_weight and n_estimators.
    """
    _check_name(name)
    if name in VARIANTS:
        if "n_jobs" in params:
            if params.get("n_threads") is not None:
                raise ValueError("give n_jobs or n_threads for a neural model, not both")
            params["n_threads"] = params.pop("n_jobs")
        try:
            return LiquidHopfieldRegressor(variant=name, **params)
        except TypeError as error:
            accepted = ", ".join(p for p in LiquidHopfieldRegressor._get_param_names() if p != "variant")
            raise ValueError(f"{name}: {error}; accepted: {accepted}, n_jobs") from None
    return BASELINE_FACTORIES[name](**params)


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model name {name!r}; accepted: {', '.join(MODEL_NAMES)}")


__all__ = ["MODEL_NAMES", "is_neural", "make_model"]
