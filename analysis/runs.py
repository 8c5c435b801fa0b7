"""Reading a finished (or partial) run directory written by the search: ``studies/runs/RUN/``.

Only files are read; nothing here starts a search or writes into the run directory. The layout
and the columns follow the team contract (results.parquet, trials.parquet, optuna.journal,
models/, predictions/).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REQUIRED = object()
"""Marks a column a file must have; other entries give the default for an absent column."""

RESULT_COLUMNS: dict[str, Any] = {
    "task": REQUIRED,
    "task_id": -1,
    "variant": REQUIRED,
    "fold": REQUIRED,
    "repeat": 0,
    "seed": 0,
    "status": "ok",
    "error": None,
    "rmse": np.nan,
    "mae": np.nan,
    "r2": np.nan,
    "n_train": -1,
    "n_test": -1,
    "fit_seconds": np.nan,
    "best_val_rmse": np.nan,
    "best_config": None,
    "n_trials": 0,
    "n_failed_trials": 0,
    "splits": "unknown",
    "study": "search",
    "oat_param": None,
    "oat_value": np.nan,
}
"""results.parquet columns with the default used when an optional column is absent (older or partial file)."""

TRIAL_COLUMNS: dict[str, Any] = {
    "task": REQUIRED,
    "variant": REQUIRED,
    "fold": REQUIRED,
    "seed": 0,
    "trial_number": REQUIRED,
    "state": REQUIRED,
    "error": None,
    "val_rmse": np.nan,
    "val_rmse_curve": None,
    "epochs": 0,
    "seconds": np.nan,
}

STUDY_NAME = re.compile(r"^(?P<task>[^/]+)/(?P<variant>[^/]+)/fold(?P<fold>\d+)/seed(?P<seed>\d+)$")


class RunDirectoryError(ValueError):
    """The directory is not a run directory (no results.parquet) or a file in it is unreadable."""


def _with_columns(frame: pd.DataFrame, columns: dict[str, Any], path: Path) -> pd.DataFrame:
    missing = [name for name, default in columns.items() if default is REQUIRED and name not in frame]
    if missing:
        raise RunDirectoryError(f"{path} lacks the required column(s) {', '.join(missing)}")
    frame = frame.copy()
    for name, default in columns.items():
        if name not in frame and default is not REQUIRED:
            frame[name] = default
    return frame


def read_results(path: Path | str) -> pd.DataFrame:
    """Read a results.parquet, adding absent optional columns with their defaults."""
    path = Path(path)
    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise RunDirectoryError(f"cannot read {path}: {error}") from error
    frame = _with_columns(frame, RESULT_COLUMNS, path)
    frame["study"] = frame["study"].fillna("search")
    for name in ("rmse", "mae", "r2", "oat_value", "best_val_rmse", "fit_seconds"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    for name in ("fold", "seed", "repeat"):
        frame[name] = frame[name].astype(int)
    frame["task"] = frame["task"].astype(str)
    frame["variant"] = frame["variant"].astype(str)
    return frame


def read_trials(path: Path | str) -> pd.DataFrame:
    """Read a trials.parquet, adding absent optional columns with their defaults."""
    path = Path(path)
    try:
        frame = pd.read_parquet(path)
    except Exception as error:
        raise RunDirectoryError(f"cannot read {path}: {error}") from error
    frame = _with_columns(frame, TRIAL_COLUMNS, path)
    frame["val_rmse"] = pd.to_numeric(frame["val_rmse"], errors="coerce").astype(float)
    frame["task"] = frame["task"].astype(str)
    frame["variant"] = frame["variant"].astype(str)
    return frame


def _names_under(mapping: Any, keys: tuple[str, ...]) -> list[str]:
    """Every list of strings stored under one of ``keys`` anywhere in a nested TOML mapping."""
    found: list[str] = []
    if isinstance(mapping, dict):
        for key, value in mapping.items():
            if key in keys and isinstance(value, list) and all(isinstance(v, str) for v in value):
                found.extend(value)
            elif isinstance(value, dict):
                found.extend(_names_under(value, keys))
    return list(dict.fromkeys(found))


@dataclass
class Run:
    """A run directory and its tables; absent optional files read as None."""

    path: Path
    results: pd.DataFrame
    trials: pd.DataFrame | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def journal_path(self) -> Path | None:
        path = self.path / "optuna.journal"
        return path if path.is_file() else None

    def model_path(self, task: str, variant: str, fold: int, seed: int) -> Path:
        return self.path / "models" / task / variant / f"fold{fold}_seed{seed}.pt"

    def predictions_path(self, task: str, variant: str, fold: int, seed: int) -> Path:
        return self.path / "predictions" / task / variant / f"fold{fold}_seed{seed}.parquet"

    @cached_property
    def search_results(self) -> pd.DataFrame:
        """Rows of the main searches (``study == "search"``), failed ones included."""
        return self.results[self.results["study"] == "search"].reset_index(drop=True)

    @cached_property
    def oat_results(self) -> pd.DataFrame:
        """Rows of one-at-a-time sensitivity studies (``study == "one_at_a_time"``)."""
        return self.results[self.results["study"] == "one_at_a_time"].reset_index(drop=True)

    @property
    def tasks(self) -> list[str]:
        """Tasks named in the spec or present in the results, spec order first."""
        named = _names_under(self.spec, ("tasks",))
        present = list(dict.fromkeys(self.results["task"]))
        if self.trials is not None:
            present += list(dict.fromkeys(self.trials["task"]))
        return list(dict.fromkeys(named + present))

    @property
    def models(self) -> list[str]:
        """Models and variants named in the spec or present in the results, canonical order."""
        from analysis.names import order_models

        named = _names_under(self.spec, ("variants", "models", "baselines"))
        return order_models(named + list(self.results["variant"].unique()))

    @property
    def splits(self) -> list[str]:
        values = self.results["splits"].dropna().astype(str).unique().tolist()
        return sorted(values) or ["unknown"]


def load_run(run_dir: Path | str) -> Run:
    """Read a run directory; raise :class:`RunDirectoryError` if it has no readable results.parquet."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirectoryError(f"run directory {path} does not exist")
    results_path = path / "results.parquet"
    if not results_path.is_file():
        raise RunDirectoryError(
            f"{path} has no results.parquet (is it a run directory under studies/runs/, and has "
            "the search finished at least one fold?)"
        )
    results = read_results(results_path)
    trials_path = path / "trials.parquet"
    trials = read_trials(trials_path) if trials_path.is_file() else None
    spec: dict[str, Any] = {}
    if (path / "spec.toml").is_file():
        try:
            spec = tomllib.loads((path / "spec.toml").read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            spec = {}
    provenance: dict[str, Any] = {}
    if (path / "provenance.json").is_file():
        try:
            provenance = json.loads((path / "provenance.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            provenance = {}
    return Run(path=path, results=results, trials=trials, spec=spec, provenance=provenance)


def parse_study_name(name: str) -> dict[str, Any] | None:
    """Split ``"{task}/{variant}/fold{fold}/seed{seed}"`` into its parts; None for other names."""
    match = STUDY_NAME.match(name)
    if match is None:
        return None
    return {
        "task": match["task"],
        "variant": match["variant"],
        "fold": int(match["fold"]),
        "seed": int(match["seed"]),
    }


def task_target(task: str) -> str | None:
    """The target column of a CTR23 task (for axis labels); None when the task is not known."""
    try:
        from hpo.tasks import get_task

        return get_task(task).target
    except Exception:  # unknown task name or hpo unavailable: labels fall back to "target"
        return None


def _spec_oat(spec: dict[str, Any]) -> dict[str, Any]:
    section = spec.get("one_at_a_time")
    return section if isinstance(section, dict) else {}


def _resolve_run_reference(reference: str, relative_to: Path) -> Path | None:
    """A run path as written in a spec: absolute, relative to the working directory, or to the runs folder."""
    if not reference:
        return None
    candidate = Path(reference)
    for path in (candidate, relative_to / candidate, relative_to / candidate.name):
        if (path / "results.parquet").is_file():
            return path
    return None


def base_run_of(run: Run) -> Run | None:
    """The run whose searches a one-at-a-time run started from (its spec's one_at_a_time.base_run)."""
    path = _resolve_run_reference(str(_spec_oat(run.spec).get("base_run", "")), run.path.parent)
    if path is None or path.resolve() == run.path.resolve():
        return None
    try:
        return load_run(path)
    except RunDirectoryError:
        return None


def sibling_oat_runs(run: Run) -> list[Run]:
    """Runs next to ``run`` whose one-at-a-time study starts from ``run`` (e.g. a beta_sensitivity run)."""
    found = []
    for spec_path in sorted(run.path.parent.glob("*/spec.toml")):
        other = spec_path.parent
        if other.resolve() == run.path.resolve():
            continue
        try:
            spec = tomllib.loads(spec_path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError):
            continue
        reference = str(_spec_oat(spec).get("base_run", ""))
        target = _resolve_run_reference(reference, run.path.parent) if reference else None
        if target is not None and target.resolve() == run.path.resolve():
            try:
                found.append(load_run(other))
            except RunDirectoryError:
                continue
    return found
