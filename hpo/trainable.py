"""Ray Tune trainables: one trial = one fit of a configuration on a fold's inner training rows,
reporting the validation RMSE after every epoch (``val_rmse``) and its running minimum
(``best_val_rmse``, what the fit keeps since it restores the best weights).

The fold's arrays arrive through Ray's object store (``tune.with_parameters``), never through the
config.

Failures are of two kinds and are kept apart:

* the trial's own error — an exception of the fit (:class:`~hpo.estimators.DivergedError`,
  ``model.NonFiniteLossError``, a bad configuration, the ``[testing]`` hooks'
  :class:`~hpo.estimators.InjectedFailure`): caught here and reported as the trial's last result
  with ``trial_error`` set (its traceback goes to ``trial_error.txt`` in the trial folder). Ray
  sees a trial that ended; the searcher and the trial log record it as FAILED with the error.
  Re-running it would fail the same way, so it is never retried;
* the worker process dying (killed, out of memory, node lost): Ray sees an actor error and, up to
  ``failure.max_retries`` times, restarts the trial from its last checkpoint. With
  ``settings.checkpoint`` a neural trial reports a checkpoint of its whole training state with
  every epoch, so a retry continues from the last finished epoch exactly as the uninterrupted fit
  would have. A node that cannot reach the run directory (a cluster without a shared file
  system) cannot store checkpoints: its trials run on without them, and a retry starts over.
"""

from __future__ import annotations

import math
import os
import signal
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import tune

from hpo.estimators import FitSettings, InjectedFailure, build_estimator, fit_estimator, rmse
from hpo.space import TRIAL_NUMBER_KEY

STATE_FILE = "training_state.pt"  # in a checkpoint folder: the trainer's state after an epoch
KILLED_MARK = "killed_on_purpose"  # in a trial folder: the [testing] kill hook fired already
ERROR_FILE = "trial_error.txt"  # in a trial folder: the traceback of the trial's own error
METRIC = "best_val_rmse"  # result key, every epoch: the best validation RMSE so far (what TPE is told, ASHA compares)
TRIAL_ERROR_KEY = "trial_error"  # result key: "ErrorType: message" of a trial that raised
DIVERGING_LEARNING_RATE = 1e10  # [testing] diverge_trials: Adam at this rate overflows in epoch 1


def _searched_params(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key != TRIAL_NUMBER_KEY}


def _check_injected_failure(settings: FitSettings, trial_number: int) -> None:
    if settings.fail_all:
        raise InjectedFailure(f"testing.fail_variants includes {settings.variant}: every trial fails on purpose")
    if trial_number in settings.fail_trials:
        raise InjectedFailure(f"testing.fail_trials includes trial {trial_number}: it fails on purpose")


def _trial_dir() -> Path | None:
    try:
        return Path(tune.get_context().get_trial_dir())
    except Exception:  # outside a Tune session (unit tests)
        return None


def _restore_state(trial_number: int) -> dict | None:
    """The training state of the trial's last checkpoint (a retried trial), else None (also when
    the checkpoint cannot be read here: the trial then starts over)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    import torch

    try:
        with checkpoint.as_directory() as folder:
            path = Path(folder) / STATE_FILE
            return torch.load(path, weights_only=True) if path.is_file() else None
    except Exception as error:
        print(f"note: trial {trial_number} cannot read its checkpoint ({_error_line(error)}); it starts over")
        return None


def _maybe_kill_worker(settings: FitSettings, trial_number: int, epoch: int) -> None:
    """[testing] kill_trials: SIGKILL this worker process in ``kill_epoch``, once per trial."""
    if trial_number not in settings.kill_trials or epoch != settings.kill_epoch:
        return
    folder = _trial_dir()
    if folder is None or (folder / KILLED_MARK).exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    (folder / KILLED_MARK).write_text(f"pid {os.getpid()} killed in epoch {epoch}\n")
    os.kill(os.getpid(), signal.SIGKILL)


def _error_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[0] if len(lines) <= 2 else lines[0] + " ... " + lines[-1])[:2000]


def train_model(config: dict[str, Any], data: dict[str, np.ndarray], settings: FitSettings) -> None:
    """Fit ``settings.variant`` with ``config`` and report per epoch (neural) or once (xgboost)."""
    trial_number = int(config.get(TRIAL_NUMBER_KEY, -1))
    node_id = ray.get_runtime_context().get_node_id()
    started = time.perf_counter()
    resume_state = _restore_state(trial_number) if settings.checkpoint and settings.neural else None
    history = resume_state["history"] if resume_state else []
    best = min((record["val_rmse"] for record in history), default=math.inf)
    last_epoch = len(history)
    latest_state: dict[str, Any] = {}
    checkpointing = settings.checkpoint and settings.neural

    def metrics(epoch: int, val_rmse: float, best_val_rmse: float, train_loss: float | None) -> dict[str, Any]:
        return {
            "val_rmse": float(val_rmse),
            METRIC: float(best_val_rmse),
            "epoch": int(epoch),
            "train_loss": float("nan") if train_loss is None else float(train_loss),
            "node_id": node_id,
            TRIAL_NUMBER_KEY: trial_number,
            "fit_seconds": time.perf_counter() - started,
        }

    def report(epoch: int, val_rmse: float, train_loss: float | None) -> None:
        nonlocal best, last_epoch, checkpointing
        _maybe_kill_worker(settings, trial_number, epoch)
        best = min(best, val_rmse)
        last_epoch = epoch
        result = metrics(epoch, val_rmse, best, train_loss)
        if not (checkpointing and latest_state):
            tune.report(result)
            return
        import torch

        with tempfile.TemporaryDirectory(prefix="checkpoint-") as folder:
            torch.save(latest_state, Path(folder) / STATE_FILE)
            latest_state.clear()
            try:
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))
                return
            except RuntimeError as error:  # Ray: this node cannot write the run's storage path
                if "storage" not in str(error):
                    raise
                checkpointing = False
                reason = str(error).splitlines()[0]
        print(f"note: trial {trial_number} keeps no checkpoints on this node ({reason}); a retry would start it over")
        tune.report(result)

    try:
        # Arrays from the object store are read-only views; torch wants writable memory.
        data = {name: np.array(values, copy=True) for name, values in data.items()}
        _check_injected_failure(settings, trial_number)
        params = _searched_params(config)
        if trial_number in settings.diverge_trials:
            params["learning_rate"] = DIVERGING_LEARNING_RATE
        estimator = build_estimator(settings, params)
        if settings.neural:
            fit_estimator(
                estimator,
                settings,
                data["X_train"],
                data["y_train"],
                data["X_val"],
                data["y_val"],
                epoch_callback=lambda record: report(record["epoch"], record["val_rmse"], record.get("train_loss")),
                state_callback=latest_state.update if checkpointing else None,
                resume_state=resume_state,
            )
        else:
            fit_estimator(estimator, settings, data["X_train"], data["y_train"])
            val_rmse = rmse(data["y_val"], estimator.predict(data["X_val"]))
            if not math.isfinite(val_rmse):
                from hpo.estimators import DivergedError

                raise DivergedError(f"validation RMSE is {val_rmse}")
            report(1, val_rmse, None)
    except Exception as error:  # the trial's own failure: recorded, never retried
        folder = _trial_dir()
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / ERROR_FILE).write_text("".join(traceback.format_exception(error)))
        result = metrics(last_epoch + 1, math.nan, math.nan, None)
        result[TRIAL_ERROR_KEY] = _error_line(error)
        tune.report(result)
