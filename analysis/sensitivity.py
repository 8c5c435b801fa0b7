"""Hyperparameter sensitivity (β0 by default): validation RMSE of every trial against the parameter,
the same normalised per task, one-at-a-time test-fold curves, and fANOVA importances.

Trials come from trials.parquet (column ``param_<name>``); one-at-a-time curves from
results.parquet rows with ``study == "one_at_a_time"`` and ``oat_param == <name>``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.document import Bullets, Figure, Paragraph, Section
from analysis.names import DEFAULTS, axis_label, model_color, model_label, order_models, parameter_info
from analysis.runs import Run, task_target
from analysis.summaries import successful
from analysis.tables import Table, format_number

SMOOTHING_NOTE = (
    "Trend: Gaussian-kernel (Nadaraya–Watson) smoother of log validation RMSE over the parameter "
    "(log10 axis: bandwidth 0.25 decades) through completed trials."
)


def parameter_trials(trials: pd.DataFrame | None, param: str) -> pd.DataFrame:
    """Trials where ``param`` was searched: task, variant, fold, seed, state, val_rmse, value."""
    column = f"param_{param}"
    columns = ["task", "variant", "fold", "seed", "trial_number", "state", "val_rmse", "value"]
    if trials is None or column not in trials:
        return pd.DataFrame(columns=columns)
    frame = trials[trials[column].notna()].copy()
    frame["value"] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame[columns].reset_index(drop=True)


def normalise_by_best(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``relative_val_rmse`` = val_rmse / the lowest val_rmse of any trial on the same task, fold and seed.

    The best is taken over every variant in ``frame``, so variants stay comparable, and per
    outer fold, because each fold has its own validation rows.
    """
    frame = frame.copy()
    best = frame.groupby(["task", "fold", "seed"])["val_rmse"].transform("min")
    frame["relative_val_rmse"] = frame["val_rmse"] / best
    return frame


def _draw_trials(axis, rows: pd.DataFrame, variant: str, log_x: bool) -> None:
    from analysis.figures import jitter, kernel_trend

    color = model_color(variant)
    rng = np.random.default_rng(0)
    complete = rows[(rows["state"] == "COMPLETE") & np.isfinite(rows["val_rmse"])]
    pruned = rows[(rows["state"] == "PRUNED") & np.isfinite(rows["val_rmse"])]
    axis.scatter(jitter(complete["value"], log_x, rng), complete["val_rmse"], s=14, color=color, alpha=0.7,
                 lw=0, label=f"{model_label(variant)} (completed)")
    if len(pruned):
        axis.scatter(jitter(pruned["value"], log_x, rng), pruned["val_rmse"], s=14, facecolors="none",
                     edgecolors=color, alpha=0.7, lw=0.8, label=f"{model_label(variant)} (pruned)")
    trend = kernel_trend(complete["value"], complete["val_rmse"], log_x)
    if trend is not None:
        axis.plot(*trend, color=color, lw=1.8)


def _mark_default(axis, param: str) -> None:
    if param in DEFAULTS:
        axis.axvline(DEFAULTS[param], color="#777", lw=0.8, ls=":", label=f"default {param} = {DEFAULTS[param]:g}")


def _mark_failed(axis, rows: pd.DataFrame) -> int:
    failed = rows[~np.isfinite(rows["val_rmse"]) | (rows["state"] == "FAILED")]
    for variant, group in failed.groupby("variant"):
        axis.scatter(group["value"], np.full(len(group), 0.97), marker="x", s=18,
                     color=model_color(variant), transform=axis.get_xaxis_transform(), clip_on=False)
    return len(failed)


def trials_figure(frame: pd.DataFrame, param: str) -> Figure | None:
    """One panel per task: validation RMSE of every trial against the parameter, per variant."""
    from analysis.figures import panel_grid, parameter_ticks, plain_log_ticks, spans_decades

    if frame.empty:
        return None
    info = parameter_info(param, frame["value"])
    tasks = list(dict.fromkeys(frame["task"]))
    figure, axes = panel_grid(len(tasks), columns=3, width=3.4, height=2.8)
    any_failed = 0
    for axis, task in zip(axes, tasks):
        rows = frame[frame["task"] == task]
        for variant in order_models(rows["variant"].unique()):
            _draw_trials(axis, rows[rows["variant"] == variant], variant, info.log)
        if info.log:
            axis.set_xscale("log")
        parameter_ticks(axis, frame["value"], info.log)
        if spans_decades(rows["val_rmse"]):
            axis.set_yscale("log")
            plain_log_ticks(axis, "y")
        _mark_default(axis, param)
        any_failed += _mark_failed(axis, rows)
        target = task_target(task)
        axis.set_title(task + (f" (target: {target})" if target else ""))
        axis.set_xlabel(axis_label(info))
        axis.set_ylabel("validation RMSE [target units]")
    figure.tight_layout()
    _legend_below(figure, axes, extra_failed=any_failed > 0)
    caption = (
        f"Validation RMSE (original target units) of every search trial against {info.label}, one "
        f"panel per task, all outer folds pooled; filled = completed, hollow = pruned (best "
        f"validation RMSE before pruning). {SMOOTHING_NOTE}"
    )
    if any_failed:
        caption += " × at the top edge: failed or diverged trials (no validation RMSE)."
    return Figure(f"sensitivity_{param}_per_task", figure, caption)


def _legend_below(figure, axes, extra_failed: bool = False) -> None:
    """One legend for all panels, under the figure (call after ``tight_layout``)."""
    from matplotlib.lines import Line2D

    handles = {}
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if extra_failed:
        handles["failed / diverged"] = Line2D([], [], marker="x", ls="", color="#444")
    if handles:
        figure.legend(list(handles.values()), list(handles.keys()), loc="upper center",
                      ncol=min(4, len(handles)), frameon=False, bbox_to_anchor=(0.5, 0.0))


def normalised_figure(frame: pd.DataFrame, param: str) -> Figure | None:
    """Across tasks: validation RMSE / the task's best, one panel per variant, one trend line per task."""
    from analysis.figures import jitter, kernel_trend, panel_grid, parameter_ticks, plain_log_ticks

    frame = normalise_by_best(frame)
    frame = frame[np.isfinite(frame["relative_val_rmse"])]
    if frame.empty:
        return None
    info = parameter_info(param, frame["value"])
    variants = order_models(frame["variant"].unique())
    figure, axes = panel_grid(len(variants), columns=3, width=3.8, height=3.0, sharey=True)
    for axis, variant in zip(axes, variants):
        rows = frame[(frame["variant"] == variant) & (frame["state"] == "COMPLETE")]
        color = model_color(variant)
        axis.scatter(jitter(rows["value"], info.log, np.random.default_rng(0)), rows["relative_val_rmse"], s=8,
                     color=color, alpha=0.25, lw=0)
        for _, task_rows in rows.groupby("task"):
            trend = kernel_trend(task_rows["value"], task_rows["relative_val_rmse"], info.log)
            if trend is not None:
                axis.plot(*trend, color=color, lw=0.8, alpha=0.5)
        overall = kernel_trend(rows["value"], rows["relative_val_rmse"], info.log)
        if overall is not None:
            axis.plot(*overall, color="black", lw=2.0, label="all tasks")
            axis.plot([], [], color=color, lw=0.8, alpha=0.6, label="one task")
            axis.legend(frameon=False, loc="upper left")
        axis.axhline(1.0, color="#555", lw=0.8, ls="--")
        _mark_default(axis, param)
        if info.log:
            axis.set_xscale("log")
        parameter_ticks(axis, frame["value"], info.log)
        axis.set_yscale("log")
        plain_log_ticks(axis, "y")
        axis.set_title(f"{model_label(variant)} ({rows['task'].nunique()} tasks)")
        axis.set_xlabel(axis_label(info))
        axis.set_ylabel("val. RMSE / task's best [ratio]")
    figure.tight_layout()
    return Figure(
        f"sensitivity_{param}_normalised", figure,
        f"Validation RMSE of completed trials divided by the lowest validation RMSE of any trial on "
        f"the same task, outer fold and seed (1 = the task's best), against {info.label}; thin lines: "
        f"per-task trends, black: trend over all tasks. {SMOOTHING_NOTE}",
    )


def one_at_a_time(results: pd.DataFrame, param: str) -> pd.DataFrame:
    """Mean and sd of test RMSE per task, variant and parameter value of one-at-a-time studies."""
    rows = results[(results["study"] == "one_at_a_time") & (results["oat_param"] == param)]
    rows = rows[(rows["status"] == "ok") & np.isfinite(rows["rmse"])]
    if rows.empty:
        return pd.DataFrame(columns=["task", "variant", "value", "rmse_mean", "rmse_std", "folds"])
    grouped = rows.groupby(["task", "variant", "oat_value"])["rmse"]
    table = grouped.agg(rmse_mean="mean", rmse_std="std", folds="count").reset_index()
    return table.rename(columns={"oat_value": "value"})


def oat_figure(curves: pd.DataFrame, search: pd.DataFrame, param: str) -> Figure | None:
    """One panel per task: test RMSE against the parameter with everything else at the best configuration."""
    from analysis.figures import panel_grid, parameter_ticks, plain_log_ticks, spans_decades

    if curves.empty:
        return None
    info = parameter_info(param, curves["value"])
    tasks = list(dict.fromkeys(curves["task"]))
    search_means = successful(search).groupby(["task", "variant"])["rmse"].mean()
    figure, axes = panel_grid(len(tasks), columns=3, width=3.4, height=2.8)
    for axis, task in zip(axes, tasks):
        rows = curves[curves["task"] == task]
        for variant in order_models(rows["variant"].unique()):
            line = rows[rows["variant"] == variant].sort_values("value")
            color = model_color(variant)
            axis.plot(line["value"], line["rmse_mean"], marker="o", ms=3.5, color=color,
                      label=f"{model_label(variant)}: {info.symbol} varied")
            spread = line["rmse_std"].fillna(0.0)
            axis.fill_between(line["value"], line["rmse_mean"] - spread, line["rmse_mean"] + spread,
                              color=color, alpha=0.15, lw=0)
            if (task, variant) in search_means.index:
                axis.axhline(search_means[(task, variant)], color=color, lw=0.9, ls="--",
                             label=f"{model_label(variant)}: searched configuration")
        if info.log:
            axis.set_xscale("log")
        parameter_ticks(axis, curves["value"], info.log)
        if spans_decades(rows["rmse_mean"]):
            axis.set_yscale("log")
            plain_log_ticks(axis, "y")
        target = task_target(task)
        axis.set_title(task + (f" (target: {target})" if target else ""))
        axis.set_xlabel(axis_label(info))
        axis.set_ylabel("test RMSE [target units]")
    figure.tight_layout()
    _legend_below(figure, axes)
    return Figure(
        f"sensitivity_{param}_one_at_a_time", figure,
        f"One-at-a-time sensitivity: mean test RMSE over outer test folds (band: ± one standard "
        f"deviation over folds) when only {info.label} varies and every other hyperparameter is held "
        f"at the search's best configuration; dashed: the searched model's mean test RMSE.",
    )


def trials_summary_table(frame: pd.DataFrame, param: str) -> Table | None:
    """Per task and variant: trials, best validation RMSE and the parameter value of the best trial."""
    if frame.empty:
        return None
    records = []
    for (task, variant), rows in frame.groupby(["task", "variant"], sort=False):
        finite = rows[np.isfinite(rows["val_rmse"])]
        best = finite.loc[finite["val_rmse"].idxmin()] if len(finite) else None
        records.append({
            "task": task, "variant": model_label(variant), "trials": len(rows),
            "failed": int((~np.isfinite(rows["val_rmse"]) | (rows["state"] == "FAILED")).sum()),
            f"{param} range": f"{format_number(rows['value'].min(), 3)} – {format_number(rows['value'].max(), 3)}",
            "best val RMSE": best["val_rmse"] if best is not None else np.nan,
            f"{param} of best": best["value"] if best is not None else np.nan,
        })
    values = pd.DataFrame.from_records(records).set_index(["task", "variant"])
    values.index = [f"{t} / {v}" for t, v in values.index]
    text = values.astype(object).copy()
    for column in ("best val RMSE", f"{param} of best"):
        text[column] = values[column].map(format_number)
    return Table(f"sensitivity_{param}_trials", f"Trials per task and variant that searched {param}, "
                 "their range, and the best validation RMSE (original target units, outer folds pooled).",
                 values, text.astype(str), index_label="task / variant")


def sensitivity_section(run: Run, param: str = "beta", oat_run: Run | None = None,
                        importances: bool = True) -> Section:
    """The report section for one parameter (title names it; β0 for ``beta``)."""
    info = parameter_info(param)
    section = Section(f"Sensitivity to {info.label}" if param != "beta" else "β-sensitivity")
    frame = parameter_trials(run.trials, param)
    if run.trials is None:
        section.add(Paragraph("No `trials.parquet` in this run: trial-level sensitivity unavailable."))
    elif frame.empty:
        section.add(Paragraph(f"No trial in this run searched `{param}` (no non-null `param_{param}`)."))
    else:
        searched = ", ".join(model_label(v) for v in order_models(frame["variant"].unique()))
        section.add(Paragraph(
            f"{len(frame)} trials of {frame['task'].nunique()} task(s) searched `{param}` "
            f"(variants: {searched})."))
        for block in (trials_figure(frame, param), normalised_figure(frame, param),
                      trials_summary_table(frame, param)):
            if block is not None:
                section.add(block)

    oat = Section("One-at-a-time curves on the outer test folds")
    source = oat_run if oat_run is not None else run
    curves = one_at_a_time(source.results, param)
    figure = oat_figure(curves, run.results, param)
    if figure is None:
        oat.add(Paragraph(
            f"No one-at-a-time study of `{param}` in {'the given run' if oat_run else 'this run'} "
            "(results rows with `study == \"one_at_a_time\"` and "
            f"`oat_param == \"{param}\"`); run the `beta_sensitivity` study to produce them."))
    else:
        oat.add(figure)
        values = curves.set_index(["task", "variant", "value"])
        oat.add(Table.from_values(f"sensitivity_{param}_one_at_a_time",
                                  f"One-at-a-time test RMSE (mean and sd over outer folds) per value of {param}.",
                                  values.reset_index(drop=False).set_index("task"), index_label="task"))
    section.add(oat)

    if importances:
        from analysis.importances import importance_section

        section.add(importance_section(run))
    return section


def parameter_names(run: Run) -> list[str]:
    """The searched hyperparameters of a run (``param_*`` columns of trials.parquet with values)."""
    if run.trials is None:
        return []
    return [c[len("param_"):] for c in run.trials.columns
            if c.startswith("param_") and run.trials[c].notna().any()]


def no_trials_note(param: str, available: list[str]) -> Bullets:
    return Bullets([f"`{param}` was not searched in this run; searched: "
                    + (", ".join(f"`{p}`" for p in available) or "none")])
