"""Relative-gain summaries against hand-computed answers on a small hand-built results.parquet."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import names
from analysis.runs import RunDirectoryError, load_run
from analysis.summaries import (
    BEST_BASELINE,
    TIE_TOLERANCE,
    best_baseline,
    coverage,
    gain_table,
    mean_ranks,
    outcome,
    per_task_means,
    rank_marks,
    relative_gain,
    summarise_gains,
    wilcoxon_gains,
)
from analysis.tables import Table


def _row(task, variant, fold, rmse, status="ok", study="search", seed=0, **extra):
    row = {"task": task, "task_id": 1, "variant": variant, "fold": fold, "repeat": 0, "seed": seed,
           "status": status, "error": None if status == "ok" else "boom", "rmse": rmse,
           "mae": rmse / 2 if np.isfinite(rmse) else np.nan, "r2": 1 - rmse / 10 if np.isfinite(rmse) else np.nan,
           "n_train": 90, "n_test": 10, "fit_seconds": 1.0, "best_val_rmse": rmse, "best_config": json.dumps({}),
           "n_trials": 4, "n_failed_trials": 0, "splits": "reconstructed", "study": study,
           "oat_param": None, "oat_value": np.nan}
    row.update(extra)
    return row


# Per task (fold 0, fold 1) RMSE; the means are written beside each line.
HAND_BUILT = {
    "t1": {"ltc_mhn": (1.0, 3.0),      # 2.0
           "ltc": (2.0, 2.0),          # 2.0  -> exact tie with ltc_mhn
           "xgboost": (2.5, 2.5),      # 2.5  best baseline
           "ridge": (4.0, 4.0)},       # 4.0
    "t2": {"ltc_mhn": (1.0, 1.0),      # 1.0
           "ltc": (2.0, 2.0),          # 2.0  -> gain 0.5, win
           "xgboost": (0.5, 1.5),      # 1.0
           "ridge": (0.8, 0.8)},       # 0.8  best baseline -> gain -0.25, loss
    "t3": {"ltc_mhn": (3.0, 3.0),      # 3.0
           # ltc missing on t3
           "xgboost": (4.0, 4.0)},     # 4.0  best baseline (ridge failed) -> gain 0.25, win
    "t4": {"ltc_mhn": (1.0, 1.0),      # 1.0
           "ltc": (1.004, 1.004),      # 1.004 -> gain 0.00398, tie (< 0.5 %)
           "xgboost": (0.999, 0.999),  # 0.999 best baseline -> gain -0.001, tie
           "ridge": (2.0, 2.0)},       # 2.0
}


@pytest.fixture()
def results() -> pd.DataFrame:
    rows = []
    for task, models in HAND_BUILT.items():
        for variant, values in models.items():
            rows += [_row(task, variant, fold, value) for fold, value in enumerate(values)]
    rows += [_row("t3", "ridge", 0, np.nan, status="failed"), _row("t3", "ridge", 1, np.nan, status="failed")]
    # one-at-a-time rows must never enter the search summaries
    rows += [_row("t1", "ltc_mhn", 0, 100.0, study="one_at_a_time", oat_param="beta", oat_value=1.0)]
    return pd.DataFrame(rows)


def test_model_names_agree_with_the_model_package():
    model = pytest.importorskip("model")
    assert names.VARIANTS == tuple(model.VARIANTS)
    assert names.BASELINES == tuple(model.BASELINES)
    assert names.MODEL_NAMES == tuple(model.MODEL_NAMES)


def test_per_task_means_are_plain_means_of_ok_search_rows(results):
    means = per_task_means(results)
    assert list(means.columns) == ["ltc_mhn", "ltc", "xgboost", "ridge"]  # canonical order
    expected = {
        ("t1", "ltc_mhn"): 2.0, ("t1", "ltc"): 2.0, ("t1", "xgboost"): 2.5, ("t1", "ridge"): 4.0,
        ("t2", "ltc_mhn"): 1.0, ("t2", "ltc"): 2.0, ("t2", "xgboost"): 1.0, ("t2", "ridge"): 0.8,
        ("t3", "ltc_mhn"): 3.0, ("t3", "xgboost"): 4.0,
        ("t4", "ltc_mhn"): 1.0, ("t4", "ltc"): 1.004, ("t4", "xgboost"): 0.999, ("t4", "ridge"): 2.0,
    }
    for (task, variant), value in expected.items():
        assert means.at[task, variant] == pytest.approx(value)
    assert np.isnan(means.at["t3", "ltc"])  # missing variant
    assert np.isnan(means.at["t3", "ridge"])  # only failed rows
    assert per_task_means(results, "mae").at["t1", "ltc_mhn"] == pytest.approx(1.0)


def test_metric_argument_is_checked(results):
    with pytest.raises(ValueError, match="metric"):
        per_task_means(results, "mse")


def test_best_and_second_marks_share_ties():
    values = pd.DataFrame({"a": [2.0, 1.0, np.nan], "b": [2.0, 3.0, 5.0], "c": [2.5, 2.0, np.nan]},
                          index=["t1", "t2", "t3"])
    bold, underline = rank_marks(values)
    assert bold.loc["t1"].tolist() == [True, True, False]
    assert underline.loc["t1"].tolist() == [False, False, True]
    assert bold.loc["t2"].tolist() == [True, False, False]
    assert underline.loc["t2"].tolist() == [False, False, True]
    assert bold.loc["t3"].tolist() == [False, True, False]
    assert not underline.loc["t3"].any()
    bold_high, _ = rank_marks(values, lower_is_better=False)
    assert bold_high.loc["t2"].tolist() == [False, True, False]


def test_best_baseline_is_lowest_mean_rmse_among_baselines(results):
    best = best_baseline(per_task_means(results))
    assert best["name"].tolist() == ["xgboost", "ridge", "xgboost", "xgboost"]
    assert best["rmse"].tolist() == pytest.approx([2.5, 0.8, 4.0, 0.999])


def test_gains_over_ltc_with_tie_and_missing_variant(results):
    table = gain_table(per_task_means(results), "ltc_mhn", "ltc")
    expected = [0.0, 0.5, np.nan, (1.004 - 1.0) / 1.004]
    np.testing.assert_allclose(table["gain"].to_numpy(), expected, equal_nan=True)
    assert table["outcome"].tolist() == ["tie", "win", "missing", "tie"]
    summary = summarise_gains(table, "ltc_mhn", "ltc")
    finite = [0.0, 0.5, (1.004 - 1.0) / 1.004]
    assert summary.n_tasks == 3
    assert summary.mean == pytest.approx(np.mean(finite))
    assert summary.median == pytest.approx(np.median(finite))
    assert (summary.wins, summary.ties, summary.losses) == (1, 2, 0)
    assert summary.wilcoxon_pvalue == pytest.approx(stats.wilcoxon(finite).pvalue)


def test_gains_over_best_baseline(results):
    table = gain_table(per_task_means(results), "ltc_mhn", BEST_BASELINE)
    expected = [(2.5 - 2.0) / 2.5, (0.8 - 1.0) / 0.8, (4.0 - 3.0) / 4.0, (0.999 - 1.0) / 0.999]
    np.testing.assert_allclose(table["gain"].to_numpy(), expected)
    assert table["reference"].tolist() == ["xgboost", "ridge", "xgboost", "xgboost"]
    assert table["outcome"].tolist() == ["win", "loss", "win", "tie"]
    summary = summarise_gains(table, "ltc_mhn", BEST_BASELINE)
    assert (summary.wins, summary.ties, summary.losses) == (2, 1, 1)
    assert summary.mean == pytest.approx(np.mean(expected))
    assert summary.median == pytest.approx(np.median(expected))


def test_tie_tolerance_boundaries():
    assert TIE_TOLERANCE == 0.005
    assert outcome(0.0049) == "tie" and outcome(-0.0049) == "tie"
    assert outcome(0.0051) == "win" and outcome(-0.0051) == "loss"
    assert outcome(np.nan) == "missing"
    assert relative_gain(9.0, 10.0) == pytest.approx(0.1)


def test_wilcoxon_matches_scipy_on_the_same_numbers():
    rng = np.random.default_rng(3)
    reference = rng.uniform(1, 100, 12)
    variant = reference * (1 - rng.normal(0.02, 0.05, 12))
    gains = (reference - variant) / reference
    statistic, pvalue, note = wilcoxon_gains(gains)
    expected = stats.wilcoxon(gains)
    assert statistic == pytest.approx(expected.statistic)
    assert pvalue == pytest.approx(expected.pvalue)
    assert "n = 12" in note


def test_wilcoxon_with_too_few_nonzero_gains_is_not_computed():
    statistic, pvalue, note = wilcoxon_gains([0.0, 0.1])
    assert np.isnan(pvalue) and np.isnan(statistic)
    assert "not computable" in note


def test_coverage_marks_missing_failed_and_partial(results):
    partial = pd.concat([results, pd.DataFrame([_row("t2", "ltc", 2, 1.0), _row("t2", "ltc_mhn", 2, 1.0)])])
    cover = coverage(partial).set_index(["task", "variant"])["status"]
    assert cover[("t3", "ltc")] == "missing"
    assert cover[("t3", "ridge")] == "failed"
    assert cover[("t2", "xgboost")] == "partial"  # 2 of the 3 folds that t2 has
    assert cover[("t2", "ltc")] == "complete"
    assert cover[("t1", "ltc_mhn")] == "complete"


def test_mean_ranks_use_only_complete_tasks(results):
    ranks = mean_ranks(per_task_means(results))
    # complete tasks: t1 (ranks 1.5, 1.5, 3, 4), t2 (2.5, 4, 2.5, 1), t4 (2, 3, 1, 4)
    assert ranks.to_dict() == pytest.approx({"ltc_mhn": 2.0, "ltc": 17 / 6, "xgboost": 13 / 6, "ridge": 3.0})


def test_tables_render_marks_missing_cells_and_raw_csv(results, tmp_path):
    means = per_task_means(results)
    table = Table.from_values("rmse", "Mean RMSE.", means, lower_is_better=True)
    markdown = table.to_markdown()
    assert "| t1 | **2.000** | **2.000** | <u>2.500</u> | 4.000 |" in markdown
    assert "| t3 | **3.000** | — | <u>4.000</u> | — |" in markdown
    latex = table.to_latex()
    assert r"\textbf{2.000}" in latex and r"\underline{2.500}" in latex and r"\toprule" in latex
    html = table.to_html()
    assert "<b>2.000</b>" in html and "<u>2.500</u>" in html
    paths = table.write(tmp_path)
    reread = pd.read_csv(paths["csv"], index_col=0)
    np.testing.assert_allclose(reread.to_numpy(), means.to_numpy(), equal_nan=True)


def test_load_run_requires_results_parquet(tmp_path):
    with pytest.raises(RunDirectoryError, match="results.parquet"):
        load_run(tmp_path)
    with pytest.raises(RunDirectoryError, match="does not exist"):
        load_run(tmp_path / "nowhere")


def test_load_run_fills_optional_columns(tmp_path, results):
    results.drop(columns=["study", "oat_param", "oat_value", "mae"]).to_parquet(tmp_path / "results.parquet")
    run = load_run(tmp_path)
    assert set(run.results["study"]) == {"search"}
    assert run.trials is None and run.journal_path is None
    assert run.tasks == ["t1", "t2", "t3", "t4"]
