"""Analyses of finished runs: relative-gain summaries, parameter sensitivity and stability diagnostics.

Reads only run directories (results.parquet, trials.parquet, optuna.journal, models/, predictions/);
never starts a search and never imports Ray. Importing this package is cheap: torch, matplotlib,
Optuna and the data layer are imported by the functions that need them.

    python -m analysis report RUN_DIR [--out DIR]
    python -m analysis sensitivity RUN_DIR [--param beta]
    python -m analysis landscape RUN_DIR --task NAME [--variants ltc,ltc_mhn] [--grid 25]
"""

from analysis.runs import Run, RunDirectoryError, load_run
from analysis.summaries import (
    TIE_TOLERANCE,
    GainSummary,
    best_baseline,
    gain_table,
    per_task_means,
    relative_gain,
    summarise_gains,
    wilcoxon_gains,
)


def write_report(run_dir, out_dir=None, **options):
    """Write the full report of ``run_dir`` (see :func:`analysis.report.write_report`); return its paths."""
    from analysis.report import write_report as _write_report

    return _write_report(run_dir, out_dir, **options)


__all__ = [
    "GainSummary",
    "Run",
    "RunDirectoryError",
    "TIE_TOLERANCE",
    "best_baseline",
    "gain_table",
    "load_run",
    "per_task_means",
    "relative_gain",
    "summarise_gains",
    "wilcoxon_gains",
    "write_report",
]
