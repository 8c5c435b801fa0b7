"""Stability diagnostics: loss-landscape figures and summaries, parity plots, seed variance, and
the share of failed or diverged trials per search."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.document import Figure, Paragraph, Section
from analysis.landscape import FLAT_FACTOR, Landscape, load_landscapes
from analysis.names import MAIN_VARIANT, NO_MEMORY_VARIANT, model_color, model_label, order_models
from analysis.runs import Run, task_target
from analysis.summaries import successful
from analysis.tables import Table, format_number

LANDSCAPE_VARIANTS = (NO_MEMORY_VARIANT, MAIN_VARIANT)
DIVERGED = re.compile(r"non-?finite|\bnan\b|\binf\b|overflow|diverg", re.IGNORECASE)
MAX_PARITY_POINTS = 4000


# ---------------------------------------------------------------------------- landscapes


def landscape_file_name(task: str, fold: int, seed: int) -> str:
    return f"landscape_{task}_fold{fold}_seed{seed}.npz"


def landscape_figure(landscapes: dict[str, Landscape], task: str, name: str) -> Figure:
    """3-D surface (top) and contour plot (bottom) per variant, side by side, on one shared scale.

    When the losses span 20× or more, heights and colours show log₁₀ of the loss.
    """
    import analysis.figures  # noqa: F401
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    variants = [v for v in LANDSCAPE_VARIANTS if v in landscapes] + order_models(
        [v for v in landscapes if v not in LANDSCAPE_VARIANTS])
    everything = np.concatenate([landscapes[v].losses.ravel() for v in variants])
    everything = everything[np.isfinite(everything)]
    use_log = bool(everything.size and everything.min() > 0 and everything.max() / everything.min() >= 20)
    transform = np.log10 if use_log else (lambda values: values)
    low, high = (float(everything.min()), float(everything.max())) if everything.size else (0.0, 1.0)
    z_low, z_high = float(transform(low)), float(transform(high))
    if z_high <= z_low:
        z_high = z_low + 1e-9
    levels = np.linspace(z_low, z_high, 16)
    z_label = "log₁₀ MSE [standardised target²]" if use_log else "MSE [standardised target²]"
    figure = plt.figure(figsize=(4.3 * len(variants) + 0.9, 7.8))
    grid = figure.add_gridspec(2, len(variants) + 1, width_ratios=[1] * len(variants) + [0.05],
                               height_ratios=[1.15, 1], hspace=0.25, wspace=0.32)
    contour = None
    for column, variant in enumerate(variants):
        landscape = landscapes[variant]
        coordinates = landscape.coordinates
        a, b = np.meshgrid(coordinates, coordinates)
        z = transform(np.where(np.isfinite(landscape.losses), landscape.losses, high))
        surface_axis = figure.add_subplot(grid[0, column], projection="3d")
        surface_axis.plot_surface(a, b, z, cmap="viridis", vmin=z_low, vmax=z_high, linewidth=0.15,
                                  edgecolor="#333", antialiased=True)
        surface_axis.set_zlim(z_low, z_high)
        span = float(np.max(np.abs(coordinates)))
        surface_axis.set_xticks([-span, 0, span])
        surface_axis.set_yticks([-span, 0, span])
        surface_axis.zaxis.set_major_locator(MaxNLocator(4))
        surface_axis.set_xlabel("a (along d₁)", fontsize=8, labelpad=-2)
        surface_axis.set_ylabel("b (along d₂)", fontsize=8, labelpad=-2)
        surface_axis.set_zlabel(z_label, fontsize=8, labelpad=4)
        surface_axis.tick_params(labelsize=7, pad=0)
        surface_axis.set_title(model_label(variant), color=model_color(variant), fontweight="bold")
        surface_axis.view_init(elev=32, azim=-55)
        contour_axis = figure.add_subplot(grid[1, column])
        contour = contour_axis.contourf(a, b, z, levels=levels, cmap="viridis")
        contour_axis.contour(a, b, z, levels=levels, colors="white", linewidths=0.3, alpha=0.6)
        contour_axis.plot(0, 0, marker="+", color="white", ms=11, mew=1.6, ls="", label="trained weights θ*")
        i, j = np.unravel_index(np.nanargmin(landscape.losses), landscape.losses.shape)
        contour_axis.plot(coordinates[j], coordinates[i], marker="o", mfc="none", color="#ff5555", ms=7, ls="",
                          label="grid minimum")
        flat = landscape.losses <= FLAT_FACTOR * np.nanmin(landscape.losses)
        if 0 < flat.mean() < 1:
            contour_axis.contour(a, b, flat.astype(float), levels=[0.5], colors=model_color(variant),
                                 linewidths=1.8)
        contour_axis.plot([], [], color=model_color(variant), lw=1.8, label=f"flat area (≤ {FLAT_FACTOR:g}× min)")
        contour_axis.set_xlabel("step a along d₁ [filter-normalised units]")
        contour_axis.set_ylabel("step b along d₂ [filter-normalised units]")
        contour_axis.set_aspect("equal")
        contour_axis.grid(False)
        contour_axis.set_title(f"sharpness λ_max = {format_number(landscape.hessian_top_eigenvalue, 3)}, "
                               f"flat share = {landscape.flat_share:.0%}", fontsize=8.5)
        contour_axis.legend(loc="lower left", fontsize=6.5, framealpha=0.75)
    colorbar = figure.colorbar(contour, cax=figure.add_subplot(grid[1, -1]))
    colorbar.set_label(z_label)
    colorbar.ax.yaxis.set_major_locator(MaxNLocator(6))
    target = task_target(task)
    figure.suptitle(f"Loss landscape, {task}" + (f" (target: {target})" if target else ""), y=0.97)
    first = landscapes[variants[0]]
    caption = (
        f"Loss landscape around the trained weights θ* of {', '.join(model_label(v) for v in variants)} on {task}: "
        f"MSE on standardised targets at θ* + a·d₁ + b·d₂ on a {len(first.coordinates)}×{len(first.coordinates)} "
        f"grid over [−{first.info.get('span', 1)}, {first.info.get('span', 1)}]², with filter-normalised Gaussian "
        f"directions (Li et al., 2018; a and b are multiples of them; 1-D parameters not perturbed; direction seed "
        f"{first.info.get('direction_seed', '?')} for every variant) on {first.info.get('rows', '?')} "
        f"{first.info.get('row_set', 'outer training')} rows. Top: surfaces; bottom: contours; both variants on "
        f"one {'log₁₀ ' if use_log else ''}scale. The coloured outline encloses the flat area "
        f"(loss ≤ {FLAT_FACTOR:g}× the grid minimum); λ_max is the top Hessian eigenvalue at θ*."
    )
    return Figure(name, figure, caption)


def landscape_table(entries: list[tuple[str, dict[str, Landscape], dict]]) -> Table:
    """Scalar summaries of every landscape: centre and minimum loss, flat share, top Hessian eigenvalue."""
    records = []
    for task, landscapes, metadata in entries:
        for variant in order_models(landscapes):
            landscape = landscapes[variant]
            records.append({
                "task / variant": f"{task} / {model_label(variant)}",
                "fold": metadata.get("fold"), "seed": metadata.get("seed"),
                "rows": landscape.info.get("rows"), "row set": landscape.info.get("row_set", "train"),
                "grid": f"{len(landscape.coordinates)}×{len(landscape.coordinates)}",
                "loss at θ*": landscape.center_loss, "grid min loss": landscape.min_loss,
                "flat share": landscape.flat_share,
                "top Hessian eigenvalue": landscape.hessian_top_eigenvalue,
                "power iterations": landscape.hessian_iterations,
            })
    values = pd.DataFrame.from_records(records).set_index("task / variant")
    text = values.astype(object).copy()
    for column in ("loss at θ*", "grid min loss", "top Hessian eigenvalue"):
        text[column] = values[column].map(format_number)
    text["flat share"] = values["flat share"].map(lambda v: "—" if not np.isfinite(v) else f"{100 * v:.1f} %")
    return Table(
        "landscape_summary",
        "Loss-landscape summaries (MSE on standardised targets): loss at the trained weights, minimum over "
        f"the grid, flat share (grid points with loss ≤ {FLAT_FACTOR:g}× the grid minimum; higher = flatter) "
        "and sharpness (largest-magnitude Hessian eigenvalue at θ* by power iteration on Hessian-vector "
        "products; lower = flatter).",
        values, text.astype(str), index_label="task / variant")


def stored_landscapes(directory: Path) -> list[tuple[str, dict[str, Landscape], dict]]:
    """Every landscape file in ``directory`` as (task, variant → Landscape, metadata)."""
    entries = []
    for path in sorted(Path(directory).glob("landscape_*.npz")):
        try:
            landscapes, metadata = load_landscapes(path)
        except (OSError, ValueError, KeyError):
            continue
        entries.append((metadata.get("task", path.stem), landscapes, {**metadata, "file": str(path)}))
    return entries


def compute_task_landscapes(
    run: Run,
    task: str,
    variants=LANDSCAPE_VARIANTS,
    fold: int | None = None,
    seed: int | None = None,
    grid: int = 25,
    span: float = 1.0,
    direction_seed: int = 0,
    rows: str = "train",
    max_rows: int = 1024,
    hessian_iterations: int = 100,
) -> tuple[dict[str, Landscape], dict]:
    """Landscapes of the saved models of ``variants`` on one task, fold and seed (same rows, same seed)."""
    from analysis.fold_data import load_network_rows
    from analysis.landscape import compute_landscape

    fold, seed = _pick_fold_seed(run, task, variants, fold, seed)
    repeat = _repeat_of(run, task)
    landscapes = {}
    gaps = {}
    for variant in variants:
        path = run.model_path(task, variant, fold, seed)
        if not path.is_file():
            continue
        loaded = load_network_rows(path, task, fold, repeat, rows, max_rows, sample_seed=direction_seed)
        landscape = compute_landscape(loaded.network, loaded.inputs, loaded.targets, variant=variant,
                                      grid=grid, span=span, direction_seed=direction_seed,
                                      hessian_iterations=hessian_iterations)
        landscape.info["row_set"] = "outer training" if rows == "train" else "outer test"
        landscapes[variant] = landscape
        gaps[variant] = loaded.prediction_gap
    if not landscapes:
        raise FileNotFoundError(
            f"no saved model of {', '.join(variants)} for {task} fold {fold} seed {seed} under {run.path / 'models'}")
    metadata = {"task": task, "fold": fold, "seed": seed, "repeat": repeat, "rows": rows,
                "max_rows": max_rows, "grid": grid, "span": span, "direction_seed": direction_seed,
                "run": str(run.path), "prediction_gap": gaps}
    return landscapes, metadata


def _pick_fold_seed(run: Run, task: str, variants, fold, seed) -> tuple[int, int]:
    rows = successful(run.results)
    rows = rows[(rows["task"] == task) & rows["variant"].isin(list(variants))]
    if fold is None or seed is None:
        if rows.empty:
            return (0 if fold is None else fold), (0 if seed is None else seed)
        counts = rows.groupby(["fold", "seed"]).size().reset_index(name="n")
        if fold is not None:
            counts = counts[counts["fold"] == fold]
        if seed is not None:
            counts = counts[counts["seed"] == seed]
        if counts.empty:
            return (0 if fold is None else fold), (0 if seed is None else seed)
        best = counts.sort_values(["n", "fold", "seed"], ascending=[False, True, True]).iloc[0]
        return int(best["fold"]), int(best["seed"])
    return int(fold), int(seed)


def _repeat_of(run: Run, task: str) -> int:
    rows = run.results[run.results["task"] == task]
    return int(rows["repeat"].iloc[0]) if len(rows) else 0


# ---------------------------------------------------------------------------- parity


def read_predictions(run: Run, task: str, variant: str) -> pd.DataFrame:
    """All test predictions of a task and variant (main searches), with fold and seed columns."""
    frames = []
    folder = run.path / "predictions" / task / variant
    for path in sorted(folder.glob("fold*_seed*.parquet")):
        match = re.fullmatch(r"fold(\d+)_seed(\d+)", path.stem)
        if match is None:  # one-at-a-time files carry a _{param}={value} suffix
            continue
        frame = pd.read_parquet(path, columns=["row_id", "y_true", "y_pred"])
        frames.append(frame.assign(fold=int(match[1]), seed=int(match[2])))
    if not frames:
        return pd.DataFrame(columns=["row_id", "y_true", "y_pred", "fold", "seed"])
    return pd.concat(frames, ignore_index=True)


def parity_figure(run: Run, task: str, variants=LANDSCAPE_VARIANTS) -> Figure | None:
    """Predicted against true test values for each variant, side by side on shared axes."""
    from analysis.figures import spans_decades
    import matplotlib.pyplot as plt

    data = {v: read_predictions(run, task, v) for v in variants}
    data = {v: d for v, d in data.items() if len(d)}
    if not data:
        return None
    everything = np.concatenate([np.r_[d["y_true"].to_numpy(float), d["y_pred"].to_numpy(float)] for d in data.values()])
    everything = everything[np.isfinite(everything)]
    # log axes only when the bulk of the target (5th to 95th percentile) spans two decades
    log = bool(everything.min() > 0 and spans_decades(np.percentile(everything, [5, 95]), ratio=100))
    low, high = float(everything.min()), float(everything.max())
    pad = 0.03 * (high - low) if not log else 0
    limits = (low - pad, high + pad) if not log else (low / 1.2, high * 1.2)
    figure, axes = plt.subplots(1, len(variants), figsize=(3.5 * len(variants), 3.6), squeeze=False)
    target = task_target(task) or "target"
    rng = np.random.default_rng(0)
    for axis, variant in zip(axes[0], variants):
        frame = data.get(variant)
        axis.plot(limits, limits, color="black", lw=0.8, ls="--", label="y = ŷ")
        if frame is None:
            axis.text(0.5, 0.5, f"{model_label(variant)}: no predictions", transform=axis.transAxes,
                      ha="center", va="center", color="#666")
        else:
            shown = frame if len(frame) <= MAX_PARITY_POINTS else frame.iloc[
                np.sort(rng.choice(len(frame), MAX_PARITY_POINTS, replace=False))]
            residual = frame["y_pred"] - frame["y_true"]
            rmse = float(np.sqrt(np.mean(residual**2)))
            axis.scatter(shown["y_true"], shown["y_pred"], s=6, alpha=0.45, lw=0, color=model_color(variant),
                         label=model_label(variant), rasterized=len(shown) > 1000)
            folds = frame[["fold", "seed"]].drop_duplicates()
            axis.text(0.03, 0.97, f"RMSE (pooled) = {format_number(rmse)}\n{len(frame)} test rows, "
                      f"{len(folds)} fold×seed", transform=axis.transAxes, va="top", fontsize=7.5)
        if log:
            axis.set_xscale("log")
            axis.set_yscale("log")
        axis.set_xlim(limits)
        axis.set_ylim(limits)
        axis.set_aspect("equal")
        axis.set_xlabel(f"true {target} [target units]")
        axis.set_ylabel(f"predicted {target} [target units]")
        axis.set_title(model_label(variant), color=model_color(variant), fontweight="bold")
        axis.legend(loc="lower right", frameon=False, fontsize=7.5)
    figure.suptitle(f"{task}: test predictions", y=1.0)
    figure.tight_layout()
    return Figure(f"parity_{task}", figure,
                  f"Parity plot of {task}: predicted against true target on the outer test folds (all folds and "
                  f"seeds pooled; at most {MAX_PARITY_POINTS} points drawn per panel); dashed: perfect prediction.")


# ---------------------------------------------------------------------------- seeds and failures


def seed_variance(results: pd.DataFrame) -> pd.DataFrame:
    """Per task and variant: seeds, and the spread over seeds of the mean-over-folds test RMSE."""
    rows = successful(results)
    per_seed = rows.groupby(["task", "variant", "seed"])["rmse"].mean().reset_index()
    table = per_seed.groupby(["task", "variant"])["rmse"].agg(
        seeds="count", mean="mean", sd=lambda s: s.std(ddof=1), minimum="min", maximum="max").reset_index()
    table["cv"] = table["sd"] / table["mean"]
    return table


def seed_variance_figure(table: pd.DataFrame, results: pd.DataFrame) -> Figure | None:
    from analysis.figures import panel_grid

    multi = table[table["seeds"] > 1]
    if multi.empty:
        return None
    rows = successful(results)
    per_seed = rows.groupby(["task", "variant", "seed"])["rmse"].mean().reset_index()
    tasks = list(dict.fromkeys(multi["task"]))
    figure, axes = panel_grid(len(tasks), columns=3, width=3.5, height=2.8)
    for axis, task in zip(axes, tasks):
        variants = order_models(multi[multi["task"] == task]["variant"])
        for position, variant in enumerate(variants):
            values = per_seed[(per_seed["task"] == task) & (per_seed["variant"] == variant)]["rmse"]
            jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else [0.0]
            axis.scatter(position + np.asarray(jitter), values, s=16, color=model_color(variant), zorder=3)
            axis.hlines(values.mean(), position - 0.25, position + 0.25, color="black", lw=1)
        axis.set_xticks(range(len(variants)), [model_label(v) for v in variants], rotation=30, ha="right")
        axis.set_ylabel("test RMSE [target units]")
        axis.set_title(task)
        axis.grid(axis="x", visible=False)
    figure.tight_layout()
    return Figure("seed_variance", figure,
                  "Seed variance: test RMSE (mean over outer folds, original target units) of each seed (dots) "
                  "and the mean over seeds (bar), per task and model.")


def failure_shares(run: Run) -> pd.DataFrame:
    """Per search (task, variant, fold, seed): trials, failed, diverged (non-finite loss) and shares."""
    if run.trials is not None and len(run.trials):
        trials = run.trials
        failed = trials["state"] == "FAILED"
        diverged = failed & trials["error"].fillna("").astype(str).str.contains(DIVERGED)
        frame = trials.assign(failed=failed, diverged=diverged).groupby(
            ["task", "variant", "fold", "seed"]).agg(trials=("state", "size"), failed=("failed", "sum"),
                                                     diverged=("diverged", "sum")).reset_index()
        frame["source"] = "trials.parquet"
    else:
        search = run.search_results
        frame = search[["task", "variant", "fold", "seed", "n_trials", "n_failed_trials"]].rename(
            columns={"n_trials": "trials", "n_failed_trials": "failed"})
        frame = frame.assign(diverged=np.nan, source="results.parquet")
    frame = frame[frame["trials"] > 0].copy()
    frame["failed_share"] = frame["failed"] / frame["trials"]
    return frame


def failure_table(shares: pd.DataFrame, run: Run) -> Table:
    grouped = shares.groupby(["task", "variant"]).agg(
        searches=("trials", "size"), trials=("trials", "sum"), failed=("failed", "sum"),
        diverged=("diverged", "sum"), worst_search=("failed_share", "max")).reset_index()
    grouped["failed_share"] = grouped["failed"] / grouped["trials"]
    values = grouped.pivot(index="task", columns="variant", values="failed_share")
    values = values.reindex(index=[t for t in run.tasks if t in values.index],
                            columns=order_models(values.columns))
    text = values.astype(object).copy()
    lookup = grouped.set_index(["task", "variant"])
    for task in values.index:
        for variant in values.columns:
            if (task, variant) not in lookup.index:
                text.at[task, variant] = "—"
                continue
            row = lookup.loc[(task, variant)]
            cell = f"{100 * row['failed_share']:.1f} % ({int(row['failed'])}/{int(row['trials'])})"
            if np.isfinite(row["diverged"]) and row["diverged"] > 0:
                cell += f", {int(row['diverged'])} diverged"
            text.at[task, variant] = cell
    return Table("failed_trials", "Share of failed trials per task and variant (all searches of the task pooled; "
                 "failed/total in brackets). Failed = state FAILED (an exception, including a non-finite loss); "
                 "diverged = failed with a non-finite-loss error. Pruned trials are not failures. Source: "
                 f"{shares['source'].iloc[0] if len(shares) else 'none'}.",
                 values.rename(columns=model_label), text.rename(columns=model_label).astype(str))


def failure_search_table(shares: pd.DataFrame, shown: int = 25) -> Table:
    """Per search: trials, failed, diverged and the failed share; the worst ``shown`` rendered, all in the CSV."""
    values = shares.sort_values(["failed_share", "task", "variant", "fold", "seed"],
                                ascending=[False, True, True, True, True]).reset_index(drop=True)
    values.index = [f"{t}/{v}/fold{f}/seed{s}" for t, v, f, s in
                    zip(values["task"], values["variant"], values["fold"], values["seed"])]
    values = values.drop(columns=["task", "variant", "fold", "seed", "source"])
    top = values[values["failed"] > 0].head(shown)
    text = pd.DataFrame(index=top.index)
    text["trials"] = top["trials"].astype(int).astype(str)
    text["failed"] = top["failed"].astype(int).astype(str)
    text["diverged"] = top["diverged"].map(lambda v: "—" if not np.isfinite(v) else str(int(v)))
    text["failed share"] = top["failed_share"].map(lambda v: f"{100 * v:.1f} %")
    failing = int((values["failed"] > 0).sum())
    return Table("failed_trials_per_search",
                 f"Searches with failed trials ({failing} of {len(values)} searches; the {min(shown, failing)} worst "
                 "shown, every search in the CSV), named task/variant/fold/seed as in the Optuna journal.",
                 values, text, index_label="search")


def failure_figure(shares: pd.DataFrame, run: Run) -> Figure | None:
    import analysis.figures  # noqa: F401
    import matplotlib.pyplot as plt

    if shares.empty:
        return None
    grouped = shares.groupby(["task", "variant"])[["failed", "trials"]].sum()
    matrix = (grouped["failed"] / grouped["trials"]).unstack("variant")
    matrix = matrix.reindex(index=[t for t in run.tasks if t in matrix.index], columns=order_models(matrix.columns))
    figure, axis = plt.subplots(figsize=(1.0 + 0.9 * matrix.shape[1], 0.9 + 0.35 * matrix.shape[0]))
    percent = 100 * matrix.to_numpy(dtype=float)
    top = float(np.nanmax(percent)) if np.isfinite(percent).any() else 0.0
    vmax = 100.0 if top > 50 else max(10.0, 10 * math.ceil(top / 10))
    image = axis.imshow(percent, cmap="Reds", vmin=0, vmax=vmax, aspect="auto")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix.iat[i, j]
            axis.text(j, i, "—" if not np.isfinite(value) else f"{100 * value:.0f}", ha="center", va="center",
                      fontsize=7.5, color="white" if np.isfinite(value) and 100 * value > 0.6 * vmax else "black")
    axis.set_xticks(range(matrix.shape[1]), [model_label(v) for v in matrix.columns], rotation=30, ha="right")
    for label, variant in zip(axis.get_xticklabels(), matrix.columns):
        label.set_color(model_color(variant))
    axis.set_yticks(range(matrix.shape[0]), matrix.index)
    axis.grid(False)
    colorbar = figure.colorbar(image, ax=axis)
    colorbar.set_label("failed trials [% of the task's trials]")
    axis.set_title("failed or diverged trials [%], searches pooled per task and variant")
    figure.tight_layout()
    return Figure("failed_trials", figure, "Share of failed (including diverged) trials per task and variant, "
                  "searches pooled over folds and seeds.")


# ---------------------------------------------------------------------------- section


def stability_section(run: Run, landscape_entries, landscape_note: str | None = None) -> Section:
    """The 'Stability diagnostics' section from precomputed landscape entries and the run's files."""
    section = Section("Stability diagnostics")
    land = Section("Loss landscapes")
    if landscape_note:
        land.add(Paragraph(landscape_note))
    for task, landscapes, metadata in landscape_entries:
        name = f"landscape_{task}_fold{metadata.get('fold', 0)}_seed{metadata.get('seed', 0)}"
        land.add(landscape_figure(landscapes, task, name))
    if landscape_entries:
        land.add(landscape_table(landscape_entries))
    section.add(land)

    parity = Section("Parity plots")
    tasks_drawn = 0
    for task in run.tasks:
        figure = parity_figure(run, task)
        if figure is not None:
            parity.add(figure)
            tasks_drawn += 1
    if not tasks_drawn:
        parity.add(Paragraph("No predictions of `ltc` or `ltc_mhn` under `predictions/` in this run."))
    section.add(parity)

    seeds = Section("Seed variance")
    table = seed_variance(run.results)
    if table.empty or table["seeds"].max() < 2:
        seeds.add(Paragraph("Every search in this run used a single seed: no seed variance to report."))
    else:
        values = table[table["seeds"] > 1].copy()
        values.index = [f"{t} / {model_label(v)}" for t, v in zip(values["task"], values["variant"])]
        values = values.drop(columns=["task", "variant"])
        text = values.astype(object).copy()
        for column in ("mean", "sd", "minimum", "maximum"):
            text[column] = values[column].map(format_number)
        text["cv"] = values["cv"].map(lambda v: f"{100 * v:.2f} %" if np.isfinite(v) else "—")
        seeds.add(Table("seed_variance", "Test RMSE over seeds (each seed: mean over outer folds; original target "
                        "units): number of seeds, mean, sample standard deviation, coefficient of variation, range.",
                        values, text.astype(str), index_label="task / variant"))
        figure = seed_variance_figure(table, run.results)
        if figure is not None:
            seeds.add(figure)
    section.add(seeds)

    failures = Section("Failed and diverged trials")
    shares = failure_shares(run)
    if shares.empty:
        failures.add(Paragraph("No trials recorded in this run."))
    else:
        failures.add(failure_table(shares, run))
        if (shares["failed"] > 0).any():
            failures.add(failure_search_table(shares))
        else:
            failures.add(Paragraph(f"None of the {len(shares)} searches had a failed trial."))
        figure = failure_figure(shares, run)
        if figure is not None:
            failures.add(figure)
    section.add(failures)
    return section
