"""The driver: runs a study's plan item by item into a run directory, resumably.

For every task × model × outer fold × seed (PROTOCOL.md): search on the outer training part,
refit the best configuration, score once on the outer test part; baselines without a search are
fitted with their settings; one-at-a-time items refit a best configuration with one
hyperparameter changed. After each item its trial rows and its result row are written
atomically, so a crash loses at most the item in flight. ``resume`` skips items that have a
result row and continues the in-flight search (see :mod:`hpo.tuning`). A failing item is
recorded as failed and the sweep goes on.
"""

from __future__ import annotations

import json
import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hpo.plan import WorkItem, build_plan, trials_for
from hpo.provenance import Provenance, now
from hpo.rundir import RunDir, read_results, write_text
from hpo.space import fixed_values, space_for
from hpo.spec import SpecError, StudySpec, load_spec

Echo = Callable[[str], None]


def default_echo(text: str) -> None:
    print(text, flush=True)


class RunExistsError(FileExistsError):
    """A new run was asked for in a directory that already holds one."""


@dataclass
class SweepSummary:
    """What a driver session did; ``exit_code`` is 1 when any item failed."""

    run_dir: Path
    n_items: int
    n_ok: int = 0
    n_failed: int = 0
    n_skipped: int = 0
    n_failed_before: int = 0
    n_trials: int = 0
    n_failed_trials: int = 0
    seconds: float = 0.0
    failed_items: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 when any item of the run failed (this session or an earlier one), else 0."""
        return 1 if self.n_failed or self.n_failed_before else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "items": self.n_items,
            "ok": self.n_ok,
            "failed": self.n_failed,
            "already_done": self.n_skipped,
            "already_failed": self.n_failed_before,
            "trials": self.n_trials,
            "failed_trials": self.n_failed_trials,
            "seconds": round(self.seconds, 1),
            "failed_items": self.failed_items,
        }

    def lines(self) -> list[str]:
        ran = self.n_ok + self.n_failed
        text = [
            f"Run {self.run_dir.name}: {ran} of {self.n_items} items run this session "
            f"({self.n_ok} ok, {self.n_failed} failed)"
            + (f", {self.n_skipped} already done ({self.n_failed_before} failed)" if self.n_skipped else "")
            + f"; {self.n_trials} trials, {self.n_failed_trials} failed; {_duration(self.seconds)}",
        ]
        for label in self.failed_items[:20]:
            text.append(f"  failed: {label}")
        if len(self.failed_items) > 20:
            text.append(f"  ... and {len(self.failed_items) - 20} more (see results.parquet, errors.log)")
        return text


def _duration(seconds: float) -> str:
    seconds = int(round(seconds)) if seconds is not None and math.isfinite(seconds) else 0
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def study_name_for(spec: StudySpec, run_dir: RunDir, item: WorkItem) -> str:
    """The contract's study name; prefixed with the run name in a shared (URL) storage."""
    return f"{run_dir.name}/{item.study_name}" if spec.search.storage else item.study_name


class FoldCache:
    """Loads each task once and keeps the current fold; remembers tasks that failed to load."""

    def __init__(self, validation_fraction: float) -> None:
        self.validation_fraction = validation_fraction
        self._task_errors: dict[str, Exception] = {}
        self._data: tuple[str, Any] | None = None
        self._fold: tuple[tuple, Any] | None = None

    def fold(self, item: WorkItem):
        from hpo.data import load_task, make_fold

        if item.task in self._task_errors:
            raise self._task_errors[item.task]
        key = (item.task, item.fold, item.repeat, item.seed)
        if self._fold is not None and self._fold[0] == key:
            return self._fold[1]
        if self._data is None or self._data[0] != item.task:
            try:
                self._data = (item.task, load_task(item.task))
            except Exception as exc:
                self._task_errors[item.task] = exc
                raise
        fold = make_fold(
            self._data[1], fold=item.fold, repeat=item.repeat, seed=item.seed, validation_fraction=self.validation_fraction
        )
        self._fold = (key, fold)
        return fold


def _error_of(exc: BaseException, *urls: str) -> str:
    """One line naming an item's error (passwords of URLs in it, and of ``urls``, masked)."""
    from hpo.storage import redact_text

    cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError wraps the real one
    if isinstance(cause, BaseException):
        exc = cause
    text = redact_text(f"{type(exc).__name__}: {exc}".strip(), *urls)
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[0] if len(lines) <= 2 else lines[0] + " ... " + lines[-1])[:2000]


class Driver:
    """Runs the plan of one spec into one run directory (inside a held lock)."""

    def __init__(
        self,
        spec: StudySpec,
        run_dir: RunDir,
        *,
        cluster: Any,
        storage: Any,
        gpu_per_trial: float,
        verbose: int = 1,
        echo: Echo = default_echo,
        provenance: Provenance | None = None,
    ) -> None:
        self.spec = spec
        self.run_dir = run_dir
        self.cluster = cluster
        self.storage = storage
        self.gpu = gpu_per_trial
        self.cpu = spec.resources.cpu
        self.verbose = verbose
        self.echo = echo
        self.provenance = provenance
        self.folds = FoldCache(spec.study.validation_fraction)
        self._base_results = None
        self.summary: SweepSummary | None = None

    # ------------------------------------------------------------------ plan
    def run(self, plan: list[WorkItem]) -> SweepSummary:
        summary = self.summary = SweepSummary(self.run_dir.root, len(plan))
        started = time.time()
        done = self.run_dir.finished_keys()
        failed_before = self.run_dir.failed_keys()
        self._mark_stale(plan, done)
        for index, item in enumerate(plan, start=1):
            if item.key in done:
                summary.n_skipped += 1
                summary.n_failed_before += item.key in failed_before
                continue
            prefix = f"[{index:>{len(str(len(plan)))}}/{len(plan)}] {item.label}"
            if self.verbose:
                what = {"search": f"searching ({trials_for(self.spec, item)} trials)", "fit": "fitting", "one_at_a_time": "refitting"}
                self.echo(f"{prefix}: {what[item.kind]} ...")
            result, trials = self.execute(item)
            if trials is not None:
                self.run_dir.upsert_trials(trials, [(item.task, item.variant, item.fold, item.seed)])
            self.run_dir.upsert_results([result])
            summary.n_trials += int(result.get("n_trials") or 0)
            summary.n_failed_trials += int(result.get("n_failed_trials") or 0)
            if result["status"] == "ok":
                summary.n_ok += 1
            else:
                summary.n_failed += 1
                summary.failed_items.append(f"{item.label}: {result['error']}")
            self.echo(f"{prefix}: {self._summary_line(result)}")
            summary.seconds = time.time() - started
        summary.seconds = time.time() - started
        return summary

    def _mark_stale(self, plan: list[WorkItem], done: set[tuple]) -> None:
        """Mark trials a killed driver left RUNNING as failed (interrupted), before anything runs."""
        from hpo.storage import mark_stale_trials_failed

        total = 0
        for item in plan:
            if item.kind == "search" and item.key not in done:
                total += mark_stale_trials_failed(self.storage, study_name_for(self.spec, self.run_dir, item))
        if total:
            self.echo(f"marked {total} trial(s) left running by an interrupted driver as failed (they will be re-run)")

    @staticmethod
    def _summary_line(result: dict[str, Any]) -> str:
        if result["status"] != "ok":
            parts = [f"FAILED — {result['error']}"]
        else:
            parts = [f"ok — test RMSE {result['rmse']:.4g}, MAE {result['mae']:.4g}, R² {result['r2']:.3f}"]
            if result.get("best_val_rmse") is not None and math.isfinite(result["best_val_rmse"]):
                parts.append(f"best val RMSE {result['best_val_rmse']:.4g}")
        if result.get("n_trials"):
            parts.append(f"{result['n_trials']} trials ({result['n_failed_trials']} failed)")
        seconds = sum(
            value for value in (result.get("search_seconds"), result.get("fit_seconds")) if value is not None and math.isfinite(value)
        )
        parts.append(_duration(seconds))
        return ", ".join(parts)

    # ------------------------------------------------------------------ one item
    def _base_row(self, item: WorkItem) -> dict[str, Any]:
        from hpo.tasks import get_task

        return {
            "task": item.task,
            "task_id": get_task(item.task).task_id,
            "variant": item.variant,
            "fold": item.fold,
            "repeat": item.repeat,
            "seed": item.seed,
            "status": "failed",
            "error": None,
            "rmse": math.nan,
            "mae": math.nan,
            "r2": math.nan,
            "n_train": None,
            "n_test": None,
            "n_val": None,
            "fit_seconds": math.nan,
            "best_val_rmse": math.nan,
            "best_config": None,
            "n_trials": 0,
            "n_failed_trials": 0,
            "splits": None,
            "study": item.study,
            "oat_param": item.oat_param,
            "oat_value": item.oat_value,
            "search_seconds": 0.0,
            "model_file": None,
            "predictions_file": None,
        }

    def settings_for(self, item: WorkItem):
        from hpo.estimators import FitSettings

        training = self.spec.training
        space = space_for(item.variant, self.spec.space, self.spec.xgboost_space)
        return FitSettings(
            variant=item.variant,
            fixed=fixed_values(space),
            max_epochs=training.max_epochs,
            patience=training.patience,
            batch_size=training.batch_size,
            grad_clip=training.grad_clip,
            weight_decay=training.weight_decay,
            seed=item.seed,
            device="cuda" if self.gpu > 0 else "cpu",
            n_threads=max(1, int(self.cpu)),
            fail_all=item.variant in self.spec.testing.fail_variants,
            fail_trials=self.spec.testing.fail_trials,
            diverge_trials=self.spec.testing.diverge_trials,
            kill_trials=self.spec.testing.kill_trials,
            kill_epoch=self.spec.testing.kill_epoch,
            # per-epoch checkpoints live in the run directory: only where every node sees it
            # (no shared filesystem: a trial lost with its node restarts from its first epoch)
            checkpoint=self.spec.failure.max_retries > 0 and not self._nodes_not_seeing_run_dir(),
        )

    def _nodes_not_seeing_run_dir(self) -> list[str]:
        check = getattr(self.cluster, "nodes_not_seeing", None)
        return check(self.run_dir.root, self.echo) if check is not None else []

    def execute(self, item: WorkItem) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
        """Run one item; never raises for the item's own failures (they become a failed row)."""
        row = self._base_row(item)
        trials: list[dict[str, Any]] | None = None
        try:
            fold = self.folds.fold(item)
            if self.provenance is not None:
                self.provenance.record_split(fold)
            row.update(
                splits=fold.splits_source,
                n_train=len(fold.train_idx) + len(fold.val_idx),
                n_val=len(fold.val_idx),
                n_test=len(fold.test_idx),
            )
            data = {
                "X_train": fold.X_train,
                "y_train": fold.y_train,
                "X_val": fold.X_val,
                "y_val": fold.y_val,
                "X_test": fold.X_test,
            }
            settings = self.settings_for(item)
            if item.kind == "search":
                outcome = self._search(item, settings, data)
                trials = [
                    {"task": item.task, "variant": item.variant, "fold": item.fold, "seed": item.seed, "repeat": item.repeat, **r}
                    for r in outcome.trial_rows
                ]
                row.update(
                    n_trials=outcome.n_trials,
                    n_failed_trials=outcome.n_failed,
                    best_val_rmse=outcome.best_val_rmse,
                    search_seconds=outcome.seconds,
                )
                if outcome.error is not None:
                    row["error"] = outcome.error
                    return self._finish(row), trials
                params = outcome.best_config or {}
            elif item.kind == "fit":
                if settings.fail_all:
                    from hpo.estimators import InjectedFailure

                    raise InjectedFailure(f"testing.fail_variants includes {item.variant}: it fails on purpose")
                params = {}
            else:
                params = {**self._base_config(item), item.oat_param: item.oat_value}
            config = {**settings.fixed, **params}
            row["best_config"] = json.dumps(config, sort_keys=True)
            refit = self._refit(settings, params, data)
            from hpo.evaluation import save_fitted_model, save_predictions, score

            metrics = score(fold.y_test, refit.y_pred)
            if not all(math.isfinite(metrics[k]) for k in ("rmse", "mae")):
                raise FloatingPointError(f"test predictions are not finite (RMSE {metrics['rmse']})")
            model_path = self.run_dir.model_file(item)
            predictions_path = self.run_dir.predictions_file(item)
            save_fitted_model(
                model_path,
                fold.preprocessor,
                refit.estimator,
                {
                    "task": item.task,
                    "task_id": row["task_id"],
                    "variant": item.variant,
                    "fold": item.fold,
                    "repeat": item.repeat,
                    "seed": item.seed,
                    "config": config,
                    "study": item.study,
                    "oat_param": item.oat_param,
                    "oat_value": item.oat_value,
                    "splits": fold.splits_source,
                    "feature_names": list(fold.feature_names),
                    "run": self.run_dir.name,
                },
            )
            save_predictions(predictions_path, fold.test_idx, fold.y_test, refit.y_pred)
            row.update(
                status="ok",
                rmse=metrics["rmse"],
                mae=metrics["mae"],
                r2=metrics["r2"],
                fit_seconds=refit.fit_seconds,
                model_file=self.run_dir.relative(model_path),
                predictions_file=self.run_dir.relative(predictions_path),
            )
            if item.kind == "one_at_a_time":
                row["best_val_rmse"] = refit.val_rmse
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            row["error"] = _error_of(exc, self.spec.search.storage)
            self._log_error(item, exc)
        return self._finish(row), trials

    @staticmethod
    def _finish(row: dict[str, Any]) -> dict[str, Any]:
        row["finished_at"] = now()
        return row

    def _log_error(self, item: WorkItem, exc: BaseException) -> None:
        from hpo.storage import redact_text

        path = self.run_dir.root / "errors.log"
        text = redact_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), self.spec.search.storage)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"=== {now()} {item.label}\n{text}\n")

    def _search(self, item: WorkItem, settings, data: dict[str, Any]):
        from hpo.tuning import run_search

        scheduler = None
        if settings.neural and self.spec.scheduler.type == "asha":
            scheduler = {
                "grace_period": self.spec.scheduler.grace_period,
                "reduction_factor": self.spec.scheduler.reduction_factor,
            }
        search_data = {k: data[k] for k in ("X_train", "y_train", "X_val", "y_val")}
        return run_search(
            study_name=study_name_for(self.spec, self.run_dir, item),
            storage=self.storage,
            space=space_for(item.variant, self.spec.space, self.spec.xgboost_space),
            settings=settings,
            data=search_data,
            n_trials=trials_for(self.spec, item),
            search_dir=self.run_dir.search_dir(item),
            trial_log=self.run_dir.trial_log(item),
            resources={"cpu": self.cpu, "gpu": self.gpu},
            scheduler=scheduler,
            max_concurrent_trials=self.spec.search.max_concurrent_trials,
            reuse_actors=self.spec.search.reuse_actors,
            startup_trials=self.spec.search.startup_trials,
            max_retries=self.spec.failure.max_retries,
            ray_verbose=1 if self.verbose >= 2 else 0,
            echo=self.echo if self.verbose else None,
        )

    def _refit(self, settings, params: dict[str, Any], data: dict[str, Any]):
        """Refit in the driver on a local cluster (no worker start-up per refit); on a joined
        cluster as a Ray task with one trial's resources, so it runs where trials run."""
        from hpo.evaluation import refit_and_predict

        if self.cluster is None or not self.cluster.address:
            return refit_and_predict(settings, params, data)
        import ray

        task = ray.remote(refit_and_predict).options(num_cpus=self.cpu, num_gpus=self.gpu or 0, max_retries=0)
        return ray.get(task.remote(settings, params, ray.put(data)))

    def _base_config(self, item: WorkItem) -> dict[str, Any]:
        """Best configuration of the search a one-at-a-time item varies (this run or base_run)."""
        oat = self.spec.one_at_a_time
        base = item.base()
        if oat.base_run:
            if self._base_results is None:
                self._base_results = read_results(oat.base_run)
            table = self._base_results
            source = oat.base_run
        else:
            table = self.run_dir.read_results()
            source = "this run"
        match = table[
            (table["task"] == base.task)
            & (table["variant"] == base.variant)
            & (table["fold"] == base.fold)
            & (table["seed"] == base.seed)
            & (table["study"] == "search")
        ]
        if match.empty:
            raise LookupError(f"no search result for {base.label} in {source}: nothing to vary")
        record = match.iloc[-1]
        if record["status"] != "ok" or not isinstance(record["best_config"], str):
            raise LookupError(f"the search {base.label} failed in {source}: no best configuration to vary")
        return json.loads(record["best_config"])


# --------------------------------------------------------------------------- entry points


def new_run_dir(runs_dir: str | Path, name: str) -> RunDir:
    run_dir = RunDir(Path(runs_dir) / name)
    run_dir.check_not_running()
    if run_dir.spec_file.exists():
        raise RunExistsError(
            f"{run_dir.root} already holds a run; continue it with `python -m hpo resume {run_dir.root}` "
            f"or choose another --name"
        )
    return run_dir


def default_run_name(spec: StudySpec) -> str:
    return f"{spec.study.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_solver_kernel(echo=print) -> str:
    """Build (first use on this machine) or load the C++ solver kernel here, before trials start,
    so that this machine's trial workers load it from the cache; returns :func:`model.native.describe`."""
    from model import native

    if native.enabled() and not native.is_built():
        echo("building the C++ solver kernel (model/native, once per machine and torch version; under a minute)")
    return native.describe()


def run(
    spec: StudySpec,
    run_dir: RunDir,
    *,
    resume: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    dashboard: bool = False,
    dashboard_host: str | None = None,
    dashboard_auth: bool = True,
    verbose: int = 1,
    echo: Echo = default_echo,
    command: list[str] | None = None,
) -> SweepSummary:
    """Run (or, with ``resume``, continue) ``spec`` into ``run_dir``; returns the session summary.

    Raises, before any work and before any file of the run is written:
    :class:`~hpo.rundir.RunLockedError` if another driver holds the directory (checked before Ray
    starts, and for good while this driver runs it), :class:`RunExistsError` if a new run's
    directory already holds one, :class:`~hpo.cluster.ResourceError` if the cluster cannot provide
    the resources per trial, :class:`~hpo.storage.StorageError` if the study storage cannot be used.
    No password of a storage URL is written: spec.toml and provenance.json keep it masked.
    """
    import dataclasses

    import optuna

    from hpo.cluster import check_resources, quiet_tune_logs, resolve_gpu, start_ray, stop_ray
    from hpo.storage import open_storage, redact_text, redact_url, repair_journal, storage_description

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_tune_logs(verbose)
    run_dir.check_not_running()  # a second driver is refused in seconds, before starting Ray
    prepare_solver_kernel(echo)

    cluster = start_ray(
        address=address,
        num_cpus=num_cpus,
        dashboard=dashboard,
        echo=echo,
        dashboard_host=dashboard_host,
        dashboard_auth=dashboard_auth,
    )
    try:
        gpu = resolve_gpu(spec.resources.gpu, cluster.num_gpus)
        check_resources(spec.resources.cpu, gpu, cluster)  # refuse before any file is written
        with run_dir.lock():
            if not resume and run_dir.spec_file.exists():  # another driver started it meanwhile
                raise RunExistsError(
                    f"{run_dir.root} already holds a run; continue it with `python -m hpo resume {run_dir.root}`"
                )
            if resume and spec.search.storage == "":
                repair_journal(run_dir.journal_file)
            storage = open_storage(spec.search.storage, run_dir.journal_file)
            if not resume:
                recorded = dataclasses.replace(spec, search=dataclasses.replace(spec.search, storage=redact_url(spec.search.storage)))
                write_text(run_dir.spec_file, recorded.to_toml())
                run_dir.upsert_results([])  # both tables exist (empty) from the start
                run_dir.upsert_trials([], [])
            provenance = Provenance(run_dir)
            provenance.start_session(
                [redact_text(str(part), spec.search.storage) for part in (command or sys.argv)],
                spec,
                storage_description(spec.search.storage, "optuna.journal"),
            )
            provenance.set_cluster(cluster.describe())
            summary = SweepSummary(run_dir.root, 0)
            driver = None
            try:
                plan = build_plan(spec)
                echo(
                    f"Run {run_dir.name}: {len(plan)} items ({len(spec.study.tasks)} tasks × "
                    f"{len(spec.study.models)} models × {len(spec.study.folds)} folds × {len(spec.study.seeds)} seeds"
                    + (" + one-at-a-time points" if spec.one_at_a_time else "")
                    + f") on {cluster.num_cpus:g} CPUs / {cluster.num_gpus:g} GPUs, per trial {spec.resources.cpu:g} CPU"
                    + (f" + {gpu:g} GPU" if gpu else "")
                    + f"; results in {run_dir.root}"
                )
                driver = Driver(
                    spec,
                    run_dir,
                    cluster=cluster,
                    storage=storage,
                    gpu_per_trial=gpu,
                    verbose=verbose,
                    echo=echo,
                    provenance=provenance,
                )
                summary = driver.run(plan)
                for line in summary.lines():
                    echo(line)
                return summary
            finally:
                if driver is not None and driver.summary is not None:
                    summary = driver.summary
                provenance.end_session(
                    summary.as_dict() if summary is not None and summary.n_items else {"aborted": True}
                )
    finally:
        stop_ray(cluster)


def load_run_spec(run_dir: RunDir) -> StudySpec:
    """The resolved spec stored in a run directory."""
    if not run_dir.spec_file.exists():
        raise SpecError(f"{run_dir.root} is not a run directory (no spec.toml); start a run with `python -m hpo sweep`")
    return load_spec(run_dir.spec_file)
