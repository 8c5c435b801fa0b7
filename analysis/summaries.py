"""Per-task means and relative-gain summaries, recomputable by hand from results.parquet.

Every number here comes from the successful rows of the main searches:
``results[(results.study == "search") & (results.status == "ok")]``. A model's score on a task
is the mean over its rows (outer folds, and seeds when there are several) of the per-fold metric,
so ``mean RMSE`` is the mean of per-fold RMSE, as the protocol asks.

Relative gain of a variant over a reference on one task:
``gain = (RMSE_ref − RMSE_var) / RMSE_ref`` (positive = the variant is better). A task counts as a
tie when ``|gain| < TIE_TOLERANCE`` (0.5 %), a win above it, a loss below minus it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.names import BASELINES, order_models

TIE_TOLERANCE = 0.005
"""|relative gain| below which a task counts as a tie (0.5 % of the reference RMSE)."""

METRICS = ("rmse", "mae", "r2")
LOWER_IS_BETTER = {"rmse": True, "mae": True, "r2": False}
BEST_BASELINE = "best_baseline"


def successful(results: pd.DataFrame) -> pd.DataFrame:
    """The rows that enter every summary: main-search rows with status ok and a finite RMSE."""
    study = results["study"].fillna("search") if "study" in results else "search"
    keep = (study == "search") & (results["status"] == "ok") & np.isfinite(results["rmse"])
    return results[keep]


def per_task_means(results: pd.DataFrame, metric: str = "rmse") -> pd.DataFrame:
    """Table task × model of the mean over successful rows of ``metric``; NaN where none."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: expected one of {', '.join(METRICS)}")
    rows = successful(results)
    table = rows.groupby(["task", "variant"])[metric].mean().unstack("variant")
    return table.reindex(columns=order_models(table.columns))


def per_task_stds(results: pd.DataFrame, metric: str = "rmse") -> pd.DataFrame:
    """Table task × model of the sample standard deviation (ddof=1) of ``metric`` over the rows."""
    rows = successful(results)
    table = rows.groupby(["task", "variant"])[metric].std(ddof=1).unstack("variant")
    return table.reindex(columns=order_models(table.columns))


def coverage(results: pd.DataFrame, tasks=None, models=None) -> pd.DataFrame:
    """Long table per task × model: rows ok, rows failed, expected rows, and a status word.

    Expected rows for a task = the distinct (fold, seed) pairs of any model's main-search rows on
    it. status is ``complete``, ``partial`` (fewer ok rows than expected), ``failed`` (rows, none
    ok) or ``missing`` (no rows at all).
    """
    search = results[results["study"].fillna("search") == "search"]
    ok = successful(results)
    tasks = list(dict.fromkeys(list(tasks if tasks is not None else []) + list(search["task"].unique())))
    models = order_models(list(models if models is not None else []) + list(search["variant"].unique()))
    expected = search.groupby("task")[["fold", "seed"]].apply(lambda f: len(f.drop_duplicates()))
    n_ok = ok.groupby(["task", "variant"]).size()
    n_all = search.groupby(["task", "variant"]).size()
    records = []
    for task in tasks:
        for model in models:
            good = int(n_ok.get((task, model), 0))
            total = int(n_all.get((task, model), 0))
            want = int(expected.get(task, 0))
            if total == 0:
                status = "missing"
            elif good == 0:
                status = "failed"
            elif good < want:
                status = "partial"
            else:
                status = "complete"
            records.append(
                {"task": task, "variant": model, "ok": good, "failed": total - good,
                 "expected": want, "status": status}
            )
    return pd.DataFrame.from_records(
        records, columns=["task", "variant", "ok", "failed", "expected", "status"]
    )


def rank_marks(values: pd.DataFrame, lower_is_better: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per row: a mask of the best value(s) (bold) and of the second-best value(s) (underline).

    Ties share a place: all values equal to the best are bold, and the next distinct value is
    underlined. NaN cells are never marked.
    """
    bold = pd.DataFrame(False, index=values.index, columns=values.columns)
    underline = bold.copy()
    for index, row in values.iterrows():
        finite = pd.to_numeric(row, errors="coerce").dropna()
        distinct = np.unique(finite.to_numpy(dtype=float))
        if distinct.size == 0:
            continue
        ordered = distinct if lower_is_better else distinct[::-1]
        bold.loc[index] = (row == ordered[0]).fillna(False).astype(bool)
        if ordered.size > 1:
            underline.loc[index] = (row == ordered[1]).fillna(False).astype(bool)
    return bold, underline


def best_baseline(means: pd.DataFrame) -> pd.DataFrame:
    """Per task: the baseline with the lowest mean RMSE (columns ``name``, ``rmse``); NaN if none."""
    baselines = [name for name in BASELINES if name in means.columns]
    frame = pd.DataFrame(index=means.index, columns=["name", "rmse"], dtype=object)
    if not baselines:
        frame["rmse"] = np.nan
        return frame
    sub = means[baselines]
    has_any = sub.notna().any(axis=1)
    frame["name"] = sub[has_any].idxmin(axis=1).reindex(means.index)
    frame["rmse"] = sub.min(axis=1)
    frame["rmse"] = frame["rmse"].astype(float)
    return frame


def relative_gain(rmse_variant, rmse_reference):
    """``(RMSE_ref − RMSE_var) / RMSE_ref``: the fraction of the reference's error removed."""
    rmse_variant = np.asarray(rmse_variant, dtype=float)
    rmse_reference = np.asarray(rmse_reference, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (rmse_reference - rmse_variant) / rmse_reference


def outcome(gain: float, tolerance: float = TIE_TOLERANCE) -> str:
    """``win`` / ``tie`` / ``loss`` for one relative gain; ``missing`` when it is NaN."""
    if not np.isfinite(gain):
        return "missing"
    if gain > tolerance:
        return "win"
    if gain < -tolerance:
        return "loss"
    return "tie"


def gain_table(means: pd.DataFrame, variant: str, reference: str) -> pd.DataFrame:
    """Per task: RMSE of ``variant`` and of ``reference``, the reference's name, gain and outcome.

    ``reference`` is a model name or ``"best_baseline"`` (the baseline with the lowest mean RMSE
    on that task). Tasks where either side is missing have a NaN gain and outcome ``missing``.
    """
    frame = pd.DataFrame(index=means.index)
    frame["rmse_variant"] = means[variant] if variant in means else np.nan
    if reference == BEST_BASELINE:
        best = best_baseline(means)
        frame["reference"] = best["name"]
        frame["rmse_reference"] = best["rmse"].astype(float)
    else:
        frame["reference"] = reference if reference in means else None
        frame["rmse_reference"] = means[reference] if reference in means else np.nan
    frame["gain"] = relative_gain(frame["rmse_variant"], frame["rmse_reference"])
    frame["outcome"] = [outcome(g) for g in frame["gain"]]
    return frame


@dataclass(frozen=True)
class GainSummary:
    """Across-task summary of one variant's relative gains over one reference."""

    variant: str
    reference: str
    n_tasks: int
    mean: float
    median: float
    wins: int
    ties: int
    losses: int
    wilcoxon_statistic: float
    wilcoxon_pvalue: float
    wilcoxon_note: str

    @property
    def record(self) -> str:
        return f"{self.wins} / {self.ties} / {self.losses}"


def wilcoxon_gains(gains) -> tuple[float, float, str]:
    """Two-sided Wilcoxon signed-rank test that the median per-task relative gain is zero.

    Uses ``scipy.stats.wilcoxon(gains)`` (zero_method ``"wilcox"``: exact zeros are dropped;
    scipy picks the exact null distribution for small samples). Testing the relative gains
    rather than raw RMSE differences keeps the test scale-free: tasks' RMSEs differ by orders
    of magnitude, and raw differences would rank tasks by their target units.
    Returns (statistic, p-value, note); NaN and a reason when the test cannot be run.
    """
    gains = np.asarray(gains, dtype=float)
    gains = gains[np.isfinite(gains)]
    nonzero = int(np.count_nonzero(gains))
    if nonzero < 2:
        return np.nan, np.nan, f"not computable: {nonzero} task(s) with a non-zero gain (need ≥ 2)"
    from scipy import stats

    result = stats.wilcoxon(gains, alternative="two-sided", zero_method="wilcox")
    note = f"two-sided, n = {gains.size} tasks"
    if nonzero < gains.size:
        note += f" ({gains.size - nonzero} exact zero(s) dropped)"
    if gains.size < 6:
        note += "; with fewer than 6 tasks no p-value can fall below 0.05"
    return float(result.statistic), float(result.pvalue), note


def summarise_gains(table: pd.DataFrame, variant: str, reference: str) -> GainSummary:
    """Mean, median, wins/ties/losses and the Wilcoxon test over the tasks where both sides exist."""
    gains = table["gain"].to_numpy(dtype=float)
    finite = gains[np.isfinite(gains)]
    outcomes = table["outcome"]
    statistic, pvalue, note = wilcoxon_gains(finite)
    return GainSummary(
        variant=variant,
        reference=reference,
        n_tasks=int(finite.size),
        mean=float(finite.mean()) if finite.size else np.nan,
        median=float(np.median(finite)) if finite.size else np.nan,
        wins=int((outcomes == "win").sum()),
        ties=int((outcomes == "tie").sum()),
        losses=int((outcomes == "loss").sum()),
        wilcoxon_statistic=statistic,
        wilcoxon_pvalue=pvalue,
        wilcoxon_note=note,
    )


def mean_ranks(means: pd.DataFrame) -> pd.Series:
    """Mean rank (1 = lowest RMSE, ties share the average rank) over tasks where every model has a value."""
    complete = means.dropna(axis=0, how="any")
    if complete.empty:
        return pd.Series(np.nan, index=means.columns)
    return complete.rank(axis=1, method="average").mean(axis=0)
