"""Optuna storage of a run: the run's journal file by default, any Optuna storage URL when the
spec gives one (PostgreSQL for a cluster); plus the bookkeeping resume needs (stale RUNNING
trials, finished trials) and the redaction of passwords in storage URLs.

Behind :func:`open_storage` every storage looks the same, so a study can be inspected with
``optuna.load_study(study_name=..., storage=...)`` or optuna-dashboard while and after it runs.
A password in a storage URL is never written anywhere: :func:`redact_url` / :func:`redact_text`
mask it in everything printed or written (spec.toml, provenance.json, logs, errors), and the
storage object pickles without it (Ray Tune saves its searcher, and with it the storage, into
the run directory). Nothing here imports Ray.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from urllib.parse import unquote

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

# User attribute set on trials that never finished because the driver stopped (killed or
# interrupted); they are marked FAIL and are not counted as finished work.
INTERRUPTED_ATTR = "interrupted"
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

REDACTED = "***"
# scheme://user:PASSWORD@host... — the password ends at the first "@", as SQLAlchemy reads it.
_USERINFO_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s]*)(?P<tail>@)")
# ...?password=PASSWORD& — libpq also takes the password as a query parameter.
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<password>[^&\s'\"]*)", re.IGNORECASE)
_DRIVER_HINTS = {
    "postgresql": "psycopg2-binary (pip install 'liquid-memory-hpo[postgres]')",
    "mysql": "PyMySQL (pip install PyMySQL)",
}


class StorageError(ValueError):
    """A study storage that cannot be used (bad URL, missing driver, unreachable database)."""


# --------------------------------------------------------------------------- redaction


def url_passwords(url: str) -> list[str]:
    """The passwords a storage URL carries (in the user part or as ``?password=``), as written."""
    found = [m.group("password") for m in _USERINFO_PASSWORD.finditer(url or "")]
    found += [m.group("password") for m in _QUERY_PASSWORD.finditer(url or "")]
    return [p for p in found if p and p != REDACTED]


def _has_redacted_password(url: str) -> bool:
    matches = [*_USERINFO_PASSWORD.finditer(url or ""), *_QUERY_PASSWORD.finditer(url or "")]
    return any(m.group("password") == REDACTED for m in matches)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (user, host, port and database kept).

    ``postgresql://hpo:s3cret@db:5432/studies`` -> ``postgresql://hpo:***@db:5432/studies``.
    """
    return redact_text(url or "")


def redact_text(text: str, *urls: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``, and with the passwords
    of ``urls`` replaced wherever they appear (as written or percent-decoded), e.g. in a database
    driver's error message or a command line."""
    if not text:
        return text
    text = _USERINFO_PASSWORD.sub(lambda m: m.group("head") + (REDACTED if m.group("password") else "") + m.group("tail"), text)
    text = _QUERY_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)
    secrets = {s for url in urls for p in url_passwords(url) for s in (p, unquote(p))}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def strip_password(url: str) -> str:
    """``url`` without any password (the database driver then looks for one itself: libpq reads
    ``PGPASSWORD`` or ``~/.pgpass``)."""
    url = _USERINFO_PASSWORD.sub(lambda m: m.group("head")[:-1] + m.group("tail"), url or "")
    url = re.sub(r"([?&])password=[^&]*&?", r"\1", url, flags=re.IGNORECASE)
    return url.rstrip("?&")


def same_database(url: str, other: str) -> bool:
    """Whether two storage URLs name the same database (passwords ignored)."""
    return strip_password(url) == strip_password(other)


def storage_url_for_resume(recorded: str, given: str | None) -> str:
    """The storage URL for continuing a run whose spec.toml recorded ``recorded`` (its password
    redacted): ``given`` (with the password) if it names the same database, else ``recorded``
    (opened without a password: the driver's own sources, such as ``PGPASSWORD``, apply)."""
    if not given:
        return recorded
    if not recorded:
        raise StorageError(
            "--storage: this run keeps its studies in its own optuna.journal; resume it without --storage"
        )
    if not same_database(given, recorded):
        raise StorageError(
            f"--storage {redact_url(given)} names another database than the run's {redact_url(recorded)}; "
            f"resume against the database the run started in"
        )
    return given


# --------------------------------------------------------------------------- opening


def journal_storage(path: str | Path) -> optuna.storages.JournalStorage:
    """An Optuna journal storage on ``path`` (safe for several processes; SQLite is not)."""
    from optuna.storages.journal import JournalFileBackend

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def open_storage(url: str, journal_path: str | Path) -> BaseStorage:
    """``url`` if given (e.g. ``postgresql://user:password@host:5432/db``), else the journal at
    ``journal_path``. A URL storage is connected (tables created) here, so a wrong URL or an
    unreachable database raises :class:`StorageError` before any work starts."""
    if url:
        return rdb_storage(url)
    return journal_storage(journal_path)


# Real URLs of the storages opened in this process, by their redacted form: a storage unpickled
# here (Ray Tune deep-copies and saves its searcher) reconnects with the password it had.
_OPENED_URLS: dict[str, str] = {}


class RedactedRDBStorage(RDBStorage):
    """Optuna's RDB storage whose pickled form carries the URL with its password redacted.

    Unpickled in the process that opened it, it reconnects with the real URL; elsewhere without a
    password (the driver's own sources apply, e.g. ``PGPASSWORD`` or ``~/.pgpass`` for libpq).
    """

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["url"] = redact_url(self.url)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state["url"] = _OPENED_URLS.get(state["url"]) or strip_password(state["url"])
        super().__setstate__(state)


def rdb_storage(url: str) -> RedactedRDBStorage:
    """Connect to the database at ``url`` (SQLAlchemy URL); errors name it with the password masked.

    A URL whose password is ``***`` (as spec.toml records it) is opened without a password.
    """
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    shown = redact_url(url)
    password_dropped = _has_redacted_password(url)
    if password_dropped:
        url = strip_password(url)
    try:
        dialect = make_url(url).get_backend_name()
    except (sqlalchemy.exc.ArgumentError, ValueError) as error:
        raise StorageError(
            f"search.storage: {shown} is not a database URL (expected e.g. postgresql://user:password@host:5432/db): "
            f"{redact_text(str(error), url)}"
        ) from None
    engine_kwargs: dict = {"pool_pre_ping": True}  # survive a restarted database between trials
    if dialect == "postgresql":
        engine_kwargs["connect_args"] = {"connect_timeout": 15}
    try:
        storage = RedactedRDBStorage(url, engine_kwargs=engine_kwargs)
    except ImportError as error:
        hint = _DRIVER_HINTS.get(dialect, "the database driver SQLAlchemy names")
        raise StorageError(
            f"search.storage: {shown} needs a database driver that is not installed; install {hint} "
            f"({redact_text(str(error.__cause__ or error), url)})"
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as error:
        reason = " ".join(
            line.strip() for line in redact_text(str(getattr(error, "orig", None) or error), url).strip().splitlines()[:3]
        )
        raise StorageError(
            f"cannot use the study storage {shown}: {reason}"
            + (
                " (the run's spec.toml keeps the URL without its password: pass --storage with the "
                "password, or set PGPASSWORD / ~/.pgpass)"
                if password_dropped and "password" in reason.lower()
                else ""
            )
        ) from None
    _OPENED_URLS[redact_url(url)] = url
    return storage


def storage_description(url: str, journal_path: str | Path) -> str:
    """How to reach the storage, for messages and provenance (passwords masked)."""
    return redact_url(url) if url else str(journal_path)


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
