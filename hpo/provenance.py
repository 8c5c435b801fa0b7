"""Provenance of a run: package versions, git commit, host, Python, seeds, the splits used and
the start and end of every driver session, kept in ``provenance.json`` (rewritten atomically)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from hpo.rundir import RunDir, write_json
from model import native

PACKAGES = (
    "liquid-memory-hpo",
    "torch",
    "ray",
    "optuna",
    "optuna-integration",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "xgboost-cpu",
    "xgboost",
    "pygam",
    "openml",
    "pyarrow",
)


def now() -> str:
    """The current time, ISO 8601 with time zone."""
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_state(start: Path | None = None) -> dict[str, Any]:
    """Commit and whether the work tree differs from it (None when not in a git checkout)."""
    where = Path(start or Path(__file__).resolve().parents[1])
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def host() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def index_digest(index) -> str:
    """A short digest of a row-index array (lets readers check two runs used the same rows)."""
    import numpy as np

    return hashlib.sha256(np.asarray(index, dtype=np.int64).tobytes()).hexdigest()[:16]


class Provenance:
    """Reads, updates and rewrites a run's provenance.json."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        path = run_dir.provenance_file
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def start_session(self, command: list[str], spec: Any, storage: str) -> None:
        """Open a driver session. No storage password is kept: the command line and the storage
        description are masked with :func:`hpo.storage.redact_text` whatever the caller passed."""
        from hpo.storage import redact_text

        secret_url = getattr(getattr(spec, "search", None), "storage", "") or ""
        command = [redact_text(str(part), secret_url) for part in command]
        storage = redact_text(storage, secret_url)
        data = self.data
        data.setdefault("run", self.run_dir.name)
        data.setdefault("created", now())
        data.setdefault("spec", "spec.toml")
        data["seeds"] = list(spec.study.seeds)
        data["folds"] = list(spec.study.folds)
        data["repeat"] = spec.study.repeat
        data["storage"] = storage
        data.setdefault("splits", {})
        data.setdefault("sessions", [])
        data["sessions"].append(
            {
                "command": command,
                "started": now(),
                "finished": None,
                "pid": os.getpid(),
                "host": host(),
                "packages": package_versions(),
                "git": git_state(),
                "python_executable": sys.executable,
                "solver_kernel": native.describe(),  # the build CPU training uses on this machine
            }
        )
        data["packages"] = data["sessions"][-1]["packages"]
        data["git"] = data["sessions"][-1]["git"]
        data["host"] = data["sessions"][-1]["host"]
        data["started"] = data["sessions"][0]["started"]
        self.save()

    def set_cluster(self, cluster: dict[str, Any]) -> None:
        self.data["sessions"][-1]["ray"] = cluster
        self.save()

    def record_split(self, fold: Any) -> None:
        """Note which rows an outer fold (and its seeded validation holdout) used."""
        task = self.data.setdefault("splits", {}).setdefault(
            fold.task.name, {"task_id": fold.task.task_id, "source": fold.splits_source, "folds": {}}
        )
        key = f"fold{fold.fold}_seed{fold.seed}"
        if key in task["folds"]:
            return
        task["folds"][key] = {
            "fold": fold.fold,
            "repeat": fold.repeat,
            "seed": fold.seed,
            "n_train": len(fold.train_idx),
            "n_val": len(fold.val_idx),
            "n_test": len(fold.test_idx),
            "test_rows_sha256": index_digest(fold.test_idx),
            "val_rows_sha256": index_digest(fold.val_idx),
        }
        self.save()

    def end_session(self, summary: dict[str, Any]) -> None:
        session = self.data["sessions"][-1]
        session["finished"] = now()
        session["summary"] = summary
        self.data["finished"] = session["finished"]
        self.save()

    def save(self) -> None:
        write_json(self.run_dir.provenance_file, self.data)
