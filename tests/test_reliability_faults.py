"""Faults inside a sweep, through real Ray and real Optuna: a trial's worker process killed with
SIGKILL (retried from its last checkpoint, or recorded as failed when retries are off), trials that
raise, trials whose loss diverges, a search whose trials all fail, a task whose cached data file is
corrupted, a resource request the cluster cannot meet, two drivers on one run directory, and a
storage URL carrying a password. Each is survived, recorded with its error, and counted; no
finished trial is lost and no password is written.

One Ray instance (2 CPUs) is shared by the tests of this module; the drivers of the lock test run
as separate processes that join it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from hpo import data as data_layer
from hpo.__main__ import main
from hpo.plan import WorkItem
from hpo.rundir import RunDir, read_jsonl
from hpo.storage import journal_storage

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]
QSAR, CONCRETE = "QSAR_fish_toxicity", "concrete_compressive_strength"
CONCRETE_PARQUET = "org/openml/www/datasets/44959/dataset_44959.pq"

FAULTS_SPEC = f"""
[study]
name = "faults"
tasks = ["{CONCRETE}", "{QSAR}"]   # the first task's cached data file is corrupted
variants = ["ltc_mhn", "ltc"]
baselines = ["ridge"]
folds = 1

[search]
trials = 5
max_concurrent_trials = 1
startup_trials = 1

[scheduler]
type = "fifo"

[training]
max_epochs = 3
patience = 3
batch_size = 128

[failure]
max_retries = 1

[testing]
fail_variants = ["ltc"]   # every ltc trial raises: that search fails
fail_trials = [1]         # trial 1 raises
diverge_trials = [2]      # trial 2 trains at a learning rate whose loss becomes NaN
kill_trials = [0]         # trial 0's worker process is SIGKILLed in epoch 2 (once)
kill_epoch = 2
"""


@pytest.fixture(scope="module")
def ray_session(mirror):
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    if started:
        ray.shutdown()


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), mock.patch.object(sys, "argv", ["hpo", *argv]):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def own_lines(text: str) -> str:
    """The driver's own output, without what Ray forwards from its worker processes (tagged
    "(train_model pid=...)"; Ray's actor teardown sometimes prints an ignored SystemExit there)."""
    return "\n".join(line for line in text.splitlines() if " pid=" not in line.split(")")[0])


@pytest.fixture(scope="module")
def faults(ray_session, tmp_path_factory):
    """The faults sweep, with concrete_compressive_strength's cached parquet file truncated."""
    root = tmp_path_factory.mktemp("faults")
    cache = root / "cache"
    saved = os.environ.get("HPO_OPENML_CACHE")
    os.environ["HPO_OPENML_CACHE"] = str(cache)
    data_layer._load_cached.cache_clear()
    try:
        data_layer.ensure_available(CONCRETE)
        parquet = cache / CONCRETE_PARQUET
        content = parquet.read_bytes()
        parquet.write_bytes(content[: len(content) // 3])
        spec = root / "faults.toml"
        spec.write_text(FAULTS_SPEC)
        code, out, err = run_cli(["sweep", str(spec), "--name", "faults", "--runs-dir", str(root / "runs")])
    finally:
        if saved is None:
            os.environ.pop("HPO_OPENML_CACHE", None)
        else:
            os.environ["HPO_OPENML_CACHE"] = saved
        data_layer._load_cached.cache_clear()
    return {"code": code, "out": out, "err": err, "run": RunDir(root / "runs" / "faults")}


def test_the_sweep_survives_and_counts_every_fault(faults):
    out = faults["out"]
    assert faults["code"] == 1, out + faults["err"]  # some items failed: exit code 1
    assert "Traceback" not in own_lines(out + faults["err"])
    summary = [line for line in out.splitlines() if line.startswith("Run faults:")][-1]
    # concrete: 3 items failed on its data; QSAR: ltc_mhn and ridge ok, ltc failed (all trials raise)
    assert "6 of 6 items run this session (2 ok, 4 failed)" in summary
    assert "10 trials, 7 failed" in summary  # ltc_mhn: trial 1 raised, trial 2 diverged; ltc: 5 raised


def test_a_corrupted_data_file_fails_its_task_only_and_says_how_to_refetch(faults):
    results = faults["run"].read_results()
    concrete = results[results["task"] == CONCRETE]
    assert len(concrete) == 3 and (concrete["status"] == "failed").all()
    for error in concrete["error"]:
        assert "DataCorruptError" in error and "dataset_44959.pq" in error
        assert f"python -m hpo data fetch --task {CONCRETE} --refresh" in error
        assert "\n" not in error
    qsar = results[results["task"] == QSAR].set_index("variant")
    assert qsar.loc["ltc_mhn", "status"] == "ok" and qsar.loc["ridge", "status"] == "ok"
    assert math.isfinite(qsar.loc["ltc_mhn", "rmse"]) and math.isfinite(qsar.loc["ridge", "rmse"])
    assert f"python -m hpo data fetch --task {CONCRETE} --refresh" in faults["out"]  # told on the console
    assert "DataCorruptError" in (faults["run"].root / "errors.log").read_text()


def test_raising_and_diverging_trials_are_recorded_with_their_error(faults):
    trials = faults["run"].read_trials()
    searched = trials[trials["variant"] == "ltc_mhn"].set_index("trial_number").sort_index()
    assert list(searched.index) == [0, 1, 2, 3, 4]
    assert searched.loc[1, "state"] == "FAILED"
    assert "InjectedFailure: testing.fail_trials includes trial 1" in searched.loc[1, "error"]
    assert searched.loc[2, "state"] == "FAILED"
    assert "NonFiniteLossError" in searched.loc[2, "error"] and "non-finite" in searched.loc[2, "error"]
    for number in (1, 2):
        assert math.isnan(searched.loc[number, "val_rmse"])
    for number in (0, 3, 4):
        assert searched.loc[number, "state"] == "COMPLETE" and pd.isna(searched.loc[number, "error"])
        assert searched.loc[number, "epochs"] == 3 and searched.loc[number, "val_rmse"] > 0
    # Optuna agrees, and keeps the error line
    storage = journal_storage(faults["run"].journal_file)
    study = optuna.load_study(study_name=f"{QSAR}/ltc_mhn/fold0/seed0", storage=storage)
    states = {t.number: t.state for t in study.trials}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.FAIL, 2: TrialState.FAIL, 3: TrialState.COMPLETE, 4: TrialState.COMPLETE}
    assert "NonFiniteLossError" in study.trials[2].user_attrs["error"]
    results = faults["run"].read_results().set_index(["task", "variant"])
    assert results.loc[(QSAR, "ltc_mhn"), "n_trials"] == 5 and results.loc[(QSAR, "ltc_mhn"), "n_failed_trials"] == 2


def test_a_search_whose_trials_all_fail_is_a_failed_item(faults):
    results = faults["run"].read_results().set_index(["task", "variant"])
    row = results.loc[(QSAR, "ltc")]
    assert row["status"] == "failed" and "all 5 trials failed" in row["error"] and "fails on purpose" in row["error"]
    assert row["n_trials"] == 5 and row["n_failed_trials"] == 5 and math.isnan(row["rmse"])
    assert not (faults["run"].models_dir / QSAR / "ltc").exists()
    # the sweep moved on: the baseline after it ran
    assert results.loc[(QSAR, "ridge"), "status"] == "ok"


def test_a_killed_worker_is_retried_from_its_checkpoint(faults):
    """Trial 0's worker SIGKILLs itself in epoch 2; Ray restarts the trial from the checkpoint of
    epoch 1, and the curve it reaches equals an uninterrupted fit of the same configuration."""
    from hpo.data import load_task, make_fold
    from hpo.estimators import FitSettings, build_estimator, fit_estimator
    from hpo.space import NEURAL_SPACE, default_point

    run = faults["run"]
    trials = run.read_trials().set_index(["variant", "trial_number"])
    trial = trials.loc[("ltc_mhn", 0)]
    assert trial["state"] == "COMPLETE" and trial["retries"] == 1
    assert "trial   0 lost its worker process; retry 1 from its checkpoint after epoch 1" in faults["out"]

    item = WorkItem(QSAR, "ltc_mhn", 0, 0, 0, "search")
    (trial_dir,) = [p for p in (run.search_dir(item) / "attempt1").iterdir() if p.name.startswith("trial0000")]
    assert (trial_dir / "killed_on_purpose").is_file()
    reported = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    epochs = [r["epoch"] for r in reported]
    assert epochs == [1, 2, 3], epochs  # epoch 1 was not trained again: the retry started from its checkpoint
    assert reported[0]["pid"] != reported[1]["pid"]  # epochs 2-3 ran in a new worker process

    # reference: the same configuration fitted without interruption, here in the test process
    fold = make_fold(load_task(QSAR), fold=0, seed=0, validation_fraction=0.1)
    settings = FitSettings("ltc_mhn", max_epochs=3, patience=3, batch_size=128, seed=0, n_threads=1)
    estimator = build_estimator(settings, default_point(NEURAL_SPACE))
    fit_estimator(estimator, settings, fold.X_train, fold.y_train, fold.X_val, fold.y_val)
    reference = [record["val_rmse"] for record in estimator.history_]
    assert list(trial["val_rmse_curve"]) == pytest.approx(reference, rel=1e-6)


# --------------------------------------------------------------------------- retries off, a password


def test_without_retries_a_killed_worker_fails_its_trial_and_no_password_is_written(ray_session, tmp_path):
    """max_retries = 0: the killed trial is FAILED with the worker's death as its error and the
    search goes on. The run's storage URL carries a password (SQLite ignores it): it appears in no
    file of the run directory, in no output, and in none of Ray's session logs."""
    import ray

    secret = "S3cretXYZ42"
    url = f"sqlite:///file:{tmp_path / 'optuna.db'}?mode=rwc&password={secret}&uri=true"
    spec = tmp_path / "retries.toml"
    spec.write_text(
        f'[study]\nname = "noretry"\ntasks = ["{QSAR}"]\nvariants = ["ltc_mhn"]\nbaselines = ["ridge"]\nfolds = 1\n'
        "[search]\ntrials = 3\nmax_concurrent_trials = 1\nstartup_trials = 1\n[scheduler]\ntype = \"fifo\"\n"
        "[training]\nmax_epochs = 2\npatience = 2\nbatch_size = 128\n[failure]\nmax_retries = 0\n"
        "[testing]\nkill_trials = [1]\nkill_epoch = 1\n"
    )
    runs = tmp_path / "runs"
    code, out, err = run_cli(
        ["sweep", str(spec), "--name", "noretry", "--runs-dir", str(runs), "--set", f'search.storage="{url}"', "-q"]
    )
    assert code == 0, out + err  # a failed trial is not a failed item
    run = RunDir(runs / "noretry")
    trials = run.read_trials().set_index("trial_number").sort_index()
    assert list(trials.index) == [0, 1, 2]
    assert trials.loc[1, "state"] == "FAILED" and "worker process died" in trials.loc[1, "error"]
    assert trials.loc[0, "state"] == "COMPLETE" and trials.loc[2, "state"] == "COMPLETE"
    results = run.read_results().set_index("variant")
    assert results.loc["ltc_mhn", "status"] == "ok" and results.loc["ltc_mhn", "n_failed_trials"] == 1
    study = optuna.load_study(study_name=f"noretry/{QSAR}/ltc_mhn/fold0/seed0", storage=url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]

    # resume reads the masked URL back from spec.toml (SQLite needs no password): nothing to do
    code, out2, err2 = run_cli(["resume", str(run.root), "-q"])
    assert code == 0 and "2 already done" in out2, out2 + err2
    code, out3, err3 = run_cli(["resume", str(run.root), "--storage", f"sqlite:///other.db?password={secret}"])
    assert code == 2 and "another database" in err3

    assert "password=***" in run.spec_file.read_text()
    provenance = json.loads(run.provenance_file.read_text())
    assert any("password=***" in part for part in provenance["sessions"][0]["command"])
    leaks = [p for p in run.root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaks, f"the password was written to {leaks}"
    assert secret not in out + err + out2 + err2 + out3 + err3
    session = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    leaks = [p for p in session.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaks, f"the password reached Ray's logs: {leaks}"


# --------------------------------------------------------------------------- refused before starting


def test_more_cpus_per_trial_than_any_node_has_is_refused(ray_session, tmp_path):
    spec = tmp_path / "cpu.toml"
    spec.write_text(f'[study]\ntasks = ["{QSAR}"]\nfolds = 1\n[resources]\ncpu = 64\n')
    code, out, err = run_cli(["sweep", str(spec), "--name", "cpu", "--runs-dir", str(tmp_path / "runs")])
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "resources.cpu = 64" in line and "more than 2 CPUs" in line
    assert not (tmp_path / "runs" / "cpu").exists()  # nothing written


LOCK_SPEC = f"""
[study]
name = "locked"
tasks = ["{QSAR}"]
variants = ["ltc_mhn"]
folds = 1

[search]
trials = 40
max_concurrent_trials = 1

[scheduler]
type = "fifo"

[training]
max_epochs = 2
batch_size = 128
"""


def test_a_second_driver_on_the_same_run_directory_is_refused(ray_session, tmp_path):
    """Driver 1 runs the directory; `resume` and a `sweep` of the same name, started as other
    processes meanwhile, refuse in one line (exit 2) without touching the run's files."""
    import ray

    spec = tmp_path / "locked.toml"
    spec.write_text(LOCK_SPEC)
    runs = tmp_path / "runs"
    run = RunDir(runs / "locked")
    sweep = [sys.executable, "-m", "hpo", "sweep", str(spec), "--name", "locked", "--runs-dir", str(runs), "-q"]
    log = open(tmp_path / "driver1.log", "w")
    first = subprocess.Popen(
        sweep + ["--address", ray.get_runtime_context().gcs_address],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and first.poll() is None and not (
            run.provenance_file.exists() and run.is_running()
        ):
            time.sleep(0.2)
        assert first.poll() is None and run.is_running(), (tmp_path / "driver1.log").read_text()
        holder = run.lock_file.read_text()
        assert f"pid {first.pid}" in holder
        spec_before = run.spec_file.read_bytes()
        for argv, expected in (
            ([sys.executable, "-m", "hpo", "resume", str(run.root)], f"is being run by pid {first.pid}"),
            (sweep, "is being run by pid"),  # the same name while it runs: refused by the lock
        ):
            second = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stdout + second.stderr
            (line,) = second.stderr.strip().splitlines()
            assert line.startswith("error: ") and expected in line, line
            assert "Traceback" not in second.stdout + second.stderr
        assert first.poll() is None and run.is_running()
        sessions = json.loads(run.provenance_file.read_text())["sessions"]
        assert [s["pid"] for s in sessions] == [first.pid]  # no session of the refused drivers
        assert run.spec_file.read_bytes() == spec_before
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
        log.close()
    # after the first driver is gone, a new sweep of that name is refused too (the run exists)
    code, out, err = run_cli(sweep[3:-1])
    assert code == 2 and "already holds a run" in err
    # the journal the killed driver left loads, and only its trials are in it
    storage = journal_storage(run.journal_file)
    (summary,) = optuna.get_all_study_summaries(storage)
    assert summary.study_name == f"{QSAR}/ltc_mhn/fold0/seed0"


def test_an_unusable_database_url_is_refused_in_one_masked_line(ray_session, tmp_path):
    """A storage URL whose database cannot be reached: exit 2 before the run directory gets any
    file, and the password is neither printed nor written."""
    spec = tmp_path / "db.toml"
    spec.write_text(f'[study]\ntasks = ["{QSAR}"]\nfolds = 1\n')
    url = "postgresql://hpo:Secret4Db@127.0.0.1:1/optuna"
    code, out, err = run_cli(["sweep", str(spec), "--name", "db", "--runs-dir", str(tmp_path / "runs"), "--storage", url])
    assert code == 2, out + err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ") and "postgresql://hpo:***@127.0.0.1:1/optuna" in line
    assert "Secret4Db" not in out + err
    run = tmp_path / "runs" / "db"
    assert not run.exists() or not [p for p in run.rglob("*") if p.is_file() and b"Secret4Db" in p.read_bytes()]
    assert not (run / "spec.toml").exists()
