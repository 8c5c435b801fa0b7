"""Matplotlib set-up shared by every figure: Agg backend, publication style, panel grids, log decisions."""

from __future__ import annotations

import math

import numpy as np

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.6,
    "pdf.fonttype": 42,  # embed TrueType so text stays editable in the PDF
    "text.usetex": False,
}
plt.rcParams.update(STYLE)


def spans_decades(values, ratio: float = 20.0) -> bool:
    """Whether positive ``values`` span at least ``ratio`` (default 20×): then use a log axis."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2 or values.min() <= 0:
        return False
    return bool(values.max() / values.min() >= ratio)


def plain_log_ticks(axis, which: str = "y") -> None:
    """On a log axis spanning less than a decade, label ticks as plain numbers (1.2, not 1.2×10⁰)."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    target = axis.yaxis if which == "y" else axis.xaxis
    low, high = axis.get_ylim() if which == "y" else axis.get_xlim()
    if low > 0 and high / low < 10:
        target.set_major_locator(LogLocator(base=10, subs=(1.0, 1.2, 1.5, 2.0, 3.0, 5.0, 7.0)))
        target.set_major_formatter(FormatStrFormatter("%g"))
        target.set_minor_formatter(FormatStrFormatter(""))


def parameter_ticks(axis, values, log: bool, which: str = "x") -> None:
    """Readable ticks for a hyperparameter axis: the values themselves when there are few
    (choices such as N ∈ {4, …, 64}), plain numbers on log axes spanning less than a decade."""
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator

    target = axis.xaxis if which == "x" else axis.yaxis
    values = np.asarray(values, dtype=float)
    distinct = np.unique(values[np.isfinite(values)])
    if 1 <= distinct.size <= 10 and np.allclose(distinct, np.round(distinct)):
        target.set_major_locator(FixedLocator(distinct))
        target.set_major_formatter(FormatStrFormatter("%g"))
        target.set_minor_locator(NullLocator())
    elif log and distinct.size and distinct.min() > 0 and distinct.max() / distinct.min() < 10:
        plain_log_ticks(axis, which)


def jitter(values, log: bool, rng: np.random.Generator, amount: float = 0.035) -> np.ndarray:
    """Small multiplicative (log axes) or additive spread for values on a few discrete choices."""
    values = np.asarray(values, dtype=float)
    distinct = np.unique(values[np.isfinite(values)])
    if distinct.size == 0 or distinct.size > 10:
        return values
    noise = rng.uniform(-amount, amount, values.shape)
    if log:
        return values * np.exp(noise * np.log(10))
    step = np.min(np.diff(distinct)) if distinct.size > 1 else 1.0
    return values + noise * step * 4


def panel_grid(n_panels: int, columns: int = 4, width: float = 3.0, height: float = 2.6, **kwargs):
    """A figure with ``n_panels`` axes in rows of ``columns``; surplus axes are hidden."""
    columns = max(1, min(columns, n_panels))
    rows = math.ceil(n_panels / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(width * columns, height * rows), squeeze=False, **kwargs
    )
    flat = list(axes.ravel())
    for axis in flat[n_panels:]:
        axis.set_visible(False)
    return figure, flat[:n_panels]


def note_figure(message: str, width: float = 5.0, height: float = 1.2):
    """A small figure that only states why a plot is empty (kept for a consistent layout)."""
    figure, axis = plt.subplots(figsize=(width, height))
    axis.axis("off")
    axis.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return figure


def kernel_trend(x, y, log_x: bool, points: int = 100, bandwidth: float | None = None):
    """Nadaraya–Watson Gaussian-kernel smoother of ``y`` over ``x``; returns (grid, trend) or None.

    Smoothing is done in log10(x) when ``log_x`` (bandwidth in decades, default 0.25) and on
    log(y) when all y are positive, so a few diverged trials do not dominate the trend.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if log_x:
        keep &= x > 0
    x, y = x[keep], y[keep]
    if x.size < 4 or np.unique(x).size < 3:
        return None
    u = np.log10(x) if log_x else x
    positive = bool((y > 0).all())
    v = np.log(y) if positive else y
    if bandwidth is None:
        bandwidth = 0.25 if log_x else 0.1 * (u.max() - u.min())
    grid = np.linspace(u.min(), u.max(), points)
    weights = np.exp(-0.5 * ((grid[:, None] - u[None, :]) / bandwidth) ** 2)
    trend = (weights @ v) / weights.sum(axis=1)
    if positive:
        trend = np.exp(trend)
    return (10**grid if log_x else grid), trend
