"""β-sensitivity from trials and one-at-a-time rows, and fANOVA importances from an Optuna journal."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest

from analysis.importances import EVALUATOR_NAME, importance_section, open_journal, run_importances
from analysis.runs import load_run
from analysis.sensitivity import normalise_by_best, one_at_a_time, parameter_trials, sensitivity_section
from analysis.synthetic import make_run


def test_normalisation_divides_by_the_best_trial_of_the_same_task_fold_and_seed():
    frame = pd.DataFrame({
        "task": ["a", "a", "a", "a", "b"], "variant": ["ltc_mhn", "fixed_beta", "ltc_mhn", "ltc_mhn", "ltc_mhn"],
        "fold": [0, 0, 0, 1, 0], "seed": [0, 0, 0, 0, 0], "val_rmse": [2.0, 1.0, 4.0, 3.0, np.nan],
        "value": [0.1, 1.0, 10.0, 0.5, 1.0], "state": ["COMPLETE"] * 4 + ["FAILED"]})
    result = normalise_by_best(frame)["relative_val_rmse"].to_numpy()
    np.testing.assert_allclose(result, [2.0, 1.0, 4.0, 1.0, np.nan])


def test_parameter_trials_keep_only_trials_that_searched_the_parameter():
    trials = pd.DataFrame({"task": ["a", "a"], "variant": ["ltc_mhn", "ltc"], "fold": [0, 0], "seed": [0, 0],
                           "trial_number": [0, 0], "state": ["COMPLETE", "COMPLETE"], "val_rmse": [1.0, 2.0],
                           "param_beta": [0.3, None]})
    frame = parameter_trials(trials, "beta")
    assert frame["variant"].tolist() == ["ltc_mhn"] and frame["value"].tolist() == [0.3]
    assert parameter_trials(trials, "hopfield_size").empty


def test_one_at_a_time_curves_are_fold_means_of_test_rmse():
    rows = [{"task": "a", "variant": "ltc_mhn", "fold": f, "seed": 0, "status": "ok", "rmse": r,
             "study": "one_at_a_time", "oat_param": "beta", "oat_value": v}
            for f, v, r in [(0, 0.1, 1.0), (1, 0.1, 3.0), (0, 1.0, 2.0), (1, 1.0, 2.0)]]
    rows.append({"task": "a", "variant": "ltc_mhn", "fold": 0, "seed": 0, "status": "ok", "rmse": 9.0,
                 "study": "search", "oat_param": None, "oat_value": np.nan})
    curves = one_at_a_time(pd.DataFrame(rows), "beta").set_index("value")
    assert curves.loc[0.1, "rmse_mean"] == pytest.approx(2.0)
    assert curves.loc[0.1, "rmse_std"] == pytest.approx(np.std([1.0, 3.0], ddof=1))
    assert curves.loc[1.0, "rmse_mean"] == pytest.approx(2.0)
    assert curves["folds"].tolist() == [2, 2]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "sens", tasks=("abalone", "kin8nm"),
                    variants=("ltc_mhn", "ltc"), folds=1, trials=8)


def test_sensitivity_section_draws_every_part(small_run):
    section = sensitivity_section(load_run(small_run), "beta")
    names = [getattr(block, "name", None) for block in section.iter_blocks()]
    assert "sensitivity_beta_per_task" in names
    assert "sensitivity_beta_normalised" in names
    assert "sensitivity_beta_one_at_a_time" in names
    assert "importances_fanova" in names
    titles = section.section_titles()
    assert "Parameter importances (fANOVA)" in titles


def test_importances_use_fanova_and_leave_the_journal_unchanged(small_run):
    journal = small_run / "optuna.journal"
    before = journal.read_bytes()
    importances, skipped = run_importances(journal)
    assert journal.read_bytes() == before
    assert set(importances["variant"]) == {"ltc_mhn", "ltc"}
    sums = importances.groupby(["task", "variant", "fold", "seed"])["importance"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, rtol=1e-6)
    # the same numbers as Optuna's own fANOVA evaluator called directly
    storage = open_journal(journal)
    study = optuna.load_study(study_name="abalone/ltc/fold0/seed0", storage=storage)
    direct = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    mine = importances[(importances["task"] == "abalone") & (importances["variant"] == "ltc")]
    assert dict(zip(mine["param"], mine["importance"])) == pytest.approx(direct)
    with pytest.raises(PermissionError):
        storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "new")


def test_too_few_trials_is_reported_not_raised(tmp_path):
    run_dir = make_run(tmp_path / "few", tasks=("abalone",), variants=("ltc_mhn",), folds=1, trials=1,
                       oat_values=(), predictions=False)
    section = importance_section(load_run(run_dir))
    text = " ".join(block.text for block in section.blocks if hasattr(block, "text"))
    assert "not enough trials" in text.lower()
    assert EVALUATOR_NAME in text
