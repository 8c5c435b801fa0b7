"""Optuna storage of a run: the run's journal file by default, any Optuna storage URL when the
spec gives one; plus the bookkeeping resume needs (stale RUNNING trials, finished trials).

Behind :func:`open_storage` every storage looks the same, so a study can be inspected with
``optuna.load_study(study_name=..., storage=...)`` or optuna-dashboard while and after it runs.
Nothing here imports Ray.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

# User attribute set on trials that never finished because the driver stopped (killed or
# interrupted); they are marked FAIL and are not counted as finished work.
INTERRUPTED_ATTR = "interrupted"
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def journal_storage(path: str | Path) -> optuna.storages.JournalStorage:
    """An Optuna journal storage on ``path`` (safe for several processes; SQLite is not)."""
    from optuna.storages.journal import JournalFileBackend

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def open_storage(url: str, journal_path: str | Path) -> BaseStorage:
    """``url`` if given (e.g. ``postgresql://user@host/db``), else the journal at ``journal_path``."""
    if url:
        return optuna.storages.get_storage(url)
    return journal_storage(journal_path)


def storage_description(url: str, journal_path: str | Path) -> str:
    """How to reach the storage, for messages (passwords in URLs are masked)."""
    if not url:
        return str(journal_path)
    scheme, _, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
    return url


def repair_journal(path: str | Path) -> bool:
    """Cut a torn last line (a driver killed mid-write) and stale lock files off a journal.

    Only safe while no other process writes it (the run directory's lock guarantees that).
    Returns whether anything was repaired.
    """
    path = Path(path)
    repaired = False
    for lock in path.parent.glob(path.name + ".lock*"):
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
            repaired = True
    if not path.exists() or path.stat().st_size == 0:
        return repaired
    with open(path, "rb+") as handle:
        data = handle.read()
        if not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)
            repaired = True
    return repaired


def find_study(storage: BaseStorage, study_name: str) -> optuna.Study | None:
    """The study of that name, or None if it does not exist yet."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return None


def mark_stale_trials_failed(storage: BaseStorage, study_name: str) -> int:
    """Mark the RUNNING/WAITING trials of a study FAIL with ``interrupted=True``; return how many.

    Call only when no search of the study is running (resume holds the run directory's lock).
    """
    study = find_study(storage, study_name)
    if study is None:
        return 0
    stale = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for trial in stale:
        storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, True)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return len(stale)


def is_interrupted(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(INTERRUPTED_ATTR, False))


def finished_trials(storage: BaseStorage, study_name: str) -> list[FrozenTrial]:
    """Trials that ran to an end (COMPLETE, PRUNED, or FAIL by their own error), by number."""
    study = find_study(storage, study_name)
    if study is None:
        return []
    return sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state in FINISHED_STATES and not is_interrupted(t)),
        key=lambda t: t.number,
    )


def trial_counts(storage: BaseStorage, study_name: str) -> dict[str, int]:
    """Counts of finished, failed and running trials of a study (interrupted ones left out)."""
    study = find_study(storage, study_name)
    counts = {"finished": 0, "failed": 0, "running": 0}
    if study is None:
        return counts
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.RUNNING:
            counts["running"] += 1
        elif trial.state in FINISHED_STATES and not is_interrupted(trial):
            counts["finished"] += 1
            counts["failed"] += trial.state == TrialState.FAIL
    return counts
