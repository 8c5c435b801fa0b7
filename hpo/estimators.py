"""Building and fitting any model of the suite the same way in a trial, a refit and a baseline fit,
and the protocol's metrics. Knows nothing of Ray; imports ``model`` (and so torch) lazily.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from hpo.space import VARIANTS


class InjectedFailure(RuntimeError):
    """Raised on purpose by the ``[testing]`` hooks of a spec."""


class DivergedError(FloatingPointError):
    """The validation RMSE became non-finite (the model diverged)."""


@dataclass(frozen=True)
class FitSettings:
    """Everything but the searched hyperparameters that a fit needs (picklable, sent to trials)."""

    variant: str
    fixed: dict[str, Any] = field(default_factory=dict)
    max_epochs: int = 100
    patience: int = 10
    batch_size: int = 256
    grad_clip: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"
    n_threads: int = 1
    fail_all: bool = False
    fail_trials: tuple[int, ...] = ()
    diverge_trials: tuple[int, ...] = ()  # [testing]: these trials train with a learning rate that diverges
    kill_trials: tuple[int, ...] = ()  # [testing]: these trials' worker kills itself once, in kill_epoch
    kill_epoch: int = 1
    checkpoint: bool = False  # trials keep a per-epoch checkpoint (to be retried from it)

    @property
    def neural(self) -> bool:
        return self.variant in VARIANTS


def build_estimator(settings: FitSettings, params: dict[str, Any]):
    """An unfitted estimator of ``settings.variant`` with the given hyperparameters."""
    from model import make_model

    params = {**settings.fixed, **params}
    if settings.neural:
        return make_model(
            settings.variant,
            **params,
            max_epochs=settings.max_epochs,
            patience=settings.patience,
            batch_size=settings.batch_size,
            grad_clip=settings.grad_clip or None,
            weight_decay=settings.weight_decay,
            device=settings.device,
            n_threads=settings.n_threads,
            random_state=settings.seed,
        )
    return make_model(settings.variant, **params, random_state=settings.seed, n_jobs=max(1, int(settings.n_threads)))


def fit_estimator(
    estimator,
    settings: FitSettings,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    epoch_callback: Callable[[dict], None] | None = None,
    state_callback: Callable[[dict], None] | None = None,
    resume_state: dict | None = None,
):
    """Fit a neural model with ``(X_val, y_val)`` for early stopping, a baseline on the rows given.

    A non-finite validation RMSE in any epoch raises :class:`DivergedError`. ``state_callback`` and
    ``resume_state`` (neural models only) checkpoint a fit and continue it from a checkpoint.
    """
    if settings.neural:

        def on_epoch(record: dict) -> None:
            if not math.isfinite(record["val_rmse"]):
                raise DivergedError(f"validation RMSE became {record['val_rmse']} in epoch {record['epoch']}")
            if epoch_callback is not None:
                epoch_callback(record)

        eval_set = None if X_val is None else (X_val, y_val)
        extra = {}
        if state_callback is not None or resume_state is not None:
            extra = {"state_callback": state_callback, "resume_state": resume_state}
        return estimator.fit(X_train, y_train, eval_set=eval_set, epoch_callback=on_epoch, **extra)
    return estimator.fit(X_train, y_train)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² in the target's units (R² = 1 − SSE/SST)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}")
    residual = y_true - y_pred
    sse = float(np.sum(residual**2))
    sst = float(np.sum((y_true - y_true.mean()) ** 2))
    return {
        "rmse": math.sqrt(sse / len(y_true)),
        "mae": float(np.mean(np.abs(residual))),
        "r2": 1.0 - sse / sst if sst > 0 else float("nan"),
    }


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return regression_metrics(y_true, y_pred)["rmse"]
