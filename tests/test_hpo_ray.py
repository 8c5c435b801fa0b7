"""Integration through real Ray and real Optuna on two small mirror tasks: a whole sweep produces
every file of the run-directory layout with sane values, a deliberately failing variant is
recorded without stopping the sweep, a GPU request without a GPU is refused, and a driver
killed with SIGKILL mid-run resumes with no finished trial repeated or lost.

One Ray instance is shared by the tests of this module (the killed driver runs its own).
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

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from hpo.__main__ import main
from hpo.plan import WorkItem
from hpo.rundir import RunDir, read_jsonl
from hpo.space import NEURAL_SPACE, default_point
from hpo.spec import load_spec, parse_spec
from hpo.storage import INTERRUPTED_ATTR, journal_storage
from model import native

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]
TASKS = {"concrete_compressive_strength": 1030, "QSAR_fish_toxicity": 908}

E2E_SPEC = """
[study]
name = "e2e"
tasks = ["concrete_compressive_strength", "QSAR_fish_toxicity"]
variants = ["ltc_mhn", "ltc"]
baselines = ["ridge"]
folds = 1
seeds = [0]

[search]
trials = 2
max_concurrent_trials = 1
startup_trials = 1

[scheduler]
type = "asha"
grace_period = 1
reduction_factor = 2

[training]
max_epochs = 3
patience = 2
batch_size = 128

[one_at_a_time]
values = [0.1, 1.0]
variants = ["ltc_mhn"]

[testing]
fail_variants = ["ltc"]   # every ltc trial raises: that search fails, the sweep goes on
fail_trials = [1]         # trial 1 of every search raises: recorded, the search goes on
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
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def e2e(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    spec_path = root / "e2e.toml"
    spec_path.write_text(E2E_SPEC)
    code, out, err = run_cli(["sweep", str(spec_path), "--name", "e2e", "--runs-dir", str(root / "runs"), "-q"])
    return {"code": code, "out": out, "err": err, "run": RunDir(root / "runs" / "e2e"), "spec": load_spec(spec_path)}


# --------------------------------------------------------------------------- end to end


def test_sweep_reports_its_failures(e2e):
    assert e2e["code"] == 1, e2e["out"] + e2e["err"]  # the deliberately failing variant
    summary = [line for line in e2e["out"].splitlines() if line.startswith("Run e2e:")][-1]
    assert "(8 ok, 2 failed)" in summary
    assert "8 trials, 6 failed" in summary  # ltc_mhn: trial 1 of 2 fails on purpose; ltc: both fail
    assert "ltc/fold0/seed0: all 2 trials failed" in e2e["out"]


def test_layout_is_complete(e2e):
    run = e2e["run"]
    for path in (run.spec_file, run.provenance_file, run.journal_file, run.trials_file, run.results_file):
        assert path.is_file(), path
    assert parse_spec(__import__("tomllib").loads(run.spec_file.read_text())) == e2e["spec"]
    for task in TASKS:
        search = run.ray_dir / task / "ltc_mhn" / "fold0_seed0"
        assert (search / "attempt1").is_dir() and len(read_jsonl(search / "trial_log.jsonl")) == 2
        assert (run.models_dir / task / "ltc_mhn" / "fold0_seed0.pt").is_file()
        assert (run.models_dir / task / "ridge" / "fold0_seed0.pt").is_file()
        assert (run.models_dir / task / "ltc_mhn" / "fold0_seed0_beta=0.1.pt").is_file()
        assert (run.predictions_dir / task / "ltc_mhn" / "fold0_seed0.parquet").is_file()
        assert not (run.models_dir / task / "ltc").exists()  # failed: no model


def test_provenance(e2e):
    provenance = json.loads(e2e["run"].provenance_file.read_text())
    assert {"torch", "ray", "optuna", "numpy"} <= set(provenance["packages"])
    assert provenance["sessions"][-1]["solver_kernel"] == native.describe()
    assert provenance["seeds"] == [0] and provenance["folds"] == [0]
    assert set(provenance["splits"]) == set(TASKS)
    for task, rows in TASKS.items():
        fold = provenance["splits"][task]["folds"]["fold0_seed0"]
        assert fold["n_train"] + fold["n_val"] + fold["n_test"] == rows
        assert provenance["splits"][task]["source"] in ("official", "reconstructed")
    (session,) = provenance["sessions"]
    assert session["started"] <= session["finished"]
    assert session["summary"]["failed"] == 2
    assert "commit" in provenance["git"] and provenance["host"]["hostname"]


def test_trials_table(e2e):
    trials = e2e["run"].read_trials()
    assert len(trials) == 2 * (2 + 2)
    assert not trials.duplicated(["task", "variant", "fold", "seed", "trial_number"]).any()
    failing = trials[trials["variant"] == "ltc"]
    assert (failing["state"] == "FAILED").all()
    assert failing["error"].str.contains("fails on purpose").all()
    assert failing["val_rmse"].isna().all() and failing["param_beta"].isna().all()
    searched = trials[trials["variant"] == "ltc_mhn"]
    assert set(searched[searched["trial_number"] == 1]["state"]) == {"FAILED"}
    good = searched[searched["state"] != "FAILED"]
    assert set(good["state"]) <= {"COMPLETE", "PRUNED"} and len(good) == 2
    for row in good.itertuples():
        curve = list(row.val_rmse_curve)
        assert 1 <= row.epochs == len(curve) <= 3
        assert row.val_rmse == pytest.approx(min(curve)) and row.val_rmse > 0
        assert row.seconds > 0 and isinstance(row.node_id, str) and row.node_id
        assert 1e-2 <= row.param_beta <= 10 and row.param_hidden_size in (32, 64, 128)
        if row.state == "PRUNED":
            assert row.epochs < 3
    # the default configuration is trial 0 of every search
    first = searched[searched["trial_number"] == 0].iloc[0]
    assert {name: first[f"param_{name}"] for name in NEURAL_SPACE} == pytest.approx(default_point(NEURAL_SPACE))


def test_optuna_studies_can_be_loaded(e2e):
    storage = journal_storage(e2e["run"].journal_file)
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert names == {f"{task}/{variant}/fold0/seed0" for task in TASKS for variant in ("ltc_mhn", "ltc")}
    study = optuna.load_study(study_name="QSAR_fish_toxicity/ltc_mhn/fold0/seed0", storage=storage)
    assert [t.state == TrialState.FAIL for t in study.trials] == [False, True]
    trials = e2e["run"].read_trials()
    best = trials[(trials["task"] == "QSAR_fish_toxicity") & (trials["variant"] == "ltc_mhn")]["val_rmse"].min()
    completed = [t.value for t in study.trials if t.state == TrialState.COMPLETE]
    if completed:
        assert min(completed) >= best - 1e-12


def test_results_table(e2e):
    results = e2e["run"].read_results()
    trials = e2e["run"].read_trials()
    assert len(results) == 2 * (3 + 2)
    assert not results.duplicated(["task", "variant", "fold", "seed", "study", "oat_value"]).any()
    failed = results[results["status"] == "failed"]
    assert set(failed["variant"]) == {"ltc"} and len(failed) == 2
    assert failed["rmse"].isna().all() and failed["error"].str.contains("all 2 trials failed").all()
    ok = results[results["status"] == "ok"]
    for row in ok.itertuples():
        assert math.isfinite(row.rmse) and row.rmse > 0 and 0 < row.mae <= row.rmse and row.r2 < 1
        assert row.n_train + row.n_test == TASKS[row.task]
        assert row.splits in ("official", "reconstructed") and row.fit_seconds > 0
        json.loads(row.best_config)
    for task in TASKS:
        search = ok[(ok["task"] == task) & (ok["variant"] == "ltc_mhn") & (ok["study"] == "search")].iloc[0]
        task_trials = trials[(trials["task"] == task) & (trials["variant"] == "ltc_mhn")]
        assert search["n_trials"] == 2 and search["n_failed_trials"] == 1
        assert search["best_val_rmse"] == pytest.approx(task_trials["val_rmse"].min())
        best = json.loads(search["best_config"])
        assert set(best) == set(NEURAL_SPACE)
        oat = ok[(ok["task"] == task) & (ok["study"] == "one_at_a_time")]
        assert sorted(oat["oat_value"]) == [0.1, 1.0] and set(oat["oat_param"]) == {"beta"}
        for row in oat.itertuples():
            config = json.loads(row.best_config)
            assert config["beta"] == row.oat_value
            assert {k: v for k, v in config.items() if k != "beta"} == {k: v for k, v in best.items() if k != "beta"}


def test_predictions_and_models_agree_with_the_results(e2e):
    from hpo.data import load_task
    from model import load_model

    run = e2e["run"]
    results = run.read_results()
    for row in results[results["status"] == "ok"].itertuples():
        predictions = pd.read_parquet(run.root / row.predictions_file)
        assert len(predictions) == row.n_test and predictions["row_id"].is_unique
        data = load_task(row.task)
        np.testing.assert_allclose(predictions["y_true"], data.y.to_numpy()[predictions["row_id"]])
        error = predictions["y_true"] - predictions["y_pred"]
        assert math.sqrt(float(np.mean(error**2))) == pytest.approx(row.rmse, rel=1e-9)
        if row.variant == "ltc_mhn" and row.study == "search":
            pipeline, metadata = load_model(run.root / row.model_file)
            assert metadata["task"] == row.task and metadata["config"] == json.loads(row.best_config)
            reloaded = pipeline.predict(data.X.iloc[predictions["row_id"]])
            np.testing.assert_allclose(reloaded, predictions["y_pred"], rtol=1e-4, atol=1e-4 * data.y.std())


def test_report_of_the_sweep(e2e, tmp_path, capsys):
    """The analysis report of a run written by the search itself: every section, valid images.

    The e2e run is partial on purpose (every ltc search fails), which the report must show
    rather than crash on.
    """
    from analysis.__main__ import main as analysis_main
    from test_analysis_report import SECTIONS, _check_outputs

    out = tmp_path / "report"
    assert analysis_main(["report", str(e2e["run"].root), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("report.html")
    html = _check_outputs(out, out / "report.html")
    for title in SECTIONS:
        assert f">{title}</h" in html, title
    assert list((out / "figures").glob("parity_*.png")), "no parity plot drawn"


def test_status_table(e2e):
    code, out, _ = run_cli(["status", str(e2e["run"].root)])
    assert code == 0
    assert "finished" in out and "items: 10 of 10 done (2 failed)" in out
    line = next(l for l in out.splitlines() if l.startswith("QSAR_fish_toxicity") and " ltc " in f" {l} ")
    cells = line.split()
    assert cells[2:4] == ["1/1", "(1"]  # one item, failed


# --------------------------------------------------------------------------- resources


def test_gpu_request_without_gpu_is_refused(ray_session, tmp_path):
    import ray

    assert ray.cluster_resources().get("GPU", 0) == 0
    spec_path = tmp_path / "gpu.toml"
    spec_path.write_text('[study]\ntasks = ["QSAR_fish_toxicity"]\nfolds = 1\n[resources]\ngpu = 0.25\n')
    signal.alarm(120)  # a hang would be the bug
    try:
        code, out, err = run_cli(["sweep", str(spec_path), "--name", "gpu", "--runs-dir", str(tmp_path / "runs")])
    finally:
        signal.alarm(0)
    assert code == 2
    assert "resources.gpu = 0.25" in err and "no GPU" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "gpu").exists()  # refused before anything was written


# --------------------------------------------------------------------------- resume after SIGKILL

KILL_SPEC = """
[study]
name = "killed"
tasks = ["QSAR_fish_toxicity"]
variants = ["ltc_mhn"]
folds = 1
seeds = [0]

[search]
trials = 5
max_concurrent_trials = 2
startup_trials = 1

[scheduler]
type = "fifo"

[training]
max_epochs = 12
patience = 12
batch_size = 128
"""


def finished_snapshot(journal: Path) -> dict[tuple[str, int], tuple]:
    storage = journal_storage(journal)
    snapshot = {}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for trial in study.trials:
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
                snapshot[(summary.study_name, trial.number)] = (trial.state, trial.params, trial.value)
    return snapshot


def test_resume_after_sigkill(ray_session, tmp_path):
    """Kill the driver (SIGKILL) once a trial of its search has finished; resume finishes the search.

    The driver joins this module's Ray instance with --address (as on a cluster): killing it ends
    its job, and its trials with it, while Ray itself stays up.
    """
    import ray

    spec_path = tmp_path / "killed.toml"
    spec_path.write_text(KILL_SPEC)
    runs = tmp_path / "runs"
    run = RunDir(runs / "killed")
    item = WorkItem("QSAR_fish_toxicity", "ltc_mhn", 0, 0, 0, "search")
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen(
        [sys.executable, "-m", "hpo", "sweep", str(spec_path), "--name", "killed", "--runs-dir", str(runs)]
        + ["--address", ray.get_runtime_context().gcs_address],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, cleaned up below
    )
    deadline = time.time() + 400
    try:
        while time.time() < deadline and driver.poll() is None and not read_jsonl(run.trial_log(item)):
            time.sleep(0.2)
        assert driver.poll() is None, "the driver ended before it could be killed:\n" + (tmp_path / "driver.log").read_text()
        assert time.time() < deadline, "the driver made no progress"
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
        log.close()
    before = finished_snapshot(run.journal_file)
    assert before and run.read_results().empty  # killed mid-search
    name = item.study_name
    storage = journal_storage(run.journal_file)
    assert any(t.state == TrialState.RUNNING for t in optuna.load_study(study_name=name, storage=storage).trials)

    code, out, _ = run_cli(["status", str(run.root)])  # readable with a search in flight
    assert code == 0 and "stopped" in out and "items: 0 of 1 done" in out
    cells = next(line for line in out.splitlines() if line.startswith("QSAR_fish_toxicity")).split()
    finished = sum(1 for (_, _n) in before)
    assert cells[2:5] == ["0/1", str(finished), "0"] and int(cells[5]) == 5 - finished

    code, out, err = run_cli(["resume", str(run.root), "-q"])
    assert code == 0, out + err
    assert "marked" in out and "left running by an interrupted driver" in out

    results = run.read_results()
    assert len(results) == 1 and results["status"].item() == "ok" and results["n_trials"].item() == 5
    study = optuna.load_study(study_name=name, storage=journal_storage(run.journal_file))
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    interrupted = {t.number for t in study.trials if t.user_attrs.get(INTERRUPTED_ATTR)}
    assert interrupted and all(study.trials[n].state == TrialState.FAIL for n in interrupted)
    real = {t.number for t in study.trials} - interrupted
    trials = run.read_trials()
    assert len(trials) == 5 and set(trials["trial_number"]) == real  # nothing lost, nothing extra
    after = finished_snapshot(run.journal_file)
    for key, record in before.items():  # nothing finished before the kill was changed
        assert after[key] == record
    numbers = [r["trial_number"] for r in read_jsonl(run.trial_log(item))]
    assert sorted(numbers) == sorted(real), "a finished trial ran twice or was lost"
    by_number = trials.set_index("trial_number")
    assert all(by_number.loc[number, "attempt"] == 1 for (_, number) in before)  # kept from the killed session
    attempts = sorted(p.name for p in run.search_dir(item).glob("attempt*"))
    assert attempts == ["attempt1", "attempt2"]
    provenance = json.loads(run.provenance_file.read_text())
    assert len(provenance["sessions"]) == 2 and provenance["sessions"][0]["finished"] is None
