"""Critical-difference diagram of mean ranks across tasks (Friedman test + Nemenyi post-hoc, via autorank)."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.names import model_color, model_label

MIN_TASKS = 5
"""autorank needs at least five rows (tasks) per population."""
MIN_MODELS = 3
"""A CD diagram (Nemenyi) needs three or more models; two are compared by the Wilcoxon test instead."""


@dataclass
class RankAnalysis:
    """The outcome of :func:`critical_difference`: a figure and a rank table, or a reason for neither."""

    figure: object | None
    ranks: pd.DataFrame | None
    pvalue: float
    critical_difference: float
    tasks: list[str]
    models: list[str]
    note: str


def complete_block(means: pd.DataFrame) -> pd.DataFrame:
    """The largest simple block of tasks × models without gaps.

    Models with no value at all are dropped; then, while fewer than :data:`MIN_TASKS` tasks are
    complete and more than :data:`MIN_MODELS` models remain, the model missing on most tasks is
    dropped. Tasks with any remaining gap are left out.
    """
    block = means.dropna(axis=1, how="all")
    while block.shape[1] > MIN_MODELS and block.dropna().shape[0] < MIN_TASKS:
        block = block.drop(columns=block.isna().sum().idxmax())
    return block.dropna(axis=0, how="any")


def critical_difference(means: pd.DataFrame, alpha: float = 0.05) -> RankAnalysis:
    """Rank models by mean RMSE per task (lower is better) and draw autorank's CD diagram.

    Always uses the non-parametric route (Friedman omnibus test, Nemenyi post-hoc), so the plot
    is a CD diagram whatever the data look like. Too few tasks or models gives a note instead.
    """
    block = complete_block(means)
    tasks, models = list(block.index), list(block.columns)
    if len(models) < MIN_MODELS or len(tasks) < MIN_TASKS:
        return RankAnalysis(
            None, None, np.nan, np.nan, tasks, models,
            f"not enough tasks for a critical-difference diagram (need ≥ {MIN_TASKS} tasks on which "
            f"≥ {MIN_MODELS} models all have results; this run has {len(tasks)} such task(s) "
            f"for {len(models)} model(s))",
        )
    from autorank import autorank, plot_stats

    import analysis.figures  # noqa: F401  (Agg backend and style)
    import matplotlib.pyplot as plt

    data = block.rename(columns=model_label).reset_index(drop=True)
    data.columns.name = None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        result = autorank(data, alpha=alpha, verbose=False, order="ascending", force_mode="nonparametric")
        figure, axis = plt.subplots(figsize=(6.5, 0.6 + 0.32 * len(models)))
        plot_stats(result, allow_insignificant=True, ax=axis)
    colors = {model_label(m): model_color(m) for m in models}
    for text in axis.texts:
        if text.get_text() in colors:
            text.set_color(colors[text.get_text()])
    axis.set_title(f"mean rank by RMSE over {len(tasks)} tasks (1 = best)", pad=6)
    ranks = result.rankdf[["meanrank"]].rename(columns={"meanrank": "mean rank"})
    labels_to_names = {model_label(m): m for m in models}
    ranks.index = [labels_to_names.get(i, i) for i in ranks.index]
    note = (
        f"Friedman test p = {result.pvalue:.3g}; Nemenyi critical difference CD = {result.cd:.3f} "
        f"at α = {alpha} over {len(tasks)} tasks and {len(models)} models (bars join models whose "
        "mean ranks differ by less than CD)."
    )
    return RankAnalysis(figure, ranks, float(result.pvalue), float(result.cd), tasks, models, note)
