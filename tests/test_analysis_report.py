"""The report and the command line: every section, valid image files, partial runs, usage errors."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.synthetic import add_trained_models, make_run

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTIONS = [
    "Run overview",
    "Relative-gain summaries",
    "Ablations",
    "LTC against LTC+MHN",
    "Relative gain of LTC+MHN",
    "Critical-difference diagram",
    "β-sensitivity",
    "One-at-a-time curves on the outer test folds",
    "Parameter importances (fANOVA)",
    "Stability diagnostics",
    "Loss landscapes",
    "Parity plots",
    "Seed variance",
    "Failed and diverged trials",
]


def _check_outputs(out: Path, html_path: Path) -> str:
    """Every figure a valid PNG and PDF embedded in the HTML, every table as CSV, LaTeX, Markdown."""
    import matplotlib.image

    html = html_path.read_text()
    markdown = (out / "report.md").read_text()
    pngs = sorted((out / "figures").glob("*.png"))
    assert pngs, "the report has no figures"
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(PNG_SIGNATURE), png
        image = matplotlib.image.imread(png)
        assert image.shape[0] > 100 and image.shape[1] > 100, png
        assert image.std() > 0.01, f"{png} is blank"
        pdf = png.with_suffix(".pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and b"%%EOF" in pdf[-1024:], png
        assert f"figures/{png.name}" in markdown
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == len(pngs)
    assert all(base64.b64decode(item).startswith(PNG_SIGNATURE) for item in embedded)
    assert "<img" not in html.replace('<img alt=', "")  # no image is linked from outside the file
    for csv in (out / "tables").glob("*.csv"):
        assert csv.with_suffix(".tex").read_text().count(r"\begin{tabular}") == 1
        assert csv.with_suffix(".md").is_file()
    return html


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, mirror):
    """A run shaped like studies/smoke.toml (2 tasks, ltc_mhn + ltc searched, 3 baselines, 1 fold)
    with real trained neural models, saved Pipelines and predictions on one task."""
    run = make_run(tmp_path_factory.mktemp("runs") / "smoke",
                   tasks=("concrete_compressive_strength", "QSAR_fish_toxicity"),
                   variants=("ltc_mhn", "ltc", "xgboost", "ridge", "tree"), folds=1, trials=4, oat_values=())
    return add_trained_models(run, tasks=("QSAR_fish_toxicity",), max_epochs=2, hidden_size=8)


def test_report_of_the_smoke_run_has_every_section_and_valid_images(smoke_run, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(smoke_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [str(out / "report.html")]
    html = _check_outputs(out, out / "report.html")
    for title in SECTIONS:
        assert f">{title}</h" in html, title
    assert "figures/landscape_QSAR_fish_toxicity_fold0_seed0.png" in (out / "report.md").read_text()
    assert (out / "landscape" / "landscape_QSAR_fish_toxicity_fold0_seed0.npz").is_file()
    assert "FanovaImportanceEvaluator" in html
    assert "reconstructed" in html
    assert "not enough tasks for a critical-difference diagram" in html.lower()
    # the relative-gain tables are recomputable by hand from results.parquet
    results = pd.read_parquet(smoke_run / "results.parquet")
    ok = results[(results["study"] == "search") & (results["status"] == "ok")]
    means = ok.groupby(["task", "variant"])["rmse"].mean()
    gains = pd.read_csv(out / "tables" / "gains_per_task.csv", index_col=0)
    for task in ("concrete_compressive_strength", "QSAR_fish_toxicity"):
        expected = (means[(task, "ltc")] - means[(task, "ltc_mhn")]) / means[(task, "ltc")]
        assert gains.at[task, "gain_over_ltc"] == pytest.approx(expected)
        best = min(means[(task, b)] for b in ("xgboost", "ridge", "tree"))
        assert gains.at[task, "rmse_best_baseline"] == pytest.approx(best)
    summary = json.loads((out / "report.json").read_text())
    assert "Stability diagnostics" in summary["sections"]


def test_landscape_command_stores_a_grid_that_the_report_redraws(smoke_run, tmp_path, capsys):
    code = main(["landscape", str(smoke_run), "--task", "QSAR_fish_toxicity", "--grid", "5", "--max-rows", "64",
                 "--hessian-iterations", "5"])
    assert code == 0
    html_path = Path(capsys.readouterr().out.strip())
    stored = smoke_run / "analysis" / "landscape" / "landscape_QSAR_fish_toxicity_fold0_seed0.npz"
    assert stored.is_file() and html_path.is_file()
    from analysis.landscape import load_landscapes

    landscapes, metadata = load_landscapes(stored)
    assert set(landscapes) == {"ltc", "ltc_mhn"}
    assert landscapes["ltc"].losses.shape == (5, 5)
    assert metadata["direction_seed"] == 0 and metadata["rows"] == "train"
    assert max(metadata["prediction_gap"].values()) < 1e-3  # the network reproduces pipeline.predict
    before = stored.stat().st_mtime_ns
    assert main(["landscape", str(smoke_run), "--task", "QSAR_fish_toxicity", "--redraw"]) == 0
    assert stored.stat().st_mtime_ns == before  # redrawn, not recomputed
    assert (stored.parent / "figures" / "landscape_QSAR_fish_toxicity_fold0_seed0.png").is_file()
    # the report takes stored grids instead of computing its own
    from analysis.report import landscape_entries
    from analysis.runs import load_run

    entries, note = landscape_entries(load_run(smoke_run), tmp_path, "stored", 2)
    assert [task for task, _, _ in entries] == ["QSAR_fish_toxicity"] and "Redrawn" in note
    np.testing.assert_array_equal(entries[0][1]["ltc_mhn"].losses, landscapes["ltc_mhn"].losses)


def test_sensitivity_command_for_another_parameter(smoke_run, capsys):
    assert main(["sensitivity", str(smoke_run), "--param", "hopfield_size", "--no-importances"]) == 0
    html_path = Path(capsys.readouterr().out.strip())
    assert html_path.name == "sensitivity_hopfield_size.html"
    assert (html_path.parent / "figures" / "sensitivity_hopfield_size_per_task.png").is_file()


def test_report_with_many_tasks_seeds_and_one_at_a_time(tmp_path):
    run = make_run(tmp_path / "wide", tasks=("abalone", "kin8nm", "diamonds", "cpu_activity", "red_wine"),
                   variants=("ltc_mhn", "ltc", "fixed_beta", "ridge"), folds=1, seeds=(0, 1), trials=5,
                   oat_values=(0.01, 0.1, 1.0), journal=False, predictions=False)
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out)]) == 0
    html = _check_outputs(out, out / "report.html")
    for name in ("critical_difference", "seed_variance", "sensitivity_beta_one_at_a_time", "failed_trials"):
        assert (out / "figures" / f"{name}.png").is_file(), name
    assert "No saved <code>ltc</code> or <code>ltc_mhn</code> models" in html
    assert "No predictions of <code>ltc</code> or <code>ltc_mhn</code>" in html
    assert "No <code>optuna.journal</code> in this run" in html


def test_partial_single_task_run_shows_missing_parts_instead_of_failing(tmp_path):
    rows = []
    for fold in range(2):
        for variant, rmse, status in (("ltc_mhn", 1.0 + fold, "ok"), ("ridge", 2.0, "ok"), ("ltc", np.nan, "failed")):
            rows.append({"task": "abalone", "variant": variant, "fold": fold, "seed": 0, "status": status,
                         "error": None if status == "ok" else "NonFiniteLossError: loss is nan", "rmse": rmse,
                         "mae": rmse, "r2": 0.5, "splits": "reconstructed"})
    rows.append({"task": "abalone", "variant": "xgboost", "fold": 0, "seed": 0, "status": "ok", "error": None,
                 "rmse": 1.2, "mae": 1.0, "r2": 0.6, "splits": "reconstructed"})
    run = tmp_path / "partial"
    run.mkdir()
    pd.DataFrame(rows).to_parquet(run / "results.parquet")
    (run / "spec.toml").write_text('[study]\ntasks = ["abalone", "kin8nm"]\nvariants = ["ltc_mhn", "ltc", "zero_beta"]\n')
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    for title in ("Relative-gain summaries", "β-sensitivity", "Stability diagnostics"):
        assert f">{title}</h" in html
    coverage = pd.read_csv(out / "tables" / "coverage.csv", index_col=0)
    assert "kin8nm" in coverage.index  # a task of the spec without results is listed
    markdown = (out / "tables" / "coverage.md").read_text()
    assert "missing" in markdown and "0/2 (2 failed)" in markdown and "1/2" in markdown
    assert "no <code>trials.parquet</code> in this run" in html.lower()
    assert "not enough tasks for a critical-difference diagram" in html.lower()
    rmse = pd.read_csv(out / "tables" / "rmse_per_task.csv", index_col=0)
    assert rmse.at["abalone", "LTC+MHN"] == pytest.approx(1.5)
    assert np.isnan(rmse.at["kin8nm", "LTC+MHN"])


def test_usage_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "results.parquet" in error
    assert main([]) == 2
    capsys.readouterr()
    run = make_run(tmp_path / "run", tasks=("abalone",), variants=("ltc_mhn",), folds=1, trials=2,
                   oat_values=(), journal=False, predictions=False)
    assert main(["sensitivity", str(run), "--param", "not_a_param"]) == 2
    assert "searched:" in capsys.readouterr().err
    assert main(["landscape", str(run), "--task", "kin8nm"]) == 2
    assert "not in" in capsys.readouterr().err
    assert main(["landscape", str(run), "--task", "abalone"]) == 2  # no saved models
    assert "no saved models" in capsys.readouterr().err
    assert main(["landscape", str(run), "--task", "abalone", "--grid", "2"]) == 2
    assert main(["landscape", str(run), "--task", "abalone", "--variants", "ltc,xgboost"]) == 2
    assert "no torch network" in capsys.readouterr().err


def test_importing_analysis_does_not_import_ray():
    code = "import analysis, analysis.__main__, analysis.report, sys; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_one_at_a_time_run_reads_searches_from_its_base_run(tmp_path, capsys):
    runs = tmp_path / "runs"
    base = make_run(runs / "ctr23", tasks=("abalone", "kin8nm"), variants=("ltc_mhn", "ltc"), folds=1, trials=4,
                    oat_values=(), journal=False, predictions=False)
    oat = make_run(runs / "beta_sensitivity", tasks=("abalone", "kin8nm"), variants=("ltc_mhn",), folds=1,
                   trials=0, oat_values=(0.01, 0.1, 1.0, 10.0), journal=False, predictions=False)
    results = pd.read_parquet(oat / "results.parquet")
    results[results["study"] == "one_at_a_time"].to_parquet(oat / "results.parquet")
    (oat / "trials.parquet").unlink(missing_ok=True)
    (oat / "spec.toml").write_text('[study]\nvariants = []\n[one_at_a_time]\nparam = "beta"\n'
                                   f'base_run = "{base}"\n')
    assert main(["sensitivity", str(oat), "--no-importances"]) == 0
    out = Path(capsys.readouterr().out.strip()).parent
    assert (out / "figures" / "sensitivity_beta_one_at_a_time.png").is_file()
    assert (out / "figures" / "sensitivity_beta_per_task.png").is_file()  # trials of the base run
    # the base run's report finds the sibling one-at-a-time run by its base_run
    from analysis.runs import load_run, sibling_oat_runs

    assert [r.path for r in sibling_oat_runs(load_run(base))] == [oat]
