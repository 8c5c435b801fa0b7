"""A driver killed with SIGKILL at random points of a small sweep, three times in a row, each time
followed by ``python -m hpo resume``: the final run holds exactly the plan of an uninterrupted run
(every item once, every search with its planned number of finished trials, each trial once), no
trial finished before a kill is lost or changed, nothing is left RUNNING, and the Optuna journal
loads cleanly line by line.

The plan is compared, not parameter values: the resumed TPE sampler is re-seeded per attempt, so
configurations differ from an uninterrupted run's. The drivers are separate processes joining
this module's Ray instance (as on a cluster); each is killed with its whole process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.plan import build_plan, trials_for
from hpo.rundir import RunDir, read_jsonl
from hpo.spec import load_spec
from hpo.storage import INTERRUPTED_ATTR, journal_storage

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]
KILLS = 3
SEED = 20261203  # the kill points

SPEC = """
[study]
name = "kills"
tasks = ["QSAR_fish_toxicity"]
variants = ["ltc_mhn", "ltc"]
baselines = ["ridge"]
folds = 1
seeds = [0]

[search]
trials = 4
max_concurrent_trials = 2
startup_trials = 1

[scheduler]
type = "asha"
grace_period = 1
reduction_factor = 2

[training]
max_epochs = 2
patience = 2
batch_size = 128
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


def progress(run: RunDir, plan) -> int:
    """Finished trials logged plus items finished: grows as the sweep advances."""
    trials = sum(len(read_jsonl(run.trial_log(item))) for item in plan if item.kind == "search")
    return trials + len(run.read_results()) if run.results_file.exists() else trials


STALL_S = 300  # a driver whose run makes no progress on disk for this long is stuck, not slow
# Ray Tune rewrites these on a timer even while every trial hangs: they are not progress.
TIMER_FILES = ("experiment_state", "searcher-state", "search_gen_state", "basic-variant-state")


def activity(*paths: Path) -> tuple:
    """Sizes and modification times of the files under ``paths`` that change only when work gets
    done (journal, trial logs and results, checkpoints, the driver's log), however slowly."""
    files = [f for p in paths if p.exists() for f in ([p] if p.is_file() else p.rglob("*"))]
    files = [f for f in files if not f.name.startswith(TIMER_FILES)]
    return tuple(sorted((str(f), s.st_size, s.st_mtime_ns) for f in files if (s := _stat(f)) is not None))


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat() if path.is_file() else None
    except OSError:  # removed while we looked
        return None


def wait_while_working(driver: subprocess.Popen, done, log_path: Path, run: RunDir, what, limit_s: float = 1800) -> None:
    """Wait until ``done()`` or the driver exits. Fail with the driver's log once its run made no
    progress for :data:`STALL_S` seconds (a hang), or after ``limit_s`` in all (a backstop): a slow
    machine only makes the wait longer. ``what()`` names the driver in the failure."""
    seen = None
    started = changed = checked = time.monotonic()
    while driver.poll() is None and not done():
        time.sleep(0.1)
        if time.monotonic() - checked < 2.0:
            continue
        checked = time.monotonic()
        now = activity(run.root, log_path)
        if now != seen:
            seen, changed = now, checked
        assert checked - changed < STALL_S, f"{what()} made no progress for {STALL_S} s:\n{log_path.read_text()}"
        assert checked - started < limit_s, f"{what()} still running after {limit_s:.0f} s:\n{log_path.read_text()}"


@contextlib.contextmanager
def hpo_driver(arguments: list[str], log_path: Path):
    """``python -m hpo ARGUMENTS -q`` in a session of its own, output to ``log_path``; its whole
    process group is killed on the way out (a no-op once it has exited)."""
    with open(log_path, "w") as log:
        driver = subprocess.Popen(
            [sys.executable, "-m", "hpo", *arguments, "-q"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            yield driver
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(driver.pid, signal.SIGKILL)


def finished_trials(journal: Path) -> dict[tuple[str, int], tuple]:
    """(study, number) -> (state, params, value) of every trial that ran to its end."""
    storage = journal_storage(journal)
    snapshot = {}
    for summary in optuna.get_all_study_summaries(storage):
        for trial in optuna.load_study(study_name=summary.study_name, storage=storage).trials:
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) and not trial.user_attrs.get(INTERRUPTED_ATTR):
                snapshot[(summary.study_name, trial.number)] = (trial.state, trial.params, trial.value)
    return snapshot


def test_repeated_sigkill_and_resume_lose_and_duplicate_nothing(ray_session, tmp_path):
    import ray

    spec_path = tmp_path / "kills.toml"
    spec_path.write_text(SPEC)
    spec = load_spec(spec_path)
    plan = build_plan(spec)
    runs = tmp_path / "runs"
    run = RunDir(runs / "kills")
    address = ["--address", ray.get_runtime_context().gcs_address]
    rng = random.Random(SEED)
    total = sum(trials_for(spec, item) for item in plan) + len(plan)
    targets = sorted(rng.sample(range(0, total - 4), KILLS))  # progress at which to kill, then a random delay
    before_kills: list[dict] = []
    kills = []
    for cycle, target in enumerate(targets):
        command = (
            ["sweep", str(spec_path), "--name", "kills", "--runs-dir", str(runs)] if cycle == 0 else ["resume", str(run.root)]
        )
        cycle_started = time.time()
        log_path = tmp_path / f"driver{cycle}.log"
        with hpo_driver([*command, *address], log_path) as driver:
            wait_while_working(
                driver,
                lambda: run.is_running()
                and f"pid {driver.pid} " in run.lock_file.read_text()
                and run.spec_file.exists()
                and progress(run, plan) >= target,
                log_path, run, lambda: f"driver {cycle} (progress {progress(run, plan)}, target {target})",
            )
            time.sleep(rng.uniform(0.0, 2.0))
            assert driver.poll() is None, f"driver {cycle} ended before its kill:\n{log_path.read_text()}"
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=60)
        kills.append(progress(run, plan))
        print(f"cycle {cycle}: killed at progress {kills[-1]} after {time.time() - cycle_started:.1f} s", flush=True)
        before_kills.append(finished_trials(run.journal_file) if run.journal_file.exists() else {})
    assert len(kills) == KILLS and kills[-1] < total  # every kill landed mid-sweep

    log_path = tmp_path / "final.log"
    with hpo_driver(["resume", str(run.root), *address], log_path) as final:
        wait_while_working(final, lambda: False, log_path, run, lambda: "the last resume")
    assert final.returncode == 0, log_path.read_text()

    # the plan of an uninterrupted run, item by item
    results = run.read_results()
    assert sorted(map(tuple, results[["task", "variant", "fold", "seed", "study"]].values.tolist())) == sorted(
        (i.task, i.variant, i.fold, i.seed, i.study) for i in plan
    )
    assert (results["status"] == "ok").all(), results[["variant", "error"]]
    trials = run.read_trials()
    assert not trials.duplicated(["task", "variant", "fold", "seed", "trial_number"]).any()
    assert set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    storage = journal_storage(run.journal_file)
    for item in plan:
        if item.kind != "search":
            assert (run.root / results.set_index("variant").loc[item.variant, "model_file"]).is_file()
            continue
        rows = trials[(trials["task"] == item.task) & (trials["variant"] == item.variant)]
        assert len(rows) == trials_for(spec, item)  # exactly the planned trials, finished
        row = results.set_index("variant").loc[item.variant]
        assert row["n_trials"] == trials_for(spec, item) and row["n_failed_trials"] == 0
        study = optuna.load_study(study_name=item.study_name, storage=storage)
        assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        counted = {t.number for t in study.trials if not t.user_attrs.get(INTERRUPTED_ATTR)}
        assert set(rows["trial_number"]) == counted  # interrupted trials excluded, nothing else
        assert all(t.state == TrialState.FAIL for t in study.trials if t.user_attrs.get(INTERRUPTED_ATTR))

    # nothing finished before a kill was lost or changed
    after = finished_trials(run.journal_file)
    for snapshot in before_kills:
        for key, record in snapshot.items():
            assert after[key] == record, key

    # the journal is clean: every line a complete JSON record, and it reloads in a new process
    for number, line in enumerate(run.journal_file.read_text().splitlines(), start=1):
        json.loads(line), number
    names = {s.study_name for s in optuna.get_all_study_summaries(journal_storage(run.journal_file))}
    assert names == {item.study_name for item in plan if item.kind == "search"}
    sessions = json.loads(run.provenance_file.read_text())["sessions"]
    assert len(sessions) == KILLS + 1 and sessions[-1]["summary"]["failed"] == 0
    print(f"\nSIGKILL x{KILLS} at progress {kills} of {total}; {len(trials)} trials kept, 0 lost, 0 duplicated")
