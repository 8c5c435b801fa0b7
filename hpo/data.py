"""Loading CTR23 tasks through openml-python, outer folds and leak-free preprocessing.

Where the data comes from, in order:

1. the writable cache (:func:`cache_dir`; ``HPO_OPENML_CACHE`` overrides the default under
   ``~/.cache``), filled by earlier loads;
2. a read-only mirror in openml-python's cache layout named by ``HPO_OPENML_MIRROR``: a task's
   folders are copied into the writable cache on first use, because openml-python writes pickles
   into its cache and deletes a folder when a load fails. The mirror itself is never written;
3. OpenML itself, when it can be reached.

A task in none of them fails within seconds with :class:`DataUnavailableError`, which names the
task and says how to obtain it. Nothing here imports Ray or Optuna.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from hpo.tasks import Task, get_task

MIRROR_ENV = "HPO_OPENML_MIRROR"
CACHE_ENV = "HPO_OPENML_CACHE"
OPENML_HOST = "www.openml.org"
_CACHE_SUBDIR = Path("org") / "openml" / "www"
_RECONSTRUCTED_MARK = "RECONSTRUCTED SPLITS"

Availability = Literal["cached", "mirror", "network"]
SplitsSource = Literal["official", "reconstructed"]


class DataUnavailableError(RuntimeError):
    """A task is in neither the cache nor the mirror, and OpenML cannot be reached."""


class DataCorruptError(RuntimeError):
    """A cached or mirrored file could not be read; the message names the file and how to re-fetch."""


class DataFaultError(ValueError):
    """The data loaded, but cannot be evaluated honestly (non-finite or constant target, too few rows)."""


# --------------------------------------------------------------------------- where data lives


def cache_dir() -> Path:
    """The writable openml-python root cache this suite uses.

    ``HPO_OPENML_CACHE`` overrides it. The default is keyed by the pandas major version because
    openml-python's pickles in the cache are tied to the pandas that wrote them.
    """
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return (base / "liquid-memory-hpo" / f"openml-pandas{pd.__version__.split('.')[0]}").resolve()


def mirror_dir() -> Path | None:
    """The read-only mirror named by ``HPO_OPENML_MIRROR``, or None when it is unset."""
    configured = os.environ.get(MIRROR_ENV)
    if not configured:
        return None
    path = Path(configured).expanduser().resolve()
    if not (path / _CACHE_SUBDIR).is_dir():
        raise DataUnavailableError(
            f"{MIRROR_ENV}={configured} is not an openml-python cache: expected a folder "
            f"{_CACHE_SUBDIR} inside it"
        )
    return path


def _task_dirs(root: Path, task: Task) -> tuple[Path, Path]:
    base = root / _CACHE_SUBDIR
    return base / "tasks" / str(task.task_id), base / "datasets" / str(task.dataset_id)


def _holds(root: Path | None, task: Task) -> bool:
    if root is None:
        return False
    task_dir, dataset_dir = _task_dirs(root, task)
    return (
        (task_dir / "task.xml").is_file()
        and (task_dir / "datasplits.arff").is_file()
        and (dataset_dir / "description.xml").is_file()
        and (dataset_dir / "features.xml").is_file()
        and any(dataset_dir.glob("dataset_*.pq"))
    )


def availability(task: Task | str | int) -> Availability:
    """Where a task would be loaded from right now: ``cached``, ``mirror`` or ``network``."""
    task = get_task(task)
    if _holds(cache_dir(), task):
        return "cached"
    if _holds(mirror_dir(), task):
        return "mirror"
    return "network"


def openml_reachable(timeout: float = 3.0) -> bool:
    """Whether OpenML's server accepts a connection within ``timeout`` seconds."""
    try:
        with socket.create_connection((OPENML_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _copy_from_mirror(mirror: Path, cache: Path, task: Task) -> None:
    """Copy a task's folders from the mirror into the cache, atomically per folder."""
    for source, target in zip(_task_dirs(mirror, task), _task_dirs(cache, task)):
        if target.is_dir() and any(target.iterdir()):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        # copyfile, not copy2: the mirror is read-only and the cache copy must be writable.
        shutil.copytree(source, staging / "x", copy_function=shutil.copyfile)
        try:
            os.replace(staging / "x", target)
        except OSError:  # another process won the race; its copy is identical
            pass
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _configure_openml(cache: Path) -> None:
    import openml

    openml.config.set_root_cache_directory(cache)
    openml.config.set_retry_policy("human", n_retries=1)  # fail fast instead of retrying minutes
    logging.getLogger("openml").setLevel(logging.ERROR)


def ensure_available(task: Task | str | int) -> Availability:
    """Make a task loadable from the writable cache; return where it came from.

    Raises :class:`DataUnavailableError` (within seconds) if it is nowhere to be had.
    """
    task = get_task(task)
    where = availability(task)
    cache = cache_dir()
    if where == "mirror":
        _copy_from_mirror(mirror_dir(), cache, task)  # type: ignore[arg-type]
    elif where == "network" and not openml_reachable():
        mirror = os.environ.get(MIRROR_ENV)
        raise DataUnavailableError(
            f"task {task.name} (OpenML task {task.task_id}, dataset {task.dataset_id}) is not in "
            f"the cache {cache}"
            + (f" nor in the mirror {MIRROR_ENV}={mirror}" if mirror else f" ({MIRROR_ENV} is unset)")
            + f", and OpenML ({OPENML_HOST}) cannot be reached. Run `python -m hpo data fetch "
            f"--task {task.name}` on a machine with network access and copy its cache here, or "
            f"point {MIRROR_ENV} at an openml-python cache that holds it."
        )
    return where


# --------------------------------------------------------------------------- loading


@dataclass
class TaskData:
    """A loaded task: features, target in original units, and the task's own outer splits."""

    task: Task
    X: pd.DataFrame
    y: pd.Series
    categorical: list[str]
    splits_source: SplitsSource
    splits: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = field(repr=False)

    @property
    def n_rows(self) -> int:
        return len(self.X)

    def outer_split(self, fold: int, repeat: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Train and test row indices of one of the task's splits."""
        if not 0 <= repeat < self.task.repeats:
            raise ValueError(
                f"repeat={repeat} is out of range: {self.task.name} has repeats 0..{self.task.repeats - 1}"
            )
        if not 0 <= fold < self.task.folds:
            raise ValueError(
                f"fold={fold} is out of range: {self.task.name} has folds 0..{self.task.folds - 1}"
            )
        return self.splits[(repeat, fold)]


def _splits_source(cache: Path, task: Task) -> SplitsSource:
    task_dir, _ = _task_dirs(cache, task)
    with open(task_dir / "datasplits.arff", encoding="utf-8", errors="replace") as handle:
        head = handle.read(2048)
    return "reconstructed" if _RECONSTRUCTED_MARK in head else "official"


def _as_categorical(X: pd.DataFrame, indicator: list[bool]) -> tuple[pd.DataFrame, list[str]]:
    """Nominal and string columns become object columns of labels (NaN kept) for the encoder."""
    categorical = [
        name
        for name, nominal in zip(X.columns, indicator)
        if nominal or not pd.api.types.is_numeric_dtype(X[name]) or pd.api.types.is_bool_dtype(X[name])
    ]
    X = X.copy()
    for name in categorical:
        column = X[name]
        X[name] = column.astype(object).where(column.notna(), np.nan)
    return X, categorical


@functools.lru_cache(maxsize=8)
def _load_cached(task_id: int, cache: str) -> TaskData:
    import openml

    task = get_task(task_id)
    cache_path = Path(cache)
    _configure_openml(cache_path)
    try:
        oml_task = openml.tasks.get_task(task.task_id, download_splits=True)
        dataset = oml_task.get_dataset()
        X, y, indicator, _ = dataset.get_data(target=oml_task.target_name)
        split = oml_task.download_split()
    except Exception as error:  # openml-python raises bare Exception for unreadable files
        task_dir, dataset_dir = _task_dirs(cache_path, task)
        raise DataCorruptError(
            f"task {task.name}: reading its cached files failed ({type(error).__name__}: {error}); "
            f"cache folders {task_dir} and {dataset_dir}. Fetch them again with "
            f"`python -m hpo data fetch --task {task.name} --refresh`."
        ) from error
    X, categorical = _as_categorical(X, list(indicator))
    target = pd.to_numeric(y, errors="raise").astype(float)
    splits = {
        (repeat, fold): (np.asarray(parts[0].train), np.asarray(parts[0].test))
        for repeat, folds in split.split.items()
        for fold, parts in folds.items()
    }
    data = TaskData(task, X, target, categorical, _splits_source(cache_path, task), splits)
    check_task_data(data)
    return data


def check_task_data(data: TaskData) -> None:
    """Refuse data that would give a silently wrong number.

    A non-finite or constant target, or fewer rows than the task has folds, raise
    :class:`DataFaultError`. A feature that is missing in every training row is dropped by the
    imputers (documented behaviour of scikit-learn's ``SimpleImputer``), so it cannot leak or crash.
    """
    name = data.task.name
    target = data.y.to_numpy(dtype=float)
    bad = ~np.isfinite(target)
    if bad.any():
        raise DataFaultError(
            f"task {name}: the target `{data.task.target}` has {int(bad.sum())} missing or infinite "
            f"values (first at row {int(np.flatnonzero(bad)[0])}); remove those rows or fix the data"
        )
    if len(target) and np.ptp(target) == 0:
        raise DataFaultError(
            f"task {name}: the target `{data.task.target}` is constant ({target[0]}); "
            "RMSE gains and R² are undefined for it"
        )
    if data.n_rows < data.task.folds:
        raise DataFaultError(
            f"task {name}: {data.n_rows} rows cannot make {data.task.folds} folds"
        )
    for (repeat, fold), (train, test) in data.splits.items():
        if len(train) == 0 or len(test) == 0 or max(train.max(), test.max()) >= data.n_rows:
            raise DataFaultError(
                f"task {name}: split repeat {repeat} fold {fold} does not fit the {data.n_rows} "
                "rows (the split file does not belong to this dataset)"
            )


def refresh_cache(task: Task | str | int) -> None:
    """Remove a task's folders from the writable cache so the next load fetches them again."""
    task = get_task(task)
    for folder in _task_dirs(cache_dir(), task):
        shutil.rmtree(folder, ignore_errors=True)
    _load_cached.cache_clear()


def load_task(key: str | int | Task) -> TaskData:
    """Load a CTR23 task through openml-python (cache, then mirror, then OpenML).

    Repeated loads in one process are served from memory.
    """
    task = get_task(key)
    ensure_available(task)
    return _load_cached(task.task_id, str(cache_dir()))


# --------------------------------------------------------------------------- folds and preprocessing


def make_preprocessor(categorical: list[str], numeric: list[str]) -> Pipeline:
    """The protocol's preprocessing: median-impute + standardise numeric columns,
    most-frequent-impute + one-hot categorical ones (unknown levels ignored at transform time).

    The output is float32, the dtype every model trains on, so a saved
    ``Pipeline(preprocessor, estimator)`` sees exactly the arrays the fold's models saw.
    The column step is ``preprocessor.named_steps["columns"]``.
    """
    numeric_steps = Pipeline(
        [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
    )
    categorical_steps = Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32)),
        ]
    )
    columns = ColumnTransformer(
        [("numeric", numeric_steps, numeric), ("categorical", categorical_steps, categorical)],
        sparse_threshold=0.0,
        verbose_feature_names_out=False,
    )
    as_float32 = FunctionTransformer(
        np.asarray, kw_args={"dtype": np.float32}, feature_names_out="one-to-one"
    )
    return Pipeline([("columns", columns), ("float32", as_float32)])


@dataclass
class FoldData:
    """One outer fold, preprocessed: inner training, validation and outer test parts.

    ``X_*`` are float32 arrays, ``y_*`` float64 in the target's original units. The preprocessor
    is fit on the inner training rows only.
    """

    task: Task
    fold: int
    repeat: int
    seed: int
    splits_source: SplitsSource
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    preprocessor: Pipeline = field(repr=False)
    feature_names: list[str] = field(repr=False)

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def X_fit(self) -> np.ndarray:
        """The whole outer training part (inner training + validation rows)."""
        return np.concatenate([self.X_train, self.X_val])

    @property
    def y_fit(self) -> np.ndarray:
        return np.concatenate([self.y_train, self.y_val])

    def target_scaler(self) -> StandardScaler:
        """A standardiser of the target fit on the inner training rows (exact inverse)."""
        return StandardScaler().fit(self.y_train.reshape(-1, 1))

    def describe(self) -> dict:
        """Where this fold came from, for provenance and result files."""
        return {
            "task": self.task.name,
            "task_id": self.task.task_id,
            "fold": self.fold,
            "repeat": self.repeat,
            "seed": self.seed,
            "splits": self.splits_source,
            "n_train": len(self.train_idx),
            "n_val": len(self.val_idx),
            "n_test": len(self.test_idx),
        }


def validation_holdout(
    train_idx: np.ndarray, fraction: float, seed: int, fold: int, repeat: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split outer-training rows into inner training and a seeded validation holdout."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}")
    n_val = int(np.ceil(fraction * len(train_idx)))
    if n_val < 1 or n_val >= len(train_idx):
        raise ValueError(
            f"validation_fraction={fraction} leaves no training or no validation rows "
            f"out of {len(train_idx)}"
        )
    order = np.random.default_rng([seed, repeat, fold]).permutation(len(train_idx))
    return np.sort(train_idx[order[n_val:]]), np.sort(train_idx[order[:n_val]])


def make_fold(
    data: TaskData, fold: int, repeat: int = 0, seed: int = 0, validation_fraction: float = 0.1
) -> FoldData:
    """Outer fold ``fold`` of ``repeat``: a seeded validation holdout of its training part and the
    preprocessing fit on the remaining training rows only."""
    outer_train, test_idx = data.outer_split(fold, repeat)
    train_idx, val_idx = validation_holdout(outer_train, validation_fraction, seed, fold, repeat)
    numeric = [c for c in data.X.columns if c not in set(data.categorical)]
    preprocessor = make_preprocessor(data.categorical, numeric)
    X_train = preprocessor.fit_transform(data.X.iloc[train_idx])

    def transform(index: np.ndarray) -> np.ndarray:
        return preprocessor.transform(data.X.iloc[index])

    y = data.y.to_numpy(dtype=np.float64)
    return FoldData(
        task=data.task,
        fold=fold,
        repeat=repeat,
        seed=seed,
        splits_source=data.splits_source,
        train_idx=train_idx,
        val_idx=val_idx,
        test_idx=test_idx,
        X_train=X_train,
        y_train=y[train_idx],
        X_val=transform(val_idx),
        y_val=y[val_idx],
        X_test=transform(test_idx),
        y_test=y[test_idx],
        preprocessor=preprocessor,
        feature_names=list(preprocessor.get_feature_names_out()),
    )
