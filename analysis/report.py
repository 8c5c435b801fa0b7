"""The full analysis report of a run: one Markdown file, one self-contained HTML file, every figure as
PNG and PDF and every table as CSV, LaTeX and Markdown.

Loss landscapes in the report: grids stored by ``python -m analysis landscape`` under
``RUN_DIR/analysis/landscape/`` are redrawn as they are; when there are none (``landscape="auto"``)
a quick landscape is computed for the first ``landscape_tasks`` tasks with saved ``ltc`` /
``ltc_mhn`` models — an 11×11 grid on 256 outer-training rows with 20 power iterations — so the
report stays fast; ``landscape="stored"`` only redraws, ``"skip"`` leaves landscapes out.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from analysis.document import Bullets, Document, Paragraph, Section
from analysis.runs import Run, base_run_of, load_run, sibling_oat_runs

LANDSCAPE_MODES = ("auto", "stored", "skip")
QUICK_LANDSCAPE = {"grid": 11, "max_rows": 256, "hessian_iterations": 20}
LANDSCAPE_FOLDER = Path("analysis") / "landscape"


@dataclass
class ReportPaths:
    html: Path
    markdown: Path
    directory: Path


def default_output(run_dir: Path) -> Path:
    return Path(run_dir) / "report"


def _intro(run: Run) -> list:
    from analysis.gains import splits_statement

    spec_study = run.spec.get("study", {}) if isinstance(run.spec.get("study"), dict) else {}
    facts = [f"Run directory: `{run.path}`"]
    if spec_study.get("name") or run.spec.get("name"):
        facts.append(f"Study: `{spec_study.get('name') or run.spec.get('name')}`"
                     + (f" — {spec_study['description']}" if spec_study.get("description") else ""))
    provenance = run.provenance
    for key, label in (("git_commit", "Git commit"), ("commit", "Git commit"), ("started", "Started"),
                       ("start", "Started"), ("finished", "Finished"), ("end", "Finished"), ("host", "Host")):
        value = provenance.get(key)
        if isinstance(value, (str, int, float)) and value != "":
            facts.append(f"{label}: `{value}`")
    ok = run.results[(run.results["status"] == "ok")]
    facts.append(
        f"results.parquet: {len(run.results)} rows ({len(ok)} ok, {len(run.results) - len(ok)} failed), "
        f"{run.results['task'].nunique()} task(s), {run.results['variant'].nunique()} model(s); "
        f"trials.parquet: {'absent' if run.trials is None else f'{len(run.trials)} trials'}; "
        f"optuna.journal: {'present' if run.journal_path else 'absent'}")
    facts.append(splits_statement(run))
    return [Bullets(facts)]


def _overview(run: Run) -> Section:
    from analysis.gains import coverage_table, missing_statement

    section = Section("Run overview")
    section.add(coverage_table(run))
    missing = missing_statement(run)
    if missing is not None:
        section.add(Paragraph("Missing, failed or partial task × model pairs (shown as — in every table):"), missing)
        failed = run.search_results[run.search_results["status"] != "ok"]
        if len(failed):
            errors = failed["error"].fillna("no message").astype(str).str.slice(0, 160)
            lines = [f"{t} / {v} fold {f} seed {s}: {e}" for t, v, f, s, e in
                     zip(failed["task"], failed["variant"], failed["fold"], failed["seed"], errors)][:20]
            section.add(Paragraph("Errors of failed rows (first 20):"), Bullets(lines))
    else:
        section.add(Paragraph("Every task × model pair has all its folds."))
    return section


def landscape_entries(run: Run, out_dir: Path, mode: str, tasks: int) -> tuple[list, str | None]:
    """Landscapes for the report and a note on where they came from."""
    from analysis.stability import compute_task_landscapes, landscape_file_name, stored_landscapes

    if mode == "skip":
        return [], "Loss landscapes skipped (`--landscape skip`)."
    stored = stored_landscapes(run.path / LANDSCAPE_FOLDER)
    if stored:
        return stored, (f"Redrawn from the grids stored under `{run.path / LANDSCAPE_FOLDER}` by "
                        "`python -m analysis landscape`.")
    if mode == "stored":
        return [], (f"No stored landscape grids under `{run.path / LANDSCAPE_FOLDER}`; compute them with "
                    "`python -m analysis landscape RUN_DIR --task NAME`.")
    candidates = [t for t in run.tasks if any((run.path / "models" / t / v).is_dir() for v in ("ltc", "ltc_mhn"))]
    if not candidates:
        return [], "No saved `ltc` or `ltc_mhn` models in this run: no loss landscapes."
    entries, problems = [], []
    for task in candidates[:tasks]:
        try:
            landscapes, metadata = compute_task_landscapes(run, task, **QUICK_LANDSCAPE)
        except Exception as error:  # missing data or an unreadable model: report it, keep going
            problems.append(f"{task}: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
            continue
        from analysis.landscape import save_landscapes

        save_landscapes(out_dir / "landscape" / landscape_file_name(task, metadata["fold"], metadata["seed"]),
                        landscapes, metadata)
        entries.append((task, landscapes, metadata))
    note = (f"Quick landscapes ({QUICK_LANDSCAPE['grid']}×{QUICK_LANDSCAPE['grid']} grid, "
            f"{QUICK_LANDSCAPE['max_rows']} outer-training rows, {QUICK_LANDSCAPE['hessian_iterations']} power "
            f"iterations) for the first {min(tasks, len(candidates))} of {len(candidates)} task(s) with saved "
            "models; grids stored under `landscape/` in this report folder. For publication-size "
            "landscapes run `python -m analysis landscape RUN_DIR --task NAME --grid 25`.")
    if problems:
        note += " Not computed: " + "; ".join(problems) + "."
    return entries, note


def build_report(run: Run, out_dir: Path, landscape: str = "auto", landscape_tasks: int = 2,
                 oat_run: Run | None = None, params=("beta",)) -> Document:
    """Assemble every section of the report (figures are drawn, nothing is written yet)."""
    from analysis.gains import gains_section
    from analysis.sensitivity import parameter_names, sensitivity_section
    from analysis.stability import stability_section

    if landscape not in LANDSCAPE_MODES:
        raise ValueError(f"landscape={landscape!r}: expected one of {', '.join(LANDSCAPE_MODES)}")
    search_run = run
    base = base_run_of(run)
    if base is not None and run.search_results.empty:
        search_run = base  # a one-at-a-time run: its searches live in the base run
    if oat_run is None and run.oat_results.empty:
        siblings = [r for r in sibling_oat_runs(run) if not r.oat_results.empty]
        oat_run = siblings[0] if siblings else None

    document = Document(f"Analysis report: {run.name}", _intro(run))
    if search_run is not run:
        document.intro.append(Paragraph(f"This is a one-at-a-time run; search results are read from its base run "
                                        f"`{search_run.path}`."))
    if oat_run is not None:
        document.intro.append(Paragraph(f"One-at-a-time curves are read from `{oat_run.path}`."))
    document.add(_overview(search_run))
    document.add(gains_section(search_run))
    searched = parameter_names(search_run)
    for index, param in enumerate(params):
        section = sensitivity_section(search_run, param, oat_run=oat_run if oat_run is not None else run,
                                      importances=index == 0)
        document.add(section)
    extra = [p for p in searched if p not in params]
    if extra:
        document.sections[-1].add(Paragraph(
            "Other searched parameters (" + ", ".join(f"`{p}`" for p in extra) + ") are analysed the same way "
            f"with `python -m analysis sensitivity {run.path} --param NAME`."))
    entries, note = landscape_entries(search_run, out_dir, landscape, landscape_tasks)
    document.add(stability_section(search_run, entries, note))
    document.add(_definitions())
    return document


def _definitions() -> Section:
    from analysis.importances import EVALUATOR_NAME
    from analysis.landscape import FLAT_FACTOR
    from analysis.summaries import TIE_TOLERANCE

    return Section("Definitions and reproduction", [Bullets([
        "Per-task score: mean over the successful outer folds (and seeds) of the per-fold metric, from "
        "`results.parquet` rows with `study == \"search\"` and `status == \"ok\"`.",
        "Relative gain: (RMSE_ref − RMSE_var) / RMSE_ref on per-task mean RMSE; positive = the variant is better; "
        f"tie when |gain| < {100 * TIE_TOLERANCE:g} %.",
        "Best baseline: the baseline with the lowest mean RMSE on the task.",
        "Wilcoxon signed-rank test: two-sided, `scipy.stats.wilcoxon` on the per-task relative gains "
        "(scale-free, unlike raw RMSE differences across tasks with different target units).",
        "Critical-difference diagram: autorank, Friedman test with Nemenyi post-hoc on per-task mean RMSE "
        "(lower is better), α = 0.05, tasks where every shown model has results.",
        f"Importances: `{EVALUATOR_NAME}` on each search's completed trials.",
        "Loss landscape: filter-normalised Gaussian directions (Li et al., 2018), 1-D parameters not perturbed, "
        "MSE on standardised targets; sharpness = top Hessian eigenvalue by power iteration on Hessian-vector "
        f"products; flat share = grid points with loss ≤ {FLAT_FACTOR:g}× the grid minimum.",
        "Regenerate: `python -m analysis report RUN_DIR`; sensitivity of another parameter: "
        "`python -m analysis sensitivity RUN_DIR --param hopfield_size`; landscapes: "
        "`python -m analysis landscape RUN_DIR --task NAME --grid 25`.",
    ])])


def write_report(run_dir: Path | str, out_dir: Path | str | None = None, landscape: str = "auto",
                 landscape_tasks: int = 2, oat_run_dir: Path | str | None = None,
                 params=("beta",)) -> ReportPaths:
    """Read ``run_dir``, write the report into ``out_dir`` (default RUN_DIR/report) and return its paths."""
    run = load_run(run_dir)
    oat_run = load_run(oat_run_dir) if oat_run_dir is not None else None
    out = Path(out_dir) if out_dir is not None else default_output(run.path)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    document = build_report(run, out, landscape, landscape_tasks, oat_run, params)
    paths = document.write(out)
    (out / "report.json").write_text(json.dumps({
        "run": str(run.path), "sections": [s.title for s in document.sections],
        "seconds": round(time.perf_counter() - started, 2)}, indent=2))
    return ReportPaths(paths["html"], paths["markdown"], out)


def format_exception(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(error), error)).strip()
