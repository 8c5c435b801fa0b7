"""Search logic in-process (no Ray cluster): the space, the searcher's bookkeeping in Optuna,
stale trials after a kill, trial rows, the plan, metrics and the run directory's files."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpo.estimators import regression_metrics
from hpo.plan import build_plan
from hpo.rundir import RunDir, RunLockedError, append_jsonl, read_jsonl
from hpo.space import (
    BASELINES,
    NEURAL_SPACE,
    TRIAL_NUMBER_KEY,
    VARIANTS,
    DefineByRun,
    default_point,
    same_point,
    suggest,
    variant_params,
)
from hpo.spec import parse_spec
from hpo.storage import (
    INTERRUPTED_ATTR,
    finished_trials,
    journal_storage,
    mark_stale_trials_failed,
    repair_journal,
)
from hpo.tuning import PruneLedger, RecordingOptunaSearch, _sampler_seed, asha, trial_rows

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------------- space


def test_model_names_match_the_model_package():
    import model

    assert VARIANTS == model.VARIANTS
    assert BASELINES == model.BASELINES


def test_variant_params():
    memory = {"beta", "hopfield_size", "heads", "alpha", "delta"}
    rest = {"learning_rate", "hidden_size", "unfolds"}
    assert set(variant_params("ltc_mhn")) == memory | rest
    assert set(variant_params("fixed_beta")) == memory | rest
    assert set(variant_params("zero_beta")) == (memory - {"beta"}) | rest
    assert set(variant_params("ltc")) == rest
    assert set(variant_params("matched_ltc")) == rest
    assert variant_params("ridge") == ()
    with pytest.raises(ValueError, match="variant"):
        variant_params("lstm")


def test_suggestions_stay_in_the_space():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(60):
        trial = study.ask()
        values = suggest(trial, NEURAL_SPACE)
        study.tell(trial, 0.0)
        assert 1e-2 <= values["beta"] <= 1e1
        assert values["hopfield_size"] in (4, 8, 16, 32, 64)
        assert values["hidden_size"] % values["heads"] == 0
        assert 0.25 <= values["alpha"] <= 2.0
        assert 1e-2 <= values["delta"] <= 2.0
        assert 3e-4 <= values["learning_rate"] <= 3e-2
        assert 2 <= values["unfolds"] <= 8 and isinstance(values["unfolds"], int)


def test_define_by_run_adds_the_trial_number():
    study = optuna.create_study()
    trial = study.ask()
    constants = DefineByRun(NEURAL_SPACE)(trial)
    assert constants == {TRIAL_NUMBER_KEY: trial.number}
    assert set(trial.params) == set(NEURAL_SPACE)


def test_same_point():
    assert same_point({"a": 0.1, "b": 2}, {"a": 0.1, "b": 2})
    assert not same_point({"a": 0.1, "b": 2}, {"a": 0.2, "b": 2})
    assert not same_point({"a": 0.1}, {"a": 0.1, "b": 2})


# --------------------------------------------------------------------------- ASHA


def asha_decisions(curves: dict[str, list[float]], grace_period=2, reduction_factor=2, max_epochs=8):
    """Feed the trials' validation curves one trial after another (as with one trial at a time),
    reporting what the trainable reports; returns the ledger and each trial's epochs trained."""
    from ray.tune.schedulers import TrialScheduler

    ledger = PruneLedger()
    scheduler = asha(ledger, max_epochs, grace_period, reduction_factor)
    trained = {}
    for trial_id, curve in curves.items():
        trial = SimpleNamespace(trial_id=trial_id)
        scheduler.on_trial_add(None, trial)
        best = math.inf
        for epoch, value in enumerate(curve, start=1):
            best = min(best, value)
            result = {"val_rmse": value, "best_val_rmse": best, "training_iteration": epoch}
            trained[trial_id] = epoch
            if scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
                break
        scheduler.on_trial_complete(None, trial, result)
    return ledger, trained


def test_asha_stops_trials_behind_at_a_rung_on_their_best_epoch_so_far():
    ledger, trained = asha_decisions(
        {
            "steady": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],
            "behind": [2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4, 1.3],  # worse than "steady" at rung 2
            "noisy": [0.5, 5.0, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2],  # one bad epoch at rung 2; its best is 0.5
        }
    )
    assert trained == {"steady": 8, "behind": 2, "noisy": 8}
    assert ledger.pruned == {"behind"}  # noted as PRUNED; the others ran to max_epochs


# --------------------------------------------------------------------------- searcher bookkeeping


def make_searcher(storage, name="task/ltc_mhn/fold0/seed0", points=True, attempt=1):
    ledger = PruneLedger()
    searcher = RecordingOptunaSearch(
        DefineByRun(NEURAL_SPACE),
        metric="best_val_rmse",
        mode="min",
        points_to_evaluate=[default_point(NEURAL_SPACE)] if points else None,
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2),
        study_name=name,
        storage=storage,
        ledger=ledger,
        attempt=attempt,
    )
    return searcher, ledger


def run_epochs(searcher, trial_id, curve):
    best = math.inf
    for epoch, value in enumerate(curve, start=1):
        best = min(best, value)
        result = {"val_rmse": value, "best_val_rmse": best, "training_iteration": epoch, "node_id": "n1"}
        searcher.on_trial_result(trial_id, result)
    return {**result, "done": True}


def test_searcher_records_complete_pruned_failed_and_interrupted(tmp_path):
    storage = journal_storage(tmp_path / "optuna.journal")
    searcher, ledger = make_searcher(storage)
    configs = {tid: searcher.suggest(tid) for tid in ("a", "b", "c", "d")}
    # the default configuration is the first point
    assert {k: v for k, v in configs["a"].items() if k != TRIAL_NUMBER_KEY} == default_point(NEURAL_SPACE)
    assert [configs[t][TRIAL_NUMBER_KEY] for t in "abcd"] == [0, 1, 2, 3]

    searcher.on_trial_complete("a", run_epochs(searcher, "a", [3.0, 2.0, 2.5]))  # finishes normally
    last = run_epochs(searcher, "b", [4.0, 3.5])
    ledger.pruned.add("b")  # ASHA stopped it
    searcher.on_trial_complete("b", last)
    run_epochs(searcher, "c", [5.0])
    searcher.on_trial_complete("c", error=True)  # raised
    partial = run_epochs(searcher, "d", [6.0])
    searcher.on_trial_complete("d", {**partial, "done": False})  # driver interrupted

    trials = optuna.load_study(study_name="task/ltc_mhn/fold0/seed0", storage=storage).get_trials()
    states = [t.state for t in trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL]
    assert trials[0].value == 2.0  # the best epoch, not the last one
    assert trials[0].intermediate_values == {1: 3.0, 2: 2.0, 3: 2.5}  # every epoch, the last included
    assert trials[0].user_attrs["node_id"] == "n1"
    assert trials[3].user_attrs[INTERRUPTED_ATTR] is True
    # interrupted trials are not finished work
    assert [t.number for t in finished_trials(storage, "task/ltc_mhn/fold0/seed0")] == [0, 1, 2]


def test_non_finite_best_is_a_failure(tmp_path):
    storage = journal_storage(tmp_path / "optuna.journal")
    searcher, _ = make_searcher(storage)
    searcher.suggest("a")
    searcher.on_trial_complete("a", {"val_rmse": math.nan, "best_val_rmse": math.nan, "training_iteration": 1, "done": True})
    (trial,) = optuna.load_study(study_name="task/ltc_mhn/fold0/seed0", storage=storage).get_trials()
    assert trial.state == TrialState.FAIL


def test_stale_running_trials_are_marked_failed(tmp_path):
    storage = journal_storage(tmp_path / "optuna.journal")
    study = optuna.create_study(study_name="s", storage=storage)
    done = study.ask()
    study.tell(done, 1.0)
    study.ask()  # left RUNNING by a killed driver
    study.enqueue_trial({"x": 1.0})  # left WAITING
    assert mark_stale_trials_failed(storage, "s") == 2
    trials = optuna.load_study(study_name="s", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert [t.user_attrs.get(INTERRUPTED_ATTR, False) for t in trials] == [False, True, True]
    assert [t.number for t in finished_trials(storage, "s")] == [0]
    assert mark_stale_trials_failed(storage, "missing") == 0


def test_resumed_study_does_not_enqueue_the_default_again(tmp_path):
    storage = journal_storage(tmp_path / "optuna.journal")
    first, _ = make_searcher(storage)
    first.suggest("a")
    first.on_trial_complete("a", run_epochs(first, "a", [1.0]))
    second, _ = make_searcher(storage, points=False, attempt=2)
    config = second.suggest("b")
    assert config[TRIAL_NUMBER_KEY] == 1
    assert len(optuna.load_study(study_name="task/ltc_mhn/fold0/seed0", storage=storage).trials) == 2


def test_resumed_attempts_reseed_the_sampler():
    assert _sampler_seed(3, 1) == 3
    assert len({_sampler_seed(3, attempt) for attempt in range(1, 6)}) == 5


def test_trial_rows_prefer_the_log_and_fall_back_to_optuna(tmp_path):
    storage = journal_storage(tmp_path / "optuna.journal")
    searcher, _ = make_searcher(storage)
    for tid in ("a", "b"):
        searcher.suggest(tid)
    searcher.on_trial_complete("a", run_epochs(searcher, "a", [3.0, 2.0]))
    searcher.on_trial_complete("b", run_epochs(searcher, "b", [4.0, 1.5, 1.7]))
    log = [
        {
            "trial_number": 0,
            "ray_trial_id": "a",
            "attempt": 1,
            "state": "COMPLETE",
            "error": None,
            "val_rmse_curve": [3.0, 2.0],
            "val_rmse": 2.0,
            "epochs": 2,
            "seconds": 4.0,
            "node_id": "node-a",
        }
    ]
    rows = trial_rows(finished_trials(storage, "task/ltc_mhn/fold0/seed0"), log)
    assert [r["trial_number"] for r in rows] == [0, 1]
    assert rows[0]["node_id"] == "node-a" and rows[0]["seconds"] == 4.0
    # trial 1 is not in the log (driver killed between the two writes): rebuilt from Optuna
    assert rows[1]["val_rmse_curve"] == [4.0, 1.5, 1.7] and rows[1]["val_rmse"] == 1.5
    assert rows[1]["epochs"] == 3 and rows[1]["node_id"] == "n1" and rows[1]["state"] == "COMPLETE"
    assert rows[0]["param_beta"] == 0.25 and rows[0]["param_max_depth"] is None


# --------------------------------------------------------------------------- plan and metrics


def test_plan_covers_every_item_once():
    spec = parse_spec(
        {
            "study": {
                "tasks": ["concrete_compressive_strength", "QSAR_fish_toxicity"],
                "variants": ["ltc_mhn", "ltc"],
                "baselines": ["xgboost", "ridge"],
                "folds": 3,
                "seeds": [0, 1],
            },
            "one_at_a_time": {"values": [0.1, 1.0]},
        }
    )
    plan = build_plan(spec)
    searches = [i for i in plan if i.kind == "search"]
    fits = [i for i in plan if i.kind == "fit"]
    oat = [i for i in plan if i.kind == "one_at_a_time"]
    assert len(searches) == 2 * 3 * 2 * 3  # tasks × folds × seeds × (ltc_mhn, ltc, xgboost)
    assert len(fits) == 2 * 3 * 2  # ridge
    assert len(oat) == 2 * 3 * 2 * 2  # ltc_mhn only searches β; two values
    assert len({i.key for i in plan}) == len(plan)
    for item in oat:  # its base search runs before it
        assert plan.index(item.base()) < plan.index(item)


def test_metrics_match_sklearn():
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    pred = y + rng.normal(scale=0.3, size=50)
    metrics = regression_metrics(y, pred)
    assert metrics["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, pred)))
    assert metrics["mae"] == pytest.approx(mean_absolute_error(y, pred))
    assert metrics["r2"] == pytest.approx(r2_score(y, pred))


# --------------------------------------------------------------------------- run directory


def result_row(task="t", variant="ltc", fold=0, rmse=1.0, study="search", oat_value=None):
    return {
        "task": task,
        "task_id": 1,
        "variant": variant,
        "fold": fold,
        "repeat": 0,
        "seed": 0,
        "status": "ok",
        "rmse": rmse,
        "study": study,
        "oat_param": "beta" if oat_value is not None else None,
        "oat_value": oat_value,
    }


def test_results_upsert_replaces_the_same_item(tmp_path):
    run = RunDir(tmp_path)
    run.upsert_results([result_row(fold=0, rmse=1.0), result_row(fold=1, rmse=2.0)])
    run.upsert_results([result_row(fold=0, rmse=3.0)])
    run.upsert_results([result_row(fold=0, rmse=4.0, study="one_at_a_time", oat_value=0.1)])
    table = run.read_results().sort_values(["fold", "study"])
    assert list(table["rmse"]) == [4.0, 3.0, 2.0]  # fold 0: one_at_a_time, search; fold 1
    assert len(run.finished_keys()) == 3
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".results")]  # no temp files left
    assert str(run.read_results()["task_id"].dtype) == "int64"


def test_trials_upsert_replaces_a_whole_search(tmp_path):
    run = RunDir(tmp_path)
    base = {"task": "t", "variant": "ltc", "fold": 0, "seed": 0, "state": "COMPLETE", "val_rmse_curve": [1.0]}
    run.upsert_trials([{**base, "trial_number": n} for n in range(3)], [("t", "ltc", 0, 0)])
    run.upsert_trials([{**base, "fold": 1, "trial_number": 0}], [("t", "ltc", 1, 0)])
    run.upsert_trials([{**base, "trial_number": n} for n in range(2)], [("t", "ltc", 0, 0)])
    table = run.read_trials()
    assert sorted(zip(table["fold"], table["trial_number"])) == [(0, 0), (0, 1), (1, 0)]
    assert list(table["val_rmse_curve"].iloc[0]) == [1.0]


def test_run_directory_lock_is_exclusive(tmp_path):
    run = RunDir(tmp_path)
    assert not run.is_running()
    with run.lock():
        assert run.is_running()
        with pytest.raises(RunLockedError, match="being run by pid"):
            with RunDir(tmp_path).lock():
                pass
    assert not run.is_running()


def test_jsonl_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, {"a": 1})
    with open(path, "a") as handle:
        handle.write('{"a": ')
    assert read_jsonl(path) == [{"a": 1}]


def test_repair_journal_cuts_a_torn_line(tmp_path):
    path = tmp_path / "optuna.journal"
    storage = journal_storage(path)
    optuna.create_study(study_name="s", storage=storage)
    with open(path, "ab") as handle:
        handle.write(b'{"op_code": 4, "worker_id"')
    assert repair_journal(path)
    study = optuna.load_study(study_name="s", storage=journal_storage(path))
    study.tell(study.ask(), 1.0)
    assert len(optuna.load_study(study_name="s", storage=journal_storage(path)).trials) == 1


def test_driver_runs_each_item_once_across_sessions(tmp_path, monkeypatch):
    from hpo.sweep import Driver

    spec = parse_spec(
        {"study": {"tasks": ["concrete_compressive_strength"], "variants": [], "baselines": ["ridge", "tree"], "folds": 2}}
    )
    plan = build_plan(spec)
    run = RunDir(tmp_path)
    driver = Driver(spec, run, cluster=None, storage=journal_storage(tmp_path / "optuna.journal"), gpu_per_trial=0, verbose=0, echo=lambda text: None)
    ran = []

    def execute(item):
        ran.append(item.key)
        row = driver._base_row(item)
        row.update(status="failed" if item.variant == "tree" else "ok", error="boom", n_trials=0)
        return driver._finish(row), None

    monkeypatch.setattr(driver, "execute", execute)
    first = driver.run(plan[:3])  # the session is stopped after three items
    second = driver.run(plan)
    assert ran == [item.key for item in plan]  # every item once, failed ones included
    assert (first.n_ok, first.n_failed, first.exit_code) == (2, 1, 1)
    assert (second.n_skipped, second.n_failed_before, second.n_ok, second.n_failed) == (3, 1, 0, 1)
    third = driver.run(plan)  # nothing left to do; the run still holds failed items
    assert (third.n_skipped, third.n_failed_before, third.exit_code) == (4, 2, 1)
    assert len(run.read_results()) == len(plan)


def test_a_storage_url_works_like_the_journal(tmp_path):
    from hpo.plan import WorkItem
    from hpo.storage import open_storage, storage_description
    from hpo.sweep import study_name_for

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = open_storage(url, tmp_path / "unused.journal")
    searcher, _ = make_searcher(storage, name="run/t/ltc_mhn/fold0/seed0")
    searcher.suggest("a")
    searcher.on_trial_complete("a", run_epochs(searcher, "a", [2.0, 1.0]))
    assert optuna.load_study(study_name="run/t/ltc_mhn/fold0/seed0", storage=url).best_value == 1.0
    assert not (tmp_path / "unused.journal").exists()
    # in a shared database the run's name keeps its studies apart
    spec = parse_spec({"study": {"tasks": ["concrete_compressive_strength"]}, "search": {"storage": url}})
    item = WorkItem("concrete_compressive_strength", "ltc_mhn", 0, 0, 0, "search")
    assert study_name_for(spec, RunDir(tmp_path / "myrun"), item) == "myrun/concrete_compressive_strength/ltc_mhn/fold0/seed0"
    assert storage_description("postgresql://me:secret@db/optuna", "x") == "postgresql://me:***@db/optuna"


def test_a_diverging_fit_raises():
    from hpo.estimators import DivergedError, FitSettings, fit_estimator

    class Diverging:
        def fit(self, X, y, eval_set=None, epoch_callback=None):
            epoch_callback({"epoch": 1, "val_rmse": 2.0, "train_loss": 1.0, "val_loss": 1.0})
            epoch_callback({"epoch": 2, "val_rmse": math.inf, "train_loss": 1e30, "val_loss": math.inf})
            return self

    seen = []
    with pytest.raises(DivergedError, match="epoch 2"):
        fit_estimator(Diverging(), FitSettings("ltc_mhn"), None, None, None, None, epoch_callback=seen.append)
    assert [record["epoch"] for record in seen] == [1]  # the non-finite epoch is never reported
