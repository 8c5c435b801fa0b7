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
from hpo.rundir import RunDir, read_jsonl
from hpo.space import NEURAL_SPACE, default_point
from hpo.spec import load_spec, parse_spec
from hpo.storage import INTERRUPTED_ATTR, journal_storage

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
trials = 3
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
    assert "12 trials, 8 failed" in summary  # ltc_mhn: trial 1 of 3 fails on purpose; ltc: all 3 fail
    assert "ltc/fold0/seed0: all 3 trials failed" in e2e["out"]


def test_layout_is_complete(e2e):
    run = e2e["run"]
    for path in (run.spec_file, run.provenance_file, run.journal_file, run.trials_file, run.results_file):
        assert path.is_file(), path
    assert parse_spec(__import__("tomllib").loads(run.spec_file.read_text())) == e2e["spec"]
    for task in TASKS:
        search = run.ray_dir / task / "ltc_mhn" / "fold0_seed0"
        assert (search / "attempt1").is_dir() and len(read_jsonl(search / "trial_log.jsonl")) == 3
        assert (run.models_dir / task / "ltc_mhn" / "fold0_seed0.pt").is_file()
        assert (run.models_dir / task / "ridge" / "fold0_seed0.pt").is_file()
        assert (run.models_dir / task / "ltc_mhn" / "fold0_seed0_beta=0.1.pt").is_file()
        assert (run.predictions_dir / task / "ltc_mhn" / "fold0_seed0.parquet").is_file()
        assert not (run.models_dir / task / "ltc").exists()  # failed: no model


def test_provenance(e2e):
    provenance = json.loads(e2e["run"].provenance_file.read_text())
    assert {"torch", "ray", "optuna", "numpy"} <= set(provenance["packages"])
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
    assert len(trials) == 2 * (3 + 3)
    assert not trials.duplicated(["task", "variant", "fold", "seed", "trial_number"]).any()
    failing = trials[trials["variant"] == "ltc"]
    assert (failing["state"] == "FAILED").all()
    assert failing["error"].str.contains("fails on purpose").all()
    assert failing["val_rmse"].isna().all() and failing["param_beta"].isna().all()
    searched = trials[trials["variant"] == "ltc_mhn"]
    assert set(searched[searched["trial_number"] == 1]["state"]) == {"FAILED"}
    good = searched[searched["state"] != "FAILED"]
    assert set(good["state"]) <= {"COMPLETE", "PRUNED"} and len(good) == 4
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
    assert [t.state == TrialState.FAIL for t in study.trials] == [False, True, False]
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
    assert failed["rmse"].isna().all() and failed["error"].str.contains("all 3 trials failed").all()
    ok = results[results["status"] == "ok"]
    for row in ok.itertuples():
        assert math.isfinite(row.rmse) and row.rmse > 0 and 0 < row.mae <= row.rmse and row.r2 < 1
        assert row.n_train + row.n_test == TASKS[row.task]
        assert row.splits in ("official", "reconstructed") and row.fit_seconds > 0
        json.loads(row.best_config)
    for task in TASKS:
        search = ok[(ok["task"] == task) & (ok["variant"] == "ltc_mhn") & (ok["study"] == "search")].iloc[0]
        task_trials = trials[(trials["task"] == task) & (trials["variant"] == "ltc_mhn")]
        assert search["n_trials"] == 3 and search["n_failed_trials"] == 1
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
    results = tmp_path / "runs" / "gpu" / "results.parquet"
    assert not results.exists()


# --------------------------------------------------------------------------- resume after SIGKILL

KILL_SPEC = """
[study]
name = "killed"
tasks = ["QSAR_fish_toxicity"]
variants = ["ltc_mhn"]
folds = [0, 1]
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
    spec_path = tmp_path / "killed.toml"
    spec_path.write_text(KILL_SPEC)
    runs = tmp_path / "runs"
    run = RunDir(runs / "killed")
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen(
        [sys.executable, "-m", "hpo", "sweep", str(spec_path), "--name", "killed", "--runs-dir", str(runs), "--num-cpus", "2"],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the Ray processes it starts can be cleaned up
    )
    second_log = run.ray_dir / "QSAR_fish_toxicity" / "ltc_mhn" / "fold1_seed0" / "trial_log.jsonl"
    deadline = time.time() + 400
    try:
        while time.time() < deadline and driver.poll() is None:
            if run.results_file.exists() and len(read_jsonl(second_log)) >= 1:
                break
            time.sleep(0.5)
        assert driver.poll() is None, "the driver ended before it could be killed:\n" + (tmp_path / "driver.log").read_text()
        assert time.time() < deadline, "the driver made no progress"
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
        log.close()
    before = finished_snapshot(run.journal_file)
    first_results = run.read_results()
    assert len(first_results) == 1  # fold 0 done, fold 1 in flight

    code, out, err = run_cli(["resume", str(run.root), "-q"])
    assert code == 0, out + err

    results = run.read_results()
    assert sorted(results["fold"]) == [0, 1] and (results["status"] == "ok").all()
    assert results[results["fold"] == 0]["finished_at"].item() == first_results["finished_at"].item()
    after = finished_snapshot(run.journal_file)
    storage = journal_storage(run.journal_file)
    trials = run.read_trials()
    for fold in (0, 1):
        name = f"QSAR_fish_toxicity/ltc_mhn/fold{fold}/seed0"
        study = optuna.load_study(study_name=name, storage=storage)
        assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        interrupted = {t.number for t in study.trials if t.user_attrs.get(INTERRUPTED_ATTR)}
        real = {t.number for t in study.trials if t.number not in interrupted}
        rows = trials[trials["fold"] == fold]
        assert len(rows) == 5 and set(rows["trial_number"]) == real  # nothing lost, nothing extra
        # nothing finished before the kill was run again or changed
        for (study_name, number), record in before.items():
            if study_name == name and number not in interrupted:
                assert after[(study_name, number)] == record
        numbers = [r["trial_number"] for r in read_jsonl(run.trial_log(run_item(fold)))]
        assert len(numbers) == len(set(numbers)), f"fold {fold}: a trial ran twice: {numbers}"
    attempts = sorted(p.name for p in (run.ray_dir / "QSAR_fish_toxicity" / "ltc_mhn" / "fold1_seed0").glob("attempt*"))
    finished_before = [k for k in before if k[0].endswith("fold1/seed0")]
    assert attempts == (["attempt1", "attempt2"] if len(finished_before) < 5 else ["attempt1"])
    provenance = json.loads(run.provenance_file.read_text())
    assert len(provenance["sessions"]) == 2 and provenance["sessions"][0]["finished"] is None


def run_item(fold: int):
    from hpo.plan import WorkItem

    return WorkItem("QSAR_fish_toxicity", "ltc_mhn", fold, 0, 0, "search")
