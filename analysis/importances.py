"""Hyperparameter importances per search with Optuna's fANOVA evaluator, read from the run's journal.

The evaluator is named explicitly (``optuna.importance.FanovaImportanceEvaluator``, seed 0, its
default 64 trees of depth ≤ 64) rather than Optuna's default; importances are normalised to sum
to 1 per search and averaged over outer folds and seeds per task and variant. The journal is
opened through a backend that refuses writes, so analysis never changes a run.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.document import Figure, Paragraph, Section
from analysis import names
from analysis.names import model_color, model_label, order_models
from analysis.runs import Run, parse_study_name
from analysis.tables import Table

EVALUATOR_SEED = 0
MIN_COMPLETED_TRIALS = 2
EVALUATOR_NAME = "optuna.importance.FanovaImportanceEvaluator"


def open_journal(path: Path | str):
    """A read-only Optuna JournalStorage over an existing journal file."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Optuna journal at {path}")

    class ReadOnlyJournalFileBackend(JournalFileBackend):
        """Reads the log; any attempt to write raises instead of touching the run."""

        def append_logs(self, logs):  # noqa: D401
            raise PermissionError(f"analysis opens {path} read-only")

    return JournalStorage(ReadOnlyJournalFileBackend(str(path)))


def study_importances(study, seed: int = EVALUATOR_SEED) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances of one study, or None and the reason it cannot be computed."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_COMPLETED_TRIALS:
        return None, f"not enough trials ({len(complete)} completed, need ≥ {MIN_COMPLETED_TRIALS})"
    if not any(trial.params for trial in complete):
        return None, "no searched parameters"
    values = np.array([trial.value for trial in complete], dtype=float)
    if not np.isfinite(values).all() or np.ptp(values) == 0:
        return None, "objective values are constant or non-finite"
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        return None, f"fANOVA failed: {error}"
    if not importances:
        return None, "no parameter shared by all completed trials"
    return {name: float(value) for name, value in importances.items()}, "ok"


def run_importances(journal_path: Path | str, seed: int = EVALUATOR_SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Importances of every search in a journal.

    Returns (importances, skipped): the first with columns task, variant, fold, seed, param,
    importance; the second with task, variant, fold, seed, reason for searches left out.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    storage = open_journal(journal_path)
    records, skipped = [], []
    for summary in storage.get_all_studies():
        parts = parse_study_name(summary.study_name)
        if parts is None:
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        importances, reason = study_importances(study, seed)
        if importances is None:
            skipped.append({**parts, "reason": reason})
            continue
        records += [{**parts, "param": name, "importance": value} for name, value in importances.items()]
    return (
        pd.DataFrame.from_records(records, columns=["task", "variant", "fold", "seed", "param", "importance"]),
        pd.DataFrame.from_records(skipped, columns=["task", "variant", "fold", "seed", "reason"]),
    )


def mean_importances(importances: pd.DataFrame) -> pd.DataFrame:
    """Mean importance per (task, variant) × parameter over folds and seeds."""
    if importances.empty:
        return pd.DataFrame()
    table = importances.groupby(["task", "variant", "param"])["importance"].mean().unstack("param")
    order = table.mean(axis=0).sort_values(ascending=False).index
    return table[order]


def importance_figure(importances: pd.DataFrame) -> Figure | None:
    """One panel per variant: mean importance over tasks (bars) with each task's value (dots)."""
    from analysis.figures import panel_grid

    table = mean_importances(importances)
    if table.empty:
        return None
    variants = order_models(table.index.get_level_values("variant").unique())
    figure, axes = panel_grid(len(variants), columns=3, width=3.6, height=0.9 + 0.32 * table.shape[1])
    for axis, variant in zip(axes, variants):
        rows = table.xs(variant, level="variant").dropna(axis=1, how="all")
        order = rows.mean(axis=0).sort_values().index
        positions = np.arange(len(order))
        axis.barh(positions, rows[order].mean(axis=0), color=model_color(variant), alpha=0.75,
                  height=0.6, label="mean over tasks")
        for _, task_row in rows[order].iterrows():
            axis.scatter(task_row.to_numpy(), positions, s=10, color="black", zorder=3)
        axis.scatter([], [], s=10, color="black", label="one task")
        axis.set_yticks(positions, [_param_tick(p) for p in order])
        axis.set_xlim(0, 1)
        axis.set_xlabel("fANOVA importance [share of variance, 0–1]")
        axis.set_title(f"{model_label(variant)} ({len(rows)} task(s))")
        axis.grid(axis="y", visible=False)
        axis.legend(frameon=False, loc="lower right")
    figure.tight_layout()
    return Figure("importances_fanova", figure,
                  f"Hyperparameter importances per variant from {EVALUATOR_NAME}(seed={EVALUATOR_SEED}) on "
                  "each search's completed trials (objective: validation RMSE), normalised to sum to 1, "
                  "averaged over outer folds and seeds; bars: mean over tasks.")


def _in_run_order(table: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    order = {task: i for i, task in enumerate(tasks)}
    keys = [(order.get(task, len(order)), task, order_models([v, *names.MODEL_NAMES]).index(v))
            for task, v in table.index]
    return table.iloc[sorted(range(len(keys)), key=keys.__getitem__)]


def importance_section(run: Run) -> Section:
    """Report subsection with the importance table and figure, or why they are absent."""
    section = Section("Parameter importances (fANOVA)")
    if run.journal_path is None:
        return section.add(Paragraph("No `optuna.journal` in this run: importances unavailable."))
    try:
        importances, skipped = run_importances(run.journal_path)
    except Exception as error:  # a damaged journal must not stop the report
        return section.add(Paragraph(f"The Optuna journal could not be read: {error}."))
    section.add(Paragraph(
        f"Evaluator: `{EVALUATOR_NAME}` (seed {EVALUATOR_SEED}, 64 trees), named explicitly rather than "
        "Optuna's default evaluator; each search's importances sum to 1 and are averaged over outer "
        "folds and seeds."))
    table = mean_importances(importances)
    if table.empty:
        reasons = sorted(set(skipped["reason"])) if len(skipped) else ["no searches in the journal"]
        section.add(Paragraph("Not enough trials for fANOVA importances in any search ("
                              + "; ".join(reasons) + ")."))
        return section
    figure = importance_figure(importances)
    if figure is not None:
        section.add(figure)
    values = _in_run_order(table, run.tasks)
    values.index = [f"{task} / {model_label(variant)}" for task, variant in values.index]
    section.add(Table.from_values(
        "importances_fanova",
        f"Mean fANOVA importance per task and variant ({EVALUATOR_NAME}, seed {EVALUATOR_SEED}); the most "
        "important parameter per row bold, second underlined; — = not searched for that variant.",
        values, lower_is_better=False, index_label="task / variant"))
    if len(skipped):
        counts = skipped.groupby("reason").size()
        section.add(Paragraph("Searches left out: " + "; ".join(f"{n} × {reason}" for reason, n in counts.items()) + "."))
    return section


def _param_tick(name: str) -> str:
    from analysis.names import PARAMETERS

    readable = name.replace("_", " ")
    info = PARAMETERS.get(name)
    return f"{readable} ({info.symbol})" if info is not None and info.symbol != readable else readable
