"""Beyond one machine, with real processes: a two-node Ray cluster started with ``ray start``
(head on 127.0.0.2, worker on 127.0.0.3, each one CPU, its own temp dir, ports and token) and a
real PostgreSQL server (Debian's package, a throwaway data directory, password auth on
127.0.0.1). The driver is ``python -m hpo`` in a subprocess joining with ``--address`` and
keeping its studies in PostgreSQL with ``--storage``.

Run as root (as CI does), the worker node lives in its own mount namespace where the runs
directory and the OpenML data are hidden under an empty tmpfs, as on a separate machine: trial
data can only reach it through Ray's object store, and results only come back through the
driver. Only processes started here are stopped (their process groups), never ``ray stop``.

A machine without PostgreSQL's server programs fails these tests with the command that installs
them (``apt-get install -y postgresql``); see the README's "Running on a cluster".
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.loopback import LocalPostgres, LocalRayCluster, ServiceError
from hpo.rundir import RunDir, read_jsonl
from hpo.storage import INTERRUPTED_ATTR, REDACTED, StorageError, rdb_storage, redact_text, redact_url

REPO = Path(__file__).resolve().parents[1]
TASK = "QSAR_fish_toxicity"
CAN_HIDE = os.geteuid() == 0 and shutil.which("unshare") is not None


# --------------------------------------------------------------------------- services


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server for this module; a machine that cannot start one fails, not skips."""
    try:
        server = LocalPostgres.start()
    except ServiceError as error:
        pytest.fail(f"cannot start PostgreSQL for the storage tests: {error}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runs_root():
    root = Path(tempfile.mkdtemp(prefix="hpo-cluster-runs-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(mirror, runs_root):
    """Head (1 CPU) and one worker (1 CPU) on loopback; the worker blind to the run and data folders."""
    root = Path(tempfile.mkdtemp(prefix="hc", dir="/tmp"))  # short: Ray's socket paths
    hidden = (runs_root, os.environ["HPO_OPENML_CACHE"], mirror) if CAN_HIDE else ()
    nodes = LocalRayCluster(root)
    try:
        nodes.start_head(cpus=1)
        nodes.add_worker(cpus=1, hidden=hidden)
        nodes.wait_for_nodes()
        yield nodes
    finally:
        nodes.stop()
        shutil.rmtree(root, ignore_errors=True)


def start_driver(cluster: LocalRayCluster, argv: list[str], log: Path) -> subprocess.Popen:
    """``python -m hpo ARGV --address`` the cluster, in its own process group, output to ``log``."""
    with open(log, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "hpo", *argv, "--address", cluster.address],
            cwd=REPO,
            env=cluster.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def run_driver(cluster: LocalRayCluster, argv: list[str], log: Path, timeout: float = 420) -> int:
    driver = start_driver(cluster, argv, log)
    try:
        return driver.wait(timeout=timeout)
    finally:
        kill_driver(driver)


def kill_driver(driver: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(driver.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        driver.wait(timeout=30)


def files_containing(secret: str, *folders: Path) -> list[Path]:
    """Every file under ``folders`` whose bytes contain ``secret``."""
    needle = secret.encode()
    found = []
    for folder in folders:
        for path in Path(folder).rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                    found.append(path)
    return found


def db_trials(url: str, study_name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study_name, storage=url).get_trials(deepcopy=False)


# --------------------------------------------------------------------------- redaction (no Ray)


@pytest.mark.parametrize(
    "url, expected",
    [
        ("postgresql://hpo:s3cret@db.example:5432/studies", "postgresql://hpo:***@db.example:5432/studies"),
        ("postgresql+psycopg://hpo:p%40ss%2Fw@10.0.0.5/db", "postgresql+psycopg://hpo:***@10.0.0.5/db"),
        ("postgresql://db/studies?user=hpo&password=s3cret&sslmode=require", "postgresql://db/studies?user=hpo&password=***&sslmode=require"),
        ("postgresql://hpo@db/studies", "postgresql://hpo@db/studies"),  # no password: nothing to hide
        ("sqlite:///runs/optuna.db", "sqlite:///runs/optuna.db"),
        ("", ""),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_redact_text_masks_a_known_password_wherever_it_appears():
    url = "postgresql://hpo:p%40ss@db/studies"
    text = "connect failed for p@ss (p%40ss) via postgresql://hpo:p%40ss@db/studies and mysql://u:other@h/d"
    assert redact_text(text, url) == (
        "connect failed for *** (***) via postgresql://hpo:***@db/studies and mysql://u:***@h/d"
    )


def test_provenance_keeps_no_password(tmp_path):
    from hpo.provenance import Provenance
    from hpo.spec import parse_spec

    url = "postgresql://hpo:pa%24%24word@db:5432/studies"
    spec = parse_spec({"study": {"tasks": [TASK]}, "search": {"storage": url}})
    provenance = Provenance(RunDir(tmp_path))
    provenance.start_session(["python", "-m", "hpo", "sweep", "s.toml", "--storage", url, f"--set=search.storage={url}"], spec, url)
    text = (tmp_path / "provenance.json").read_text()
    assert "pa%24%24word" not in text and "pa$$word" not in text
    assert json.loads(text)["storage"] == "postgresql://hpo:***@db:5432/studies"


def test_a_wrong_password_is_one_masked_line(postgres):
    wrong = postgres.url.replace(postgres.password, "not-the-password")
    with pytest.raises(StorageError) as caught:
        rdb_storage(wrong)
    message = str(caught.value)
    assert "password authentication failed" in message and "\n" not in message
    assert "not-the-password" not in message and f":{REDACTED}@127.0.0.1:{postgres.port}/" in message


def test_the_storage_pickles_without_its_password(postgres):
    """Ray Tune pickles its searcher, and so the storage, into the run directory."""
    storage = rdb_storage(postgres.url)
    data = pickle.dumps(storage)
    assert postgres.password.encode() not in data
    again = pickle.loads(data)  # in this process it reconnects with the password it had
    optuna.create_study(study_name="pickle-check", storage=again).optimize(lambda t: t.suggest_float("x", 0, 1), 2)
    assert len(db_trials(postgres.url, "pickle-check")) == 2


# --------------------------------------------------------------------------- two nodes + PostgreSQL

TWO_NODE_SETS = [
    f'study.tasks=["{TASK}"]',
    'study.variants=["ltc_mhn"]',
    'study.baselines=["xgboost", "ridge"]',
    "search.max_concurrent_trials=2",  # one CPU per node: two trials at once need both nodes
    "search.trials=4",
    "search.xgboost_trials=4",
    "training.max_epochs=3",
]


def test_smoke_spec_on_two_nodes_with_postgres(cluster, postgres, runs_root, tmp_path):
    """studies/smoke.toml (one task, shortened) on the two-node cluster with the studies in PostgreSQL."""
    name = "two-node"
    log = tmp_path / "driver.log"
    argv = ["sweep", str(REPO / "studies" / "smoke.toml"), "--name", name, "--runs-dir", str(runs_root)]
    argv += ["--storage", postgres.url, "-q"]
    for item in TWO_NODE_SETS:
        argv += ["--set", item]
    code = run_driver(cluster, argv, log)
    output = log.read_text(errors="replace")
    assert code == 0, output
    run = RunDir(runs_root / name)

    # every result file is on the driver, though the worker could not see this folder
    results = run.read_results()
    assert sorted(results["variant"]) == ["ltc_mhn", "ridge", "xgboost"] and (results["status"] == "ok").all()
    for row in results.itertuples():
        assert (run.root / row.model_file).is_file() and (run.root / row.predictions_file).is_file()
    assert not run.journal_file.exists()  # the studies are in PostgreSQL

    # trials ran on both nodes (Ray's node id recorded per trial), none failed
    trials = run.read_trials()
    assert len(trials) == 8 and set(trials["state"]) <= {"COMPLETE", "PRUNED"}, trials[["variant", "state", "error"]]
    head, worker = cluster.nodes
    assert set(trials["node_id"]) == {head.node_id, worker.node_id}
    if CAN_HIDE:
        assert f"node(s) {worker.ip} do not see" in output

    # every trial is in the database, as the trial table has it
    summaries = optuna.get_all_study_summaries(postgres.url)
    names = {s.study_name for s in summaries if s.study_name.startswith(f"{name}/")}
    assert names == {f"{name}/{TASK}/{variant}/fold0/seed0" for variant in ("ltc_mhn", "xgboost")}
    state_names = {TrialState.COMPLETE: "COMPLETE", TrialState.PRUNED: "PRUNED", TrialState.FAIL: "FAILED"}
    for study_name in names:
        variant = study_name.split("/")[2]
        in_db = {t.number: state_names[t.state] for t in db_trials(postgres.url, study_name)}
        table = trials[trials["variant"] == variant]
        assert in_db == dict(zip(table["trial_number"], table["state"]))

    # the password is nowhere: not in the run directory (spec.toml, provenance.json, Ray's
    # experiment state and pickled searcher), not in the driver's output, not in Ray's logs
    assert postgres.password not in output
    assert files_containing(postgres.password, run.root, cluster.root) == []
    assert f'storage = "{redact_url(postgres.url)}"' in run.spec_file.read_text()
    provenance = json.loads(run.provenance_file.read_text())
    assert provenance["storage"] == redact_url(postgres.url)
    (session,) = provenance["sessions"]
    assert {node["ip"] for node in session["ray"]["nodes"]} == {head.ip, worker.ip}


# --------------------------------------------------------------------------- losing a node, then the driver

LOSS_SPEC = f"""
[study]
name = "loss"
tasks = ["{TASK}"]
variants = ["ltc_mhn"]
baselines = ["xgboost"]
folds = 1

[search]
trials = 6
xgboost_trials = 6
max_concurrent_trials = 2
startup_trials = 2

[scheduler]
type = "fifo"

[training]
max_epochs = 40
patience = 40
batch_size = 128

[failure]
max_retries = 1
"""


def wait_for(condition, timeout: float, what: str, driver: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + timeout
    while not condition():
        if driver.poll() is not None:
            pytest.fail(f"the driver ended (exit {driver.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        if time.time() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


def trial_in_flight_on(node_id: str, ray_root: Path, since: float, before_epoch: int = 30) -> bool:
    """Whether a neural trial started after ``since`` last reported from ``node_id``, not done,
    before ``before_epoch`` (Ray Tune's result.json in the driver's staging folder, in the Ray
    session folder of the head)."""
    for path in ray_root.glob("*/session_*/artifacts/*/*/driver_artifacts/trial*/result.json"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if path.stat().st_mtime < since:
                continue
            last = json.loads(path.read_text().strip().splitlines()[-1])
            if (
                last.get("node_id") == node_id
                and "beta" in last.get("config", {})
                and not last.get("done")
                and last.get("epoch", before_epoch) < before_epoch
            ):
                return True
    return False


def test_losing_the_worker_then_the_driver(cluster, postgres, runs_root, tmp_path):
    """SIGKILL the worker node mid-search: its trial is retried on the head and the search
    finishes. SIGKILL the driver mid-way through the next search: ``resume`` against the same
    cluster and database finishes the plan, no trial lost or duplicated. (Runs last: it kills
    the module's worker node.)"""
    head, worker = cluster.nodes
    spec = tmp_path / "loss.toml"
    spec.write_text(LOSS_SPEC)
    name = "loss"
    run = RunDir(runs_root / name)
    log = tmp_path / "driver.log"
    first_log = run.ray_dir / TASK / "ltc_mhn" / "fold0_seed0" / "trial_log.jsonl"
    second_log = run.ray_dir / TASK / "xgboost" / "fold0_seed0" / "trial_log.jsonl"
    started = time.time()
    driver = start_driver(cluster, ["sweep", str(spec), "--name", name, "--runs-dir", str(runs_root), "--storage", postgres.url], log)
    try:
        # a trial in its first epochs on the worker (Ray Tune's result.json, written by the driver)
        wait_for(lambda: trial_in_flight_on(worker.node_id, cluster.root, started), 300, "trial running on the worker", driver, log)
        worker.kill()
        killed_at = len(read_jsonl(first_log))
        # the first search finishes on the head; kill the driver once the second has a finished trial
        wait_for(lambda: len(read_jsonl(second_log)) >= 1, 300, "finished trial of the second search", driver, log)
        kill_driver(driver)
    finally:
        kill_driver(driver)
    first_output = log.read_text(errors="replace")

    results = run.read_results()
    assert list(results["variant"]) == ["ltc_mhn"] and results["status"].item() == "ok"
    assert results["n_trials"].item() == 6
    records = read_jsonl(first_log)
    assert len(records) == 6 and len({r["trial_number"] for r in records}) == 6
    after = records[killed_at:]
    assert after and all(r["node_id"] == head.node_id for r in after), "a trial ran on the dead node"
    lost = [r for r in records if r.get("retries") or "died" in str(r.get("error"))]
    assert lost, "no trial was hit by the node loss:\n" + first_output[-3000:]
    if CAN_HIDE:  # the worker could not see the run directory: no checkpoints, a retry starts afresh
        assert "lost its worker process; retry 1 from the start" in first_output

    second = f"{name}/{TASK}/xgboost/fold0/seed0"
    before = {t.number: (t.state, t.params, t.value) for t in db_trials(postgres.url, second) if t.state.is_finished()}
    assert 1 <= len(before) < 6 and "xgboost" not in set(run.read_results()["variant"])  # killed mid-search

    code = run_driver(cluster, ["resume", str(run.root), "--storage", postgres.url, "-q"], log)
    output = log.read_text(errors="replace")
    assert code == 0, output[-4000:]
    assert postgres.password not in output

    results = run.read_results()
    assert sorted(results["variant"]) == ["ltc_mhn", "xgboost"] and (results["status"] == "ok").all()
    trials = run.read_trials()
    assert not trials.duplicated(["variant", "trial_number"]).any()
    for variant in ("ltc_mhn", "xgboost"):
        study = db_trials(postgres.url, f"{name}/{TASK}/{variant}/fold0/seed0")
        assert not [t for t in study if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        real = {t.number for t in study if not t.user_attrs.get(INTERRUPTED_ATTR)}
        table = trials[trials["variant"] == variant]
        assert len(table) == 6 and set(table["trial_number"]) == real  # nothing lost, nothing extra
    for number, record in before.items():  # finished before the kill: kept as it was
        (trial,) = [t for t in db_trials(postgres.url, second) if t.number == number]
        assert (trial.state, trial.params, trial.value) == record
    assert sorted(r["trial_number"] for r in read_jsonl(second_log)) == sorted(
        trials[trials["variant"] == "xgboost"]["trial_number"]
    ), "a trial of the second search ran twice or was lost"
