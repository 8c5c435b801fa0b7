"""Outer evaluation of one configuration (PROTOCOL.md): refit on the outer training part, predict
the outer test part once, score, and write the model and its test predictions.

Neural variants refit on the inner training rows with the same validation holdout for early
stopping as the search; baselines (xgboost with its best configuration, the others with their
settings) fit on the whole outer training part. No test row influences any choice. Knows
nothing of Ray (the driver may run :func:`refit_and_predict` as a Ray task).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hpo.estimators import FitSettings, build_estimator, fit_estimator, regression_metrics
from hpo.rundir import atomic_write


@dataclass
class Refit:
    """A refitted estimator, its outer-test predictions and what the refit took."""

    estimator: Any
    y_pred: np.ndarray
    fit_seconds: float
    val_rmse: float  # best validation RMSE of a neural refit (NaN for baselines)
    epochs: int


def refit_and_predict(settings: FitSettings, params: dict[str, Any], data: dict[str, np.ndarray]) -> Refit:
    """Fit ``settings.variant`` with ``params`` on a fold's training part and predict its test part."""
    estimator = build_estimator(settings, params)
    started = time.perf_counter()
    if settings.neural:
        fit_estimator(estimator, settings, data["X_train"], data["y_train"], data["X_val"], data["y_val"])
    else:
        X_fit = np.concatenate([data["X_train"], data["X_val"]])
        y_fit = np.concatenate([data["y_train"], data["y_val"]])
        fit_estimator(estimator, settings, X_fit, y_fit)
    fit_seconds = time.perf_counter() - started
    y_pred = np.asarray(estimator.predict(data["X_test"]), dtype=np.float64).reshape(-1)
    history = getattr(estimator, "history_", None) or []
    val_rmse = min((r["val_rmse"] for r in history), default=math.nan)
    return Refit(estimator, y_pred, fit_seconds, float(val_rmse), len(history))


def save_predictions(path: Path, row_id: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> None:
    """Write a predictions file: row_id (row of the task's data), y_true, y_pred."""
    table = pa.table(
        {
            "row_id": pa.array(np.asarray(row_id, dtype=np.int64)),
            "y_true": pa.array(np.asarray(y_true, dtype=np.float64)),
            "y_pred": pa.array(np.asarray(y_pred, dtype=np.float64)),
        }
    )
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def save_fitted_model(path: Path, preprocessor: Any, estimator: Any, metadata: dict[str, Any]) -> None:
    """Write ``Pipeline(preprocessor, estimator)`` with ``model.save_model`` (which writes atomically)."""
    from sklearn.pipeline import Pipeline

    from model import save_model

    pipeline = Pipeline([("preprocess", preprocessor), ("model", estimator)])
    save_model(pipeline, path, metadata=metadata)


def score(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² on the outer test part."""
    return regression_metrics(y_true, y_pred)
