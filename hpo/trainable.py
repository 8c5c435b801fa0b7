"""Ray Tune trainables: one trial = one fit of a configuration on a fold's inner training rows,
reporting the validation RMSE after every epoch (``val_rmse``) and its running minimum
(``best_val_rmse``, what the fit keeps since it restores the best weights).

The fold's arrays arrive through Ray's object store (``tune.with_parameters``), never through the
config. A trial that raises — including :class:`~hpo.estimators.DivergedError`,
``model.NonFiniteLossError`` and the ``[testing]`` hooks' :class:`~hpo.estimators.InjectedFailure`
— is left to fail; Ray marks it errored and the searcher records it as FAIL in Optuna.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import ray
from ray import tune

from hpo.estimators import FitSettings, InjectedFailure, build_estimator, fit_estimator, rmse
from hpo.space import TRIAL_NUMBER_KEY


def _searched_params(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key != TRIAL_NUMBER_KEY}


def _check_injected_failure(settings: FitSettings, trial_number: int) -> None:
    if settings.fail_all:
        raise InjectedFailure(f"testing.fail_variants includes {settings.variant}: every trial fails on purpose")
    if trial_number in settings.fail_trials:
        raise InjectedFailure(f"testing.fail_trials includes trial {trial_number}: it fails on purpose")


def train_model(config: dict[str, Any], data: dict[str, np.ndarray], settings: FitSettings) -> None:
    """Fit ``settings.variant`` with ``config`` and report per epoch (neural) or once (xgboost)."""
    trial_number = int(config.get(TRIAL_NUMBER_KEY, -1))
    # Arrays from the object store are read-only views; torch wants writable memory.
    data = {name: np.array(values, copy=True) for name, values in data.items()}
    node_id = ray.get_runtime_context().get_node_id()
    _check_injected_failure(settings, trial_number)
    estimator = build_estimator(settings, _searched_params(config))
    started = time.perf_counter()
    best = math.inf

    def report(epoch: int, val_rmse: float, train_loss: float | None) -> None:
        nonlocal best
        best = min(best, val_rmse)
        tune.report(
            {
                "val_rmse": float(val_rmse),
                "best_val_rmse": float(best),
                "epoch": int(epoch),
                "train_loss": float("nan") if train_loss is None else float(train_loss),
                "node_id": node_id,
                TRIAL_NUMBER_KEY: trial_number,
                "fit_seconds": time.perf_counter() - started,
            }
        )

    if settings.neural:
        fit_estimator(
            estimator,
            settings,
            data["X_train"],
            data["y_train"],
            data["X_val"],
            data["y_val"],
            epoch_callback=lambda record: report(record["epoch"], record["val_rmse"], record.get("train_loss")),
        )
    else:
        fit_estimator(estimator, settings, data["X_train"], data["y_train"])
        val_rmse = rmse(data["y_val"], estimator.predict(data["X_val"]))
        if not math.isfinite(val_rmse):
            from hpo.estimators import DivergedError

            raise DivergedError(f"validation RMSE is {val_rmse}")
        report(1, val_rmse, None)
