"""The run directory: its layout, its lock, and atomic writes and reads of its tables.

Layout of ``studies/runs/RUN/`` (written as work finishes; a crash loses at most the item in flight)::

    spec.toml               the resolved study spec (every default filled in)
    provenance.json         package versions, git commit, host, python, seeds, splits used,
                            start/end of every driver session
    optuna.journal          Optuna JournalStorage, one study per search named
                            "{task}/{variant}/fold{fold}/seed{seed}" (unless search.storage is a URL)
    ray/{task}/{variant}/fold{f}_seed{s}/
        attempt{k}/         Ray Tune's experiment folder of the k-th driver session on this search
        trial_log.jsonl     one line per finished trial, written by the driver as it finishes
    trials.parquet          one row per trial (columns: :data:`TRIAL_COLUMNS`)
    results.parquet         one row per task × variant × fold × seed (× one-at-a-time point)
    models/{task}/{variant}/fold{f}_seed{s}.pt               refitted model (model.save_model)
    predictions/{task}/{variant}/fold{f}_seed{s}.parquet     row_id, y_true, y_pred (outer test rows)
    .lock                   held by the driver running this directory

One-at-a-time items add ``_{param}={value}`` to the model and predictions file names. Readers
(:func:`read_results`, :func:`read_trials`) import neither Ray nor Optuna.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hpo.space import ALL_PARAMS, INTEGER_PARAMS

RESULTS_SCHEMA = pa.schema(
    [
        ("task", pa.string()),
        ("task_id", pa.int64()),
        ("variant", pa.string()),
        ("fold", pa.int64()),
        ("repeat", pa.int64()),
        ("seed", pa.int64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("rmse", pa.float64()),
        ("mae", pa.float64()),
        ("r2", pa.float64()),
        ("n_train", pa.int64()),
        ("n_test", pa.int64()),
        ("fit_seconds", pa.float64()),
        ("best_val_rmse", pa.float64()),
        ("best_config", pa.string()),
        ("n_trials", pa.int64()),
        ("n_failed_trials", pa.int64()),
        ("splits", pa.string()),
        ("study", pa.string()),
        ("oat_param", pa.string()),
        ("oat_value", pa.float64()),
        # beyond the contract's columns:
        ("n_val", pa.int64()),
        ("search_seconds", pa.float64()),
        ("model_file", pa.string()),
        ("predictions_file", pa.string()),
        ("finished_at", pa.string()),
    ]
)
RESULTS_KEY = ("task", "variant", "fold", "seed", "study", "oat_param", "oat_value")

TRIALS_SCHEMA = pa.schema(
    [
        ("task", pa.string()),
        ("variant", pa.string()),
        ("fold", pa.int64()),
        ("seed", pa.int64()),
        ("trial_number", pa.int64()),
        ("state", pa.string()),
        ("error", pa.string()),
        ("val_rmse", pa.float64()),
        ("val_rmse_curve", pa.list_(pa.float64())),
        ("epochs", pa.int64()),
        ("seconds", pa.float64()),
        *[(f"param_{name}", pa.int64() if name in INTEGER_PARAMS else pa.float64()) for name in ALL_PARAMS],
        # beyond the contract's columns:
        ("repeat", pa.int64()),
        ("node_id", pa.string()),
        ("ray_trial_id", pa.string()),
        ("attempt", pa.int64()),
        ("retries", pa.int64()),  # times the trial was restarted after its worker died
    ]
)
TRIALS_KEY = ("task", "variant", "fold", "seed")
TRIAL_COLUMNS = tuple(TRIALS_SCHEMA.names)
RESULT_COLUMNS = tuple(RESULTS_SCHEMA.names)


class RunLockedError(RuntimeError):
    """Another driver holds the run directory."""


class RunDir:
    """Paths of one run directory and the operations on its files."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    # ------------------------------------------------------------------ paths
    @property
    def name(self) -> str:
        return self.root.name

    @property
    def spec_file(self) -> Path:
        return self.root / "spec.toml"

    @property
    def provenance_file(self) -> Path:
        return self.root / "provenance.json"

    @property
    def journal_file(self) -> Path:
        return self.root / "optuna.journal"

    @property
    def ray_dir(self) -> Path:
        return self.root / "ray"

    @property
    def trials_file(self) -> Path:
        return self.root / "trials.parquet"

    @property
    def results_file(self) -> Path:
        return self.root / "results.parquet"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def search_dir(self, item: Any) -> Path:
        """Ray Tune folders and the trial log of one search."""
        return self.ray_dir / item.task / item.variant / f"fold{item.fold}_seed{item.seed}"

    def trial_log(self, item: Any) -> Path:
        return self.search_dir(item) / "trial_log.jsonl"

    def model_file(self, item: Any) -> Path:
        return self.models_dir / item.task / item.variant / f"{item.file_stem}.pt"

    def predictions_file(self, item: Any) -> Path:
        return self.predictions_dir / item.task / item.variant / f"{item.file_stem}.parquet"

    def relative(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root))

    # ------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory for this process (released when it exits, even when killed)."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_file, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunLockedError(
                f"{self.root} is being run by {holder}; wait for it to finish (watch it with "
                f"`python -m hpo status {self.root}`) or stop that driver first"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def check_not_running(self) -> None:
        """Raise :class:`RunLockedError` if a driver holds this directory right now."""
        if self.is_running():
            holder = self.lock_file.read_text().strip() or "another process"
            raise RunLockedError(
                f"{self.root} is being run by {holder}; wait for it to finish (watch it with "
                f"`python -m hpo status {self.root}`) or stop that driver first"
            )

    def is_running(self) -> bool:
        """Whether a driver holds the lock right now."""
        if not self.lock_file.exists():
            return False
        with open(self.lock_file, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    # ------------------------------------------------------------------ tables
    def read_results(self) -> pd.DataFrame:
        return _read_table(self.results_file, RESULTS_SCHEMA)

    def read_trials(self) -> pd.DataFrame:
        return _read_table(self.trials_file, TRIALS_SCHEMA)

    def upsert_results(self, rows: list[dict[str, Any]]) -> None:
        """Add result rows, replacing rows of the same item (atomic: temp file + rename)."""
        _upsert(self.results_file, RESULTS_SCHEMA, rows, RESULTS_KEY)

    def upsert_trials(self, rows: list[dict[str, Any]], searches: Iterable[tuple]) -> None:
        """Replace every trial row of the given searches (task, variant, fold, seed) by ``rows``."""
        _upsert(self.trials_file, TRIALS_SCHEMA, rows, TRIALS_KEY, replace_keys=set(searches))

    def finished_keys(self) -> set[tuple]:
        """Keys (see ``WorkItem.key``) of the items that have a results row."""
        table = self.read_results()
        return {_row_key(row, RESULTS_KEY) for row in table.to_dict("records")}

    def failed_keys(self) -> set[tuple]:
        """Keys of the items whose results row says failed."""
        table = self.read_results()
        return {_row_key(row, RESULTS_KEY) for row in table.to_dict("records") if row["status"] != "ok"}


def _normalise(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN in a key column means "none"
        return None
    if isinstance(value, float):
        return round(value, 12)
    if hasattr(value, "item"):  # numpy scalar
        return _normalise(value.item())
    return value


def _row_key(row: dict[str, Any], key: tuple[str, ...]) -> tuple:
    return tuple(_normalise(row.get(column)) for column in key)


def _read_table(path: Path, schema: pa.Schema) -> pd.DataFrame:
    if not path.exists():
        return schema.empty_table().to_pandas()
    return pq.read_table(path).to_pandas()


def _conform(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    unknown = {column for row in rows for column in row} - set(schema.names)
    if unknown:
        raise KeyError(f"columns not in the schema: {', '.join(sorted(unknown))}")
    clean = []
    for row in rows:
        record = {}
        for name in schema.names:
            value = row.get(name)
            if hasattr(value, "item") and not isinstance(value, (list, tuple)):
                value = value.item()
            record[name] = value
        clean.append(record)
    return pa.Table.from_pylist(clean, schema=schema)


def _upsert(
    path: Path,
    schema: pa.Schema,
    rows: list[dict[str, Any]],
    key: tuple[str, ...],
    replace_keys: set[tuple] | None = None,
) -> None:
    new = _conform(rows, schema)
    replace = {_row_key(row, key) for row in rows} | {tuple(_normalise(v) for v in k) for k in replace_keys or ()}
    parts = []
    if path.exists():
        old = _to_schema(pq.read_table(path), schema)
        keep = [_row_key(row, key) not in replace for row in old.select(list(key)).to_pylist()]
        parts.append(old.filter(pa.array(keep, type=pa.bool_())))
    parts.append(new)
    table = pa.concat_tables(parts)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _to_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A table written by an older version in today's schema (columns it lacks are null)."""
    if table.schema == schema:
        return table
    columns = [
        table.column(field.name).cast(field.type) if field.name in table.column_names else pa.nulls(len(table), field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def atomic_write(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` to a temporary file beside ``path``, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=False, default=str)
            handle.write("\n")

    atomic_write(path, write)


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    atomic_write(path, write)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk (a killed driver keeps every line written; a
    line it left torn is ended first, so the new record stays readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        if handle.seek(0, os.SEEK_END) > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
        handle.write((json.dumps(record, default=str) + "\n").encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSON-lines file (a torn last line from a kill is skipped)."""
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def read_results(run_dir: str | Path) -> pd.DataFrame:
    """results.parquet of a run directory as a DataFrame (empty with the columns if none yet)."""
    return RunDir(run_dir).read_results()


def read_trials(run_dir: str | Path) -> pd.DataFrame:
    """trials.parquet of a run directory as a DataFrame (empty with the columns if none yet)."""
    return RunDir(run_dir).read_trials()
