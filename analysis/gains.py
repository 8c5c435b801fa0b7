"""The report's relative-gain section: per-task tables, ablations, gains, Wilcoxon test, CD diagram."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.document import Bullets, Figure, Paragraph, Section
from analysis.names import (
    ABLATION_VARIANTS,
    BASELINES,
    MAIN_VARIANT,
    NO_MEMORY_VARIANT,
    model_color,
    model_label,
)
from analysis.runs import Run
from analysis.summaries import (
    BEST_BASELINE,
    TIE_TOLERANCE,
    coverage,
    gain_table,
    per_task_means,
    per_task_stds,
    rank_marks,
    summarise_gains,
    successful,
)
from analysis.tables import (
    Table,
    dagger_where,
    format_number,
    format_percent,
    format_pvalue,
)


def splits_statement(run: Run) -> str:
    """One sentence naming the splits, folds and seeds behind the numbers."""
    rows = successful(run.results)
    folds = sorted(rows["fold"].unique().tolist())
    seeds = sorted(rows["seed"].unique().tolist())
    repeats = sorted(rows["repeat"].unique().tolist()) or [0]
    splits = ", ".join(run.splits)
    text = (
        f"Splits: {splits} OpenML outer splits, repeat {', '.join(map(str, repeats))}, "
        f"folds {_ranges(folds)}; seeds {_ranges(seeds)}."
    )
    if "reconstructed" in run.splits:
        text += " Reconstructed splits are not comparable with scores on OpenML's official folds."
    return text


def _ranges(values: list[int]) -> str:
    if not values:
        return "none"
    if values == list(range(values[0], values[-1] + 1)) and len(values) > 2:
        return f"{values[0]}–{values[-1]}"
    return ", ".join(map(str, values))


def partial_mask(run: Run, means: pd.DataFrame) -> pd.DataFrame:
    """True where a model has fewer successful folds × seeds on a task than expected."""
    cover = coverage(run.results, means.index, means.columns)
    partial = cover.assign(flag=cover["status"] == "partial").pivot(index="task", columns="variant", values="flag")
    return partial.reindex(index=means.index, columns=means.columns).fillna(False).astype(bool)


def _all_tasks_means(run: Run, metric: str) -> pd.DataFrame:
    means = per_task_means(run.results, metric)
    return means.reindex(index=run.tasks, columns=run.models)


def metric_table(run: Run, metric: str) -> Table:
    """Per task × model mean of ``metric`` with best bold, second underlined, † for partial coverage."""
    means = _all_tasks_means(run, metric)
    lower = metric != "r2"
    table = Table.from_values(
        f"{metric}_per_task",
        "",
        means.rename(columns=model_label),
        lower_is_better=lower,
    )
    table.text = dagger_where(table.text, partial_mask(run, means).rename(columns=model_label))
    name = {"rmse": "RMSE", "mae": "MAE", "r2": "R²"}[metric]
    better = "lower" if lower else "higher"
    table.caption = (
        f"Mean {name} on the outer test folds (mean over folds{' and seeds' if _many_seeds(run) else ''} "
        f"of the per-fold {name}{'' if metric == 'r2' else ', original target units'}) per task and "
        f"model; {better} is better; best per row bold, second underlined. {splits_statement(run)}"
    )
    table.notes = ["— = missing (no successful fold); † = fewer successful folds than expected for the task."]
    return table


def _many_seeds(run: Run) -> bool:
    return successful(run.results)["seed"].nunique() > 1


def ablation_table(run: Run) -> Table:
    """Mean ± sd RMSE of the ablation variants per task, best bold, second underlined."""
    tasks = run.tasks
    means = per_task_means(run.results).reindex(index=tasks, columns=list(ABLATION_VARIANTS))
    stds = per_task_stds(run.results).reindex(index=tasks, columns=list(ABLATION_VARIANTS))
    text = means.copy().astype(object)
    for column in means.columns:
        text[column] = [
            format_number(m) + ("" if not np.isfinite(s) else f" ± {format_number(s, 2)}")
            for m, s in zip(means[column], stds[column])
        ]
    text = text.where(means.notna(), "—")
    text = dagger_where(text.astype(str), partial_mask(run, means))
    bold, underline = rank_marks(means)
    labels = {v: model_label(v) for v in ABLATION_VARIANTS}
    return Table(
        "ablation",
        "Ablations: mean RMSE ± sample standard deviation over outer test folds per task (original "
        "target units; lower is better; best bold, second underlined). LTC = no memory; zero β = "
        "uniform retrieval; fixed β = β held at β0; matched LTC = LTC widened to LTC+MHN's parameter "
        f"count. {splits_statement(run)}",
        means.rename(columns=labels),
        text.rename(columns=labels),
        bold.rename(columns=labels),
        underline.rename(columns=labels),
        notes=["— = missing; † = fewer successful folds than expected."],
    )


def ablation_summary(run: Run) -> Table:
    """Gain of LTC+MHN over each other ablation variant, across tasks."""
    means = per_task_means(run.results)
    rows = []
    for reference in ABLATION_VARIANTS:
        if reference == MAIN_VARIANT:
            continue
        rows.append(_summary_row(means, MAIN_VARIANT, reference, model_label(reference)))
    values = pd.DataFrame(rows).set_index("reference")
    return _summary_table(
        "ablation_gains",
        f"Relative RMSE gain of LTC+MHN over each ablation, (RMSE_ref − RMSE_LTC+MHN)/RMSE_ref per task "
        f"on mean RMSE; a tie is |gain| < {100 * TIE_TOLERANCE:g} %; Wilcoxon signed-rank test "
        "(two-sided) on the per-task relative gains.",
        values,
    )


def _summary_row(means: pd.DataFrame, variant: str, reference: str, label: str) -> dict:
    if variant not in means.columns or (reference != BEST_BASELINE and reference not in means.columns):
        return {"reference": label, "tasks": 0, "mean_gain": np.nan, "median_gain": np.nan,
                "wins": 0, "ties": 0, "losses": 0, "wilcoxon_W": np.nan, "wilcoxon_p": np.nan,
                "note": f"{model_label(variant) if variant not in means.columns else label} not in this run"}
    summary = summarise_gains(gain_table(means, variant, reference), variant, reference)
    return {"reference": label, "tasks": summary.n_tasks, "mean_gain": summary.mean,
            "median_gain": summary.median, "wins": summary.wins, "ties": summary.ties,
            "losses": summary.losses, "wilcoxon_W": summary.wilcoxon_statistic,
            "wilcoxon_p": summary.wilcoxon_pvalue, "note": summary.wilcoxon_note}


def _summary_table(name: str, caption: str, values: pd.DataFrame) -> Table:
    text = pd.DataFrame(index=values.index)
    text["tasks"] = values["tasks"].astype(int).astype(str)
    text["mean gain"] = values["mean_gain"].map(format_percent)
    text["median gain"] = values["median_gain"].map(format_percent)
    text["wins / ties / losses"] = [f"{w} / {t} / {l}" for w, t, l in
                                     zip(values["wins"], values["ties"], values["losses"])]
    text["Wilcoxon W"] = values["wilcoxon_W"].map(lambda v: format_number(v, 3))
    text["p-value"] = values["wilcoxon_p"].map(format_pvalue)
    text["test"] = values["note"]
    return Table(name, caption, values, text, index_label="reference")


def ltc_pair_table(run: Run) -> Table:
    """Per task RMSE, MAE and R² of LTC and LTC+MHN side by side; the better of each pair bold."""
    pair = [NO_MEMORY_VARIANT, MAIN_VARIANT]
    values = pd.DataFrame(index=run.tasks)
    bold = pd.DataFrame(index=run.tasks)
    for metric, label in (("rmse", "RMSE"), ("mae", "MAE"), ("r2", "R²")):
        means = per_task_means(run.results, metric).reindex(index=run.tasks, columns=pair)
        marks, _ = rank_marks(means, lower_is_better=metric != "r2")
        for variant in pair:
            column = f"{label} {model_label(variant)}"
            values[column] = means[variant]
            bold[column] = marks[variant]
    table = Table.from_values(
        "ltc_vs_ltc_mhn",
        "LTC against LTC+MHN per task: mean over outer test folds of RMSE and MAE (original target "
        "units, lower is better) and R² (higher is better); the better of each pair in bold. "
        + splits_statement(run),
        values,
    )
    table.bold = bold
    return table


def gains_per_task(run: Run) -> tuple[Table, pd.DataFrame]:
    """Per task relative gain of LTC+MHN over LTC and over the best baseline."""
    means = per_task_means(run.results).reindex(index=run.tasks)
    over_ltc = gain_table(means, MAIN_VARIANT, NO_MEMORY_VARIANT) if MAIN_VARIANT in means else None
    over_base = gain_table(means, MAIN_VARIANT, BEST_BASELINE) if MAIN_VARIANT in means else None
    values = pd.DataFrame(index=run.tasks)
    values["rmse_ltc_mhn"] = means[MAIN_VARIANT] if MAIN_VARIANT in means else np.nan
    values["rmse_ltc"] = means[NO_MEMORY_VARIANT] if NO_MEMORY_VARIANT in means else np.nan
    values["gain_over_ltc"] = over_ltc["gain"] if over_ltc is not None else np.nan
    values["outcome_over_ltc"] = over_ltc["outcome"] if over_ltc is not None else "missing"
    values["best_baseline"] = over_base["reference"] if over_base is not None else None
    values["rmse_best_baseline"] = over_base["rmse_reference"] if over_base is not None else np.nan
    values["gain_over_best_baseline"] = over_base["gain"] if over_base is not None else np.nan
    values["outcome_over_best_baseline"] = over_base["outcome"] if over_base is not None else "missing"
    text = pd.DataFrame(index=values.index)
    text["RMSE LTC+MHN"] = values["rmse_ltc_mhn"].map(format_number)
    text["RMSE LTC"] = values["rmse_ltc"].map(format_number)
    text["gain vs LTC"] = values["gain_over_ltc"].map(format_percent)
    text["vs LTC"] = values["outcome_over_ltc"]
    text["best baseline"] = values["best_baseline"].map(lambda n: model_label(n) if isinstance(n, str) else "—")
    text["RMSE best baseline"] = values["rmse_best_baseline"].map(format_number)
    text["gain vs best baseline"] = values["gain_over_best_baseline"].map(format_percent)
    text["vs baseline"] = values["outcome_over_best_baseline"]
    table = Table(
        "gains_per_task",
        "Relative RMSE gain of LTC+MHN per task, (RMSE_ref − RMSE_LTC+MHN)/RMSE_ref on mean RMSE over "
        "outer test folds; positive = LTC+MHN better. The best baseline is the baseline with the "
        f"lowest mean RMSE on the task. win / tie / loss with a tie tolerance of ±{100 * TIE_TOLERANCE:g} %. "
        + splits_statement(run),
        values,
        text,
    )
    return table, values


def gain_summary_table(run: Run) -> Table:
    means = per_task_means(run.results)
    rows = [
        _summary_row(means, MAIN_VARIANT, NO_MEMORY_VARIANT, "LTC"),
        _summary_row(means, MAIN_VARIANT, BEST_BASELINE, "best baseline"),
    ]
    values = pd.DataFrame(rows).set_index("reference")
    return _summary_table(
        "gain_summary",
        "Across tasks: mean and median relative RMSE gain of LTC+MHN, wins / ties / losses (tie: "
        f"|gain| < {100 * TIE_TOLERANCE:g} %) and a two-sided Wilcoxon signed-rank test on the per-task "
        "relative gains (scipy.stats.wilcoxon, zero_method 'wilcox'); tasks where either side is "
        "missing are left out.",
        values,
    )


def gains_figure(values: pd.DataFrame) -> Figure | None:
    """Horizontal bars of the per-task relative gain over LTC and over the best baseline."""
    import analysis.figures  # noqa: F401
    import matplotlib.pyplot as plt

    panels = [("gain_over_ltc", "over LTC"), ("gain_over_best_baseline", "over the best baseline")]
    panels = [(c, t) for c, t in panels if values[c].notna().any()]
    if not panels:
        return None
    tasks = list(values.index)
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 0.9 + 0.28 * len(tasks)),
                                squeeze=False, sharey=True)
    for axis, (column, title) in zip(axes[0], panels):
        gains = 100 * values[column].astype(float)
        positions = np.arange(len(tasks))
        axis.barh(positions, gains.fillna(0).to_numpy(), color=model_color(MAIN_VARIANT),
                  height=0.6, label=model_label(MAIN_VARIANT))
        for position, gain in zip(positions, gains):
            if not np.isfinite(gain):
                axis.text(0, position, " missing", va="center", fontsize=7, color="#666")
        axis.axvspan(-100 * TIE_TOLERANCE, 100 * TIE_TOLERANCE, color="#999", alpha=0.25, lw=0, zorder=0,
                     label=f"tie band ±{100 * TIE_TOLERANCE:g} %")
        axis.axvline(0, color="black", lw=0.8)
        axis.set_yticks(positions, tasks)
        axis.set_xlabel("relative RMSE gain of LTC+MHN [%]")
        axis.set_title(f"LTC+MHN {title}")
        axis.grid(axis="y", visible=False)
    axes[0][0].invert_yaxis()  # first task on top (the axes share y, so once)
    figure.tight_layout()
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False)
    return Figure("gains_per_task", figure,
                  "Relative RMSE gain of LTC+MHN per task (positive = LTC+MHN has lower mean test RMSE); "
                  "grey band: tie tolerance.")


def gains_section(run: Run) -> Section:
    """Section 'Relative-gain summaries' with every table and figure of that analysis."""
    from analysis.ranks import critical_difference

    section = Section("Relative-gain summaries")
    present = set(successful(run.results)["variant"])
    section.add(Paragraph(
        "All numbers come from `results.parquet` rows with `study == \"search\"` and `status == \"ok\"`; "
        "a model's score on a task is the plain mean of its per-fold metric. "
        f"Relative gain = (RMSE_ref − RMSE_var) / RMSE_ref; tie tolerance ±{100 * TIE_TOLERANCE:g} %. "
        + splits_statement(run)
    ))
    section.add(metric_table(run, "rmse"))
    overall = Section("Ablations")
    overall.add(ablation_table(run))
    if MAIN_VARIANT in present:
        overall.add(ablation_summary(run))
    else:
        overall.add(Paragraph(f"`{MAIN_VARIANT}` has no successful results in this run: no gains computed."))
    section.add(overall)

    pair = Section("LTC against LTC+MHN")
    pair.add(ltc_pair_table(run))
    section.add(pair)

    gains = Section("Relative gain of LTC+MHN")
    if MAIN_VARIANT in present:
        table, values = gains_per_task(run)
        gains.add(table, gain_summary_table(run))
        figure = gains_figure(values)
        if figure is not None:
            gains.add(figure)
    else:
        gains.add(Paragraph(f"`{MAIN_VARIANT}` is missing from this run."))
    missing_baselines = [b for b in BASELINES if b not in present]
    if missing_baselines:
        gains.add(Paragraph("Baselines without results in this run: "
                            + ", ".join(f"`{b}`" for b in missing_baselines) + "."))
    section.add(gains)

    other = Section("MAE and R² of every model")
    other.add(metric_table(run, "mae"), metric_table(run, "r2"))
    section.add(other)

    ranks = Section("Critical-difference diagram")
    analysis = critical_difference(per_task_means(run.results).reindex(index=run.tasks))
    if analysis.figure is None:
        ranks.add(Paragraph(analysis.note[0].upper() + analysis.note[1:] + "."))
    else:
        ranks.add(Figure("critical_difference", analysis.figure,
                         "Critical-difference diagram of mean ranks by mean test RMSE per task (rank 1 = "
                         "lowest RMSE). " + analysis.note))
        rank_table = Table.from_values(
            "mean_ranks", "Mean rank by mean test RMSE (1 = best) over the tasks of the CD diagram: "
            + ", ".join(analysis.tasks) + ".", analysis.ranks.T.rename(columns=model_label),
            lower_is_better=True, index_label="")
        ranks.add(rank_table)
        dropped = sorted(set(per_task_means(run.results).columns) - set(analysis.models))
        if dropped:
            ranks.add(Paragraph("Left out of the diagram for missing tasks: "
                                + ", ".join(model_label(d) for d in dropped) + "."))
    section.add(ranks)
    return section


def coverage_table(run: Run) -> Table:
    """Per task × model: successful folds / expected, or the word missing / failed."""
    cover = coverage(run.results, run.tasks, run.models)
    text = cover.assign(
        cell=[
            ("missing" if s == "missing" else f"{ok}/{exp}" + (f" ({fail} failed)" if fail else ""))
            for s, ok, exp, fail in zip(cover["status"], cover["ok"], cover["expected"], cover["failed"])
        ]
    ).pivot(index="task", columns="variant", values="cell")
    text = text.reindex(index=run.tasks, columns=run.models).fillna("missing")
    values = cover.pivot(index="task", columns="variant", values="ok").reindex(index=run.tasks, columns=run.models)
    return Table(
        "coverage",
        "Successful outer folds × seeds per task and model (ok / expected; failed rows in brackets). "
        "Expected = the distinct (fold, seed) pairs any model ran on the task. Main searches only.",
        values,
        text.rename(columns=model_label),
    )


def missing_statement(run: Run) -> Bullets | None:
    cover = coverage(run.results, run.tasks, run.models)
    lines = []
    for status in ("missing", "failed", "partial"):
        rows = cover[cover["status"] == status]
        if len(rows):
            pairs = ", ".join(f"{t}/{v}" for t, v in zip(rows["task"], rows["variant"]))
            lines.append(f"**{status}** ({len(rows)}): {pairs}")
    return Bullets(lines) if lines else None
