"""One search: a Ray Tune ``Tuner`` with ``OptunaSearch`` (TPE, seeded, define-by-run space, the
default configuration first) and ASHA on ``best_val_rmse``, the best validation RMSE so far: what
the fit keeps (it restores its best weights) and what TPE is told, so one noisy epoch at a rung
does not stop a trial whose earlier epochs were good.

Resume works per search by continuing its Optuna study, not by ``Tuner.restore``: trials that
finished (COMPLETE, PRUNED or FAIL by their own error) stay finished and are never re-run; trials
that were running when the driver died are marked FAIL with ``interrupted=True`` and not counted;
the search then runs only the trials still missing, in a new Ray experiment folder
(``attempt{k}``), with the sampler re-seeded for that attempt so its random start differs. Every
finished trial is written to ``trial_log.jsonl`` by the driver as it finishes, so nothing finished
is lost with the driver. ASHA's rung statistics are not carried across attempts.

Within an attempt, a trial's own error (it raised, or its loss diverged) ends it as FAILED with
its error line; only a dead worker process is a failure in Ray's eyes, retried up to
``max_retries`` times from the trial's last per-epoch checkpoint (see :mod:`hpo.trainable`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from hpo.estimators import FitSettings
from hpo.rundir import append_jsonl, read_jsonl
from hpo.space import ALL_PARAMS, TRIAL_NUMBER_KEY, DefineByRun, Space, default_point, same_point
from hpo.storage import INTERRUPTED_ATTR, finished_trials, mark_stale_trials_failed, redact_text
from hpo.trainable import METRIC, TRIAL_ERROR_KEY, train_model

STATE_NAMES = {TrialState.COMPLETE: "COMPLETE", TrialState.PRUNED: "PRUNED", TrialState.FAIL: "FAILED"}
_ERROR_CHARS = 2000


class PruneLedger:
    """Ids of the trials ASHA stopped early, shared by the scheduler, searcher and recorder."""

    def __init__(self) -> None:
        self.pruned: set[str] = set()


class LedgerASHA(ASHAScheduler):
    """ASHA that notes which trials it stops before their last epoch (they are PRUNED)."""

    def __init__(self, ledger: PruneLedger, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ledger = ledger

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and result.get(self._time_attr, 0) < self._max_t:
            self.ledger.pruned.add(trial.trial_id)
        return decision


def asha(ledger: PruneLedger, max_epochs: int, grace_period: int, reduction_factor: int) -> LedgerASHA:
    """ASHA over epochs (``training_iteration``) on :data:`METRIC`, the metric TPE is told."""
    return LedgerASHA(
        ledger,
        metric=METRIC,
        mode="min",
        time_attr="training_iteration",
        max_t=max_epochs,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
    )


class RecordingOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells Optuna what a trial really was.

    * intermediate values are the per-epoch ``val_rmse`` (the whole curve, the last epoch included);
    * a finished trial's value is its best validation RMSE (the fit restores the best weights);
    * trials ASHA stopped are PRUNED, trials that raised or diverged FAIL (their error line in the
      user attribute ``error``);
    * trials cut off by an interrupted driver are FAIL with ``interrupted=True`` (resume re-runs them).
    """

    def __init__(self, *args: Any, ledger: PruneLedger, attempt: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ledger = ledger
        self.attempt = attempt
        self._reported_steps: dict[str, set[int]] = {}

    def _report(self, trial_id: str, value: Any, step: Any) -> None:
        """Report the epoch's validation RMSE as Optuna intermediate value (once per step)."""
        if value is None or step is None or not math.isfinite(value):
            return
        steps = self._reported_steps.setdefault(trial_id, set())
        if int(step) not in steps:
            self._ot_trials[trial_id].report(float(value), int(step))
            steps.add(int(step))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        self._report(trial_id, result.get("val_rmse"), result.get("training_iteration"))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        finished = bool(result) and bool(result.get("done"))
        best = result.get(METRIC) if result else None
        trial_error = result.get(TRIAL_ERROR_KEY) if result else None
        try:
            ot_trial.set_user_attr("ray_trial_id", trial_id)
            ot_trial.set_user_attr("attempt", self.attempt)
            if result and result.get("node_id"):
                ot_trial.set_user_attr("node_id", result["node_id"])
            if error:
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            elif trial_error:
                ot_trial.set_user_attr("error", str(trial_error)[:_ERROR_CHARS])
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            elif not finished:
                ot_trial.set_user_attr(INTERRUPTED_ATTR, True)
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            else:
                self._report(trial_id, result.get("val_rmse"), result.get("training_iteration"))
                if best is None or not math.isfinite(best):
                    self._ot_study.tell(ot_trial, state=TrialState.FAIL)
                elif trial_id in self.ledger.pruned:
                    self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
                else:
                    self._ot_study.tell(ot_trial, float(best), state=TrialState.COMPLETE)
        except Exception as exc:  # never let bookkeeping kill the experiment
            import logging

            logging.getLogger(__name__).warning("could not record trial %s in Optuna: %s", trial_id, exc)
        self._completed_trials.add(trial_id)
        self._reported_steps.pop(trial_id, None)


def trial_dirname(trial: Trial) -> str:
    """Ray trial folders named after the Optuna trial number."""
    return f"trial{int(trial.config.get(TRIAL_NUMBER_KEY, -1)):04d}_{trial.trial_id}"


def trial_name(trial: Trial) -> str:
    return f"trial{int(trial.config.get(TRIAL_NUMBER_KEY, -1)):04d}"


def _error_text(trial: Trial) -> str:
    """What ended a trial that Ray saw fail (its worker died, or Ray itself failed it): the
    exception line of Ray's error file, naming the worker's death where that is the cause."""
    text = ""
    path = getattr(trial, "error_file", None)
    if path and Path(path).exists():
        text = Path(path).read_text(errors="replace")
    if not text:
        text = str(getattr(trial, "error_msg", "") or "unknown error")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and set(line.strip()) != {"^"}]
    died = next((line for line in lines if "ActorDiedError" in line or "died unexpectedly" in line), None)
    if died is not None:
        reason = next((line for line in lines if "exit_type" in line or "exited because" in line or "SIGKILL" in line), "")
        tail = f"worker process died: {died}" + (f" ({reason})" if reason and reason != died else "")
    else:
        # A Python traceback ends with the exception line: "module.ErrorType: message".
        tail = lines[-1] if lines else "unknown error"
    failures = getattr(trial, "num_failures", 0) or 0
    if failures > 1:
        tail += f" [after {failures - 1} retr{'y' if failures == 2 else 'ies'}]"
    return redact_text(tail)[:_ERROR_CHARS]


class TrialRecorder(tune.Callback):
    """Writes one JSON line per finished trial to the search's trial log, and prints progress."""

    def __init__(self, log_path: Path, ledger: PruneLedger, attempt: int, n_total: int, n_done: int, echo) -> None:
        self.log_path = Path(log_path)
        self.ledger = ledger
        self.attempt = attempt
        self.n_total = n_total
        self.n_done = n_done
        self.echo = echo
        self.started: dict[str, float] = {}
        self.curves: dict[str, dict[int, float]] = {}  # per trial: epoch -> validation RMSE
        self.retries: dict[str, int] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        self.started.setdefault(trial.trial_id, time.time())
        self.curves.setdefault(trial.trial_id, {})

    def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict, **info: Any) -> None:
        self.started.setdefault(trial.trial_id, time.time())
        value, epoch = result.get("val_rmse"), result.get("epoch", result.get("training_iteration"))
        if value is not None and epoch is not None and math.isfinite(value) and not result.get(TRIAL_ERROR_KEY):
            # keyed by epoch: a trial retried from its checkpoint may report an epoch again
            self.curves.setdefault(trial.trial_id, {})[int(epoch)] = float(value)

    def on_trial_recover(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        """The trial's worker died; Ray restarts it from its last checkpoint."""
        retries = self.retries[trial.trial_id] = self.retries.get(trial.trial_id, 0) + 1
        curve = self.curves.get(trial.trial_id, {})
        if self.echo:
            self.echo(
                f"    trial {int(trial.config.get(TRIAL_NUMBER_KEY, -1)):>3} lost its worker process; retry "
                f"{retries} from "
                + (f"its checkpoint after epoch {max(curve)}" if curve and trial.checkpoint is not None else "the start")
            )

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        result = trial.last_result or {}
        if not result.get("done"):
            return  # cut off by an interrupted driver: not finished, resume re-runs it
        best = result.get(METRIC)
        if result.get(TRIAL_ERROR_KEY):
            self._record(trial, "FAILED", redact_text(str(result[TRIAL_ERROR_KEY])))
        elif best is None or not math.isfinite(best):
            self._record(trial, "FAILED", "diverged: the validation RMSE is not finite")
        elif trial.trial_id in self.ledger.pruned:
            self._record(trial, "PRUNED", None)
        else:
            self._record(trial, "COMPLETE", None)

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        self._record(trial, "FAILED", _error_text(trial))

    def _record(self, trial: Trial, state: str, error: str | None) -> None:
        result = trial.last_result or {}
        curve = [value for _, value in sorted(self.curves.pop(trial.trial_id, {}).items())]
        seconds = time.time() - self.started.pop(trial.trial_id, time.time())
        record = {
            "trial_number": int(trial.config.get(TRIAL_NUMBER_KEY, -1)),
            "ray_trial_id": trial.trial_id,
            "attempt": self.attempt,
            "state": state,
            "error": error,
            "val_rmse_curve": curve,
            "val_rmse": min(curve) if curve and state != "FAILED" else float("nan"),
            "epochs": len(curve),
            "seconds": seconds,
            "node_id": result.get("node_id"),
            "retries": self.retries.pop(trial.trial_id, 0),
            "params": {k: v for k, v in trial.config.items() if k != TRIAL_NUMBER_KEY},
        }
        append_jsonl(self.log_path, record)
        self.n_done += 1
        if self.echo:
            value = f"val RMSE {record['val_rmse']:.4g}" if state != "FAILED" else (error or "")[:120]
            self.echo(
                f"    trial {record['trial_number']:>3} ({self.n_done}/{self.n_total}) {state:<8} {value}"
                f"  [{record['epochs']} epochs, {seconds:.1f} s]"
            )


class SearchInterrupted(KeyboardInterrupt):
    """The search stopped before all its trials finished (Ctrl-C): nothing of it is recorded as done."""


@dataclass
class SearchOutcome:
    """What one search produced: its trials and its best configuration (None if all failed)."""

    trial_rows: list[dict[str, Any]]
    best_config: dict[str, Any] | None
    best_val_rmse: float
    n_trials: int
    n_failed: int
    seconds: float
    error: str | None = None
    interrupted_trials: int = 0
    stale_trials: int = 0
    attempts: list[int] = field(default_factory=list)


def _reporter(space: Space) -> tune.CLIReporter:
    """Ray Tune's status table, showing the validation RMSE and the searched parameters."""
    return tune.CLIReporter(
        metric_columns={"epoch": "epoch", "val_rmse": "val RMSE", "best_val_rmse": "best"},
        parameter_columns=[name for name in space],
        max_report_frequency=15,
        sort_by_metric=True,
        metric=METRIC,
        mode="min",
    )


def _next_attempt(search_dir: Path) -> int:
    numbers = [int(p.name[len("attempt") :]) for p in search_dir.glob("attempt*") if p.name[len("attempt") :].isdigit()]
    return max(numbers, default=0) + 1


def _sampler_seed(seed: int, attempt: int) -> int:
    """Attempt 1 uses the spec's seed; a resumed attempt a different one, so its random start
    does not repeat the configurations already tried."""
    return seed if attempt == 1 else (seed * 1_000_003 + attempt) % (2**31 - 1)


def run_search(
    *,
    study_name: str,
    storage: optuna.storages.BaseStorage,
    space: Space,
    settings: FitSettings,
    data: dict[str, Any],
    n_trials: int,
    search_dir: Path,
    trial_log: Path,
    resources: dict[str, float],
    scheduler: dict[str, Any] | None,
    max_concurrent_trials: int,
    reuse_actors: bool,
    startup_trials: int,
    max_retries: int = 0,
    ray_verbose: int = 0,
    echo=print,
) -> SearchOutcome:
    """Run (or continue) the search of one study until it holds ``n_trials`` finished trials."""
    started = time.time()
    search_dir = Path(search_dir)
    stale = mark_stale_trials_failed(storage, study_name)
    done = finished_trials(storage, study_name)
    remaining = n_trials - len(done)
    attempts = []
    error = None
    if remaining > 0:
        attempt = _next_attempt(search_dir)
        attempts.append(attempt)
        default = default_point(space)
        already = any(same_point(t.params, default) for t in done)
        ledger = PruneLedger()
        searcher = RecordingOptunaSearch(
            DefineByRun(space),
            metric=METRIC,
            mode="min",
            points_to_evaluate=None if already or not default else [default],
            sampler=optuna.samplers.TPESampler(seed=_sampler_seed(settings.seed, attempt), n_startup_trials=startup_trials),
            study_name=study_name,
            storage=storage,
            ledger=ledger,
            attempt=attempt,
        )
        if scheduler is not None:
            trial_scheduler: TrialScheduler = asha(ledger, settings.max_epochs, **scheduler)
        else:
            trial_scheduler = FIFOScheduler()
        recorder = TrialRecorder(trial_log, ledger, attempt, n_trials, len(done), echo)
        trainable = tune.with_resources(
            tune.with_parameters(train_model, data=data, settings=settings),
            resources={k: v for k, v in resources.items() if v},
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=trial_scheduler,
                num_samples=remaining,
                max_concurrent_trials=max_concurrent_trials or None,
                reuse_actors=reuse_actors,
                trial_name_creator=trial_name,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=f"attempt{attempt}",
                storage_path=str(search_dir),
                callbacks=[recorder],
                verbose=ray_verbose,
                progress_reporter=_reporter(space) if ray_verbose else None,
                # only a dead worker fails a trial in Ray's eyes (its own errors end it, recorded):
                # retried from the last per-epoch checkpoint, of which one is kept
                failure_config=tune.FailureConfig(max_failures=max_retries),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
        try:
            tuner.fit()  # failed trials do not raise; they are in the trial log and the study
        except Exception as exc:  # Ray itself failed: the search fails, the sweep goes on
            error = f"Ray Tune failed: {type(exc).__name__}: {exc}"[:_ERROR_CHARS]
    trials = finished_trials(storage, study_name)
    if remaining > 0 and error is None and len(trials) < n_trials:
        raise SearchInterrupted(
            f"{study_name}: stopped after {len(trials)} of {n_trials} trials; `python -m hpo resume` continues it"
        )
    rows = trial_rows(trials, read_jsonl(trial_log))
    interrupted = sum(
        1
        for t in optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
        if t.user_attrs.get(INTERRUPTED_ATTR)
    )
    good = [r for r in rows if r["state"] != "FAILED" and math.isfinite(r["val_rmse"])]
    best_row = min(good, key=lambda r: r["val_rmse"]) if good else None
    if error is None and best_row is None:
        first = next((r["error"] for r in rows if r["error"]), "no trial finished")
        error = f"all {len(rows)} trials failed; first error: {first}"
    best_params = dict(best_row["_params"]) if best_row is not None else None
    for row in rows:
        row.pop("_params", None)
    return SearchOutcome(
        trial_rows=rows,
        best_config=best_params,
        best_val_rmse=best_row["val_rmse"] if best_row else float("nan"),
        n_trials=len(rows),
        n_failed=sum(r["state"] == "FAILED" for r in rows),
        seconds=time.time() - started,
        error=error,
        interrupted_trials=interrupted,
        stale_trials=stale,
        attempts=attempts,
    )


def trial_rows(trials: list[FrozenTrial], log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per finished Optuna trial, from the driver's trial log where it has the trial and
    from the Optuna trial itself otherwise (a driver killed between the two writes)."""
    by_number = {}
    for record in log:
        by_number[int(record["trial_number"])] = record  # the last record of a number wins
    rows = []
    for trial in trials:
        record = by_number.get(trial.number)
        state = STATE_NAMES[trial.state]
        if record is not None:
            curve = [float(v) for v in record.get("val_rmse_curve", [])]
            row = {
                "trial_number": trial.number,
                "state": record["state"] if record["state"] in ("COMPLETE", "PRUNED", "FAILED") else state,
                "error": record.get("error"),
                "val_rmse": float(record["val_rmse"]) if record.get("val_rmse") is not None else float("nan"),
                "val_rmse_curve": curve,
                "epochs": int(record.get("epochs", len(curve))),
                "seconds": float(record.get("seconds", float("nan"))),
                "node_id": record.get("node_id"),
                "ray_trial_id": record.get("ray_trial_id"),
                "attempt": record.get("attempt"),
                "retries": int(record.get("retries") or 0),
            }
        else:
            curve = [float(v) for _, v in sorted(trial.intermediate_values.items())]
            seconds = (
                (trial.datetime_complete - trial.datetime_start).total_seconds()
                if trial.datetime_complete and trial.datetime_start
                else float("nan")
            )
            row = {
                "trial_number": trial.number,
                "state": state,
                "error": (trial.user_attrs.get("error") or "failed (the driver stopped before recording its error)")
                if state == "FAILED"
                else None,
                "val_rmse": min(curve) if curve and state != "FAILED" else float("nan"),
                "val_rmse_curve": curve,
                "epochs": len(curve),
                "seconds": seconds,
                "node_id": trial.user_attrs.get("node_id"),
                "ray_trial_id": trial.user_attrs.get("ray_trial_id"),
                "attempt": trial.user_attrs.get("attempt"),
                "retries": None,
            }
        if row["state"] == "FAILED":
            row["val_rmse"] = float("nan")
        params = dict(trial.params)
        for name in ALL_PARAMS:
            row[f"param_{name}"] = params.get(name)
        row["_params"] = params
        rows.append(row)
    return rows
