"""Training benchmarks of the model package (programs that print tables, not tests).

* :func:`measure_throughput`: rows per second of one training epoch (the suite's trainer) for
  ``ltc``, ``ltc_mhn``, ``matched_ltc`` and an MLP of the same width, with the achieved GFLOP/s
  (matrix products counted by ``torch.utils.flop_counter.FlopCounterMode``, forward + backward)
  as a share of the float32 matrix-multiply peak measured in the same run;
* :func:`compare_with_naive`: the suite's trainer against a naive reference written here (a
  ``DataLoader`` over a ``TensorDataset``, the input projection recomputed at every solver stage,
  an unfused per-head Hopfield loop), same network, same epochs;
* :func:`measure_packing`: one trial alone against several trials packed on one device, each in its
  own process (with its own CUDA stream on a GPU).

Repetitions are interleaved across models so that a change in machine load hits all alike;
every figure is a median after a warm-up epoch. ``python -m model.bench`` prints the throughput
table; ``python -m hpo bench`` runs these parts and the search-level ones.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .network import NETWORK_DEFAULTS, LiquidHopfieldNetwork, build_network
from .trainer import resolve_device, torch_threads, train_network

BENCH_MODELS = ("ltc", "ltc_mhn", "matched_ltc", "mlp")
BATCH_SIZE = 256


class MLPNetwork(nn.Module):
    """Reference without dynamics or memory: Linear(d → n) → ReLU → Linear(n → n) → ReLU → Linear(n → 1)."""

    def __init__(self, n_features: int, hidden_size: int = 64) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.layers = nn.Sequential(
            nn.Linear(n_features, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, 1),
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.layers(inputs).squeeze(-1)


def synthetic_table(n_rows: int, n_features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal features and a standardised nonlinear target (float32)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_features)).astype(np.float32)
    y = np.sin(2 * X[:, 0]) + X[:, 1] ** 2 - X[:, 2 % n_features] * X[:, 3 % n_features] + 0.5 * X[:, -1]
    y = (y - y.mean()) / y.std()
    return X, y.astype(np.float32)


def make_network(name: str, n_features: int, **settings) -> nn.Module:
    """A benchmark model: a liquid–memory variant (``build_network`` settings) or ``"mlp"``."""
    if name == "mlp":
        return MLPNetwork(n_features, settings.get("hidden_size", NETWORK_DEFAULTS["hidden_size"]))
    return build_network(name, n_features, **settings)


class Table:
    """A synthetic training table and validation table as tensors on one device."""

    def __init__(self, n_rows: int, n_features: int, device: torch.device, n_val: int | None = None, seed: int = 0):
        n_val = max(1, n_rows // 10) if n_val is None else n_val
        X, y = synthetic_table(n_rows + n_val, n_features, seed)
        self.n_rows, self.n_features, self.device = n_rows, n_features, device
        self.X_train, self.y_train = (torch.as_tensor(a[:n_rows], device=device) for a in (X, y))
        self.X_val, self.y_val = (torch.as_tensor(a[n_rows:], device=device) for a in (X, y))

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.X_train, self.y_train, self.X_val, self.y_val


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of ``function()``, with the device synchronised on both sides."""
    return timed_both(function, device)[0]


def timed_both(function: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of ``function()`` (device synchronised on both sides).

    On a CPU shared with other jobs the CPU seconds leave out the time this process waited for a
    core, so ratios of CPU seconds are steadier than ratios of wall-clock seconds.
    """
    synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    function()
    synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu_start


def peak_matmul_gflops(device: torch.device, size: int | None = None, repeats: int = 20) -> float:
    """Best float32 GFLOP/s of a square matrix product (the machine's practical peak).

    CPU: 1024² (about 2 GFLOP, with the current torch threads); CUDA: 8192², TF32 as torch's
    defaults leave it (off). The best of ``repeats`` products, so that on a shared machine one
    of them runs while the core is free.
    """
    size = size or (8192 if device.type == "cuda" else 1024)
    generator = torch.Generator(device=device.type).manual_seed(0) if device.type == "cuda" else None
    a = torch.randn(size, size, device=device, generator=generator)
    b = torch.randn(size, size, device=device, generator=generator)
    out = torch.empty(size, size, device=device)
    for _ in range(2):
        torch.mm(a, b, out=out)
    best = min(timed(lambda: torch.mm(a, b, out=out), device) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def epoch_flops(network: nn.Module, table: Table) -> float:
    """FLOPs of one training epoch with the suite's trainer (forward, backward, validation pass),
    as ``FlopCounterMode`` counts them (matrix products). Counted with the Python build of the
    solver kernel: the C++ build does the same products but hands them to BLAS directly, out of
    the counter's sight."""
    from torch.utils.flop_counter import FlopCounterMode

    from . import native

    counter = FlopCounterMode(display=False)
    with counter, native.switched_off():
        train_network(network, *table.tensors, max_epochs=1, patience=None, batch_size=BATCH_SIZE)
    return float(counter.get_total_flops())


def time_suite_epoch(network: nn.Module, table: Table, seed: int = 0, compile: bool | str = False) -> float:
    """Seconds of one epoch of the suite's trainer (training plus the validation pass)."""
    return time_suite_epoch_both(network, table, seed, compile)[0]


def time_suite_epoch_both(
    network: nn.Module, table: Table, seed: int = 0, compile: bool | str = False
) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one epoch of the suite's trainer (with its validation pass)."""
    return timed_both(
        lambda: train_network(
            network, *table.tensors, max_epochs=1, patience=None, batch_size=BATCH_SIZE, seed=seed, compile=compile
        ),
        table.device,
    )


def measure_throughput(
    table: Table,
    models: Sequence[str] = BENCH_MODELS,
    repeats: int = 5,
    peak_gflops: float | None = None,
    settings: dict | None = None,
) -> list[dict]:
    """One row per model: s/epoch (median of ``repeats`` after a warm-up epoch), rows/s, GFLOP per
    epoch, achieved GFLOP/s and its share of ``peak_gflops``."""
    networks = {}
    for name in models:
        torch.manual_seed(0)
        networks[name] = make_network(name, table.n_features, **(settings or {})).to(table.device)
    flops = {name: epoch_flops(network, table) for name, network in networks.items()}  # also the warm-up
    times: dict[str, list[float]] = {name: [] for name in models}
    cpu_times: dict[str, list[float]] = {name: [] for name in models}
    for repeat in range(repeats):
        for name, network in networks.items():
            wall, cpu = time_suite_epoch_both(network, table, seed=repeat + 1)
            times[name].append(wall)
            cpu_times[name].append(cpu)
    rows = []
    for name, network in networks.items():
        seconds = statistics.median(times[name])
        gflops = flops[name] / seconds / 1e9
        rows.append(
            {
                "model": name,
                "width": getattr(network, "hidden_size", None),
                "parameters": sum(p.numel() for p in network.parameters()),
                "seconds_per_epoch": seconds,
                "cpu_seconds_per_epoch": statistics.median(cpu_times[name]),
                "rows_per_second": table.n_rows / seconds,
                "gflop_per_epoch": flops[name] / 1e9,
                "gflops": gflops,
                "peak_share": gflops / peak_gflops if peak_gflops else math.nan,
            }
        )
    reference = next((row for row in rows if row["model"] == "ltc"), None)
    for row in rows:
        row["epoch_vs_ltc"] = row["seconds_per_epoch"] / reference["seconds_per_epoch"] if reference else math.nan
        row["cpu_vs_ltc"] = row["cpu_seconds_per_epoch"] / reference["cpu_seconds_per_epoch"] if reference else math.nan
    return rows


def kernel_builds(device: torch.device) -> tuple[str, ...]:
    """The solver builds one epoch can run here: the plain autograd loop, the Python fused kernel
    and, on CPU where it compiled, its C++ build (what training uses by default)."""
    from . import native

    builds = ("reference", "python")
    return builds + ("native",) if device.type == "cpu" and native.available() else builds


def measure_kernels(table: Table, models: Sequence[str] = ("ltc", "ltc_mhn"), repeats: int = 3) -> list[dict]:
    """The fused solver kernel (its Python and, on CPU, its C++ build) against the plain autograd
    loop (``kernel="reference"``), same trainer, same starting weights, epochs interleaved:
    s/epoch of each and the speed-up of the build training uses by default."""
    from . import native

    builds = kernel_builds(table.device)

    def scope(build: str):
        return native.switched_off() if build == "python" else contextlib.nullcontext()

    networks = {}
    for name in models:
        for build in builds:
            torch.manual_seed(0)
            kernel = "reference" if build == "reference" else "fused"
            networks[name, build] = make_network(name, table.n_features, kernel=kernel).to(table.device)
            with scope(build):
                time_suite_epoch(networks[name, build], table)  # warm-up
    times: dict[tuple, list[tuple[float, float]]] = {key: [] for key in networks}
    for repeat in range(repeats):
        for (name, build), network in networks.items():
            with scope(build):
                times[name, build].append(time_suite_epoch_both(network, table, seed=repeat + 1))
    fused = builds[-1]
    rows = []
    for name in models:
        wall = {b: statistics.median(w for w, _ in times[name, b]) for b in builds}
        cpu = {b: statistics.median(c for _, c in times[name, b]) for b in builds}
        rows.append(
            {
                "model": name,
                "reference_seconds_per_epoch": wall["reference"],
                "python_seconds_per_epoch": wall["python"],
                "native_seconds_per_epoch": wall.get("native"),
                "fused_build": fused,
                "fused_seconds_per_epoch": wall[fused],
                "speedup": wall["reference"] / wall[fused],
                "speedup_cpu": cpu["reference"] / cpu[fused],
            }
        )
    return rows


KERNEL_COLUMNS = (
    ("model", "model", "s"),
    ("reference_seconds_per_epoch", "plain autograd loop s/epoch", ".3f"),
    ("python_seconds_per_epoch", "fused, Python s/epoch", ".3f"),
    ("native_seconds_per_epoch", "fused, C++ s/epoch", ".3f"),
    ("speedup", "speed-up (default build)", ".2fx"),
    ("speedup_cpu", "CPU-time speed-up", ".2fx"),
)


def measure_compile(table: Table, model: str = "ltc_mhn", epochs: int = 3, mode: bool | str = True) -> dict:
    """The cost and gain of ``torch.compile``: first-epoch seconds (compilation included) and
    median later epochs, against the eager trainer on the same network."""
    torch.manual_seed(0)
    network = make_network(model, table.n_features).to(table.device)
    eager = [time_suite_epoch(network, table, seed=i) for i in range(epochs)]
    compiled_network = copy.deepcopy(network)
    stamps: list[float] = []
    synchronize(table.device)
    start = time.perf_counter()
    train_network(
        compiled_network, *table.tensors, max_epochs=epochs, patience=None, batch_size=BATCH_SIZE, compile=mode,
        epoch_callback=lambda record: stamps.append(time.perf_counter()),
    )
    compiled = list(np.diff([start, *stamps]))
    eager_seconds = statistics.median(eager[1:])
    later = statistics.median(compiled[1:]) if len(compiled) > 1 else math.nan
    compile_seconds = compiled[0] - later
    gain = eager_seconds - later
    return {
        "model": model,
        "mode": "default" if mode is True else str(mode),
        "eager_seconds_per_epoch": eager_seconds,
        "compiled_seconds_per_epoch": later,
        "compile_seconds": compile_seconds,
        "epochs_to_amortise": compile_seconds / gain if gain > 0 else math.inf,
    }


# --------------------------------------------------------------------------- naive reference


class NaiveReference(nn.Module):
    """The same network (same parameters) evaluated the way a first implementation would:
    ``LTCCell.vector_field`` at every RK4 stage (input projection W_u u + b and 1/τ recomputed
    each time), and the Hopfield retrieval of Eq. (3) as a Python loop over heads."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        network = self.network
        if not isinstance(network, LiquidHopfieldNetwork):
            return network(u)
        x = u.new_zeros(len(u), network.hidden_size)
        with_memory = network.memory is not None
        for _ in range(network.unfolds):
            x = self.rk4_step(x, u)
            if with_memory and network.feedback:
                x = self.couple(x)
        if with_memory and not network.feedback:
            x = self.couple(x)
        return network.head(x).squeeze(-1)

    def rk4_step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        cell, h = self.network.cell, self.network.step_size
        k1 = cell.vector_field(x, u)
        k2 = cell.vector_field(x + h / 2 * k1, u)
        k3 = cell.vector_field(x + h / 2 * k2, u)
        k4 = cell.vector_field(x + h * k3, u)
        return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    def couple(self, x: torch.Tensor) -> torch.Tensor:
        memory, coupling = self.network.memory, self.network.coupling
        query = memory.query_map(x)
        width = memory.head_size
        retrieved = []
        for head in range(memory.heads):
            columns = slice(head * width, (head + 1) * width)
            patterns = memory.patterns[:, columns]
            weights = torch.softmax(memory.beta * query[:, columns] @ patterns.t(), dim=-1)
            retrieved.append(weights @ patterns)
        return coupling.alpha * x + coupling.delta * memory.output_map(torch.cat(retrieved, dim=1))


def naive_fit(
    module: nn.Module, table: Table, epochs: int, batch_size: int = BATCH_SIZE, learning_rate: float = 1e-3, seed: int = 0
) -> float:
    """Train with a DataLoader over host tensors, per-batch transfers and loss.item(), plain Adam,
    and a validation pass through a DataLoader every epoch; returns the last validation RMSE."""
    from torch.utils.data import DataLoader, TensorDataset

    device = table.device
    train = DataLoader(
        TensorDataset(table.X_train.cpu(), table.y_train.cpu()), batch_size=batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    validation = DataLoader(TensorDataset(table.X_val.cpu(), table.y_val.cpu()), batch_size=batch_size)
    optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate)
    val_rmse = math.nan
    for _ in range(epochs):
        module.train()
        total = 0.0
        for inputs, targets in train:
            inputs, targets = inputs.to(device), targets.to(device)
            loss = F.mse_loss(module(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(inputs)
        module.eval()
        squared = 0.0
        with torch.no_grad():
            for inputs, targets in validation:
                squared += F.mse_loss(module(inputs.to(device)), targets.to(device), reduction="sum").item()
        val_rmse = math.sqrt(squared / len(validation.dataset))
    return val_rmse


def compare_with_naive(
    table: Table, models: Sequence[str] = ("ltc", "ltc_mhn", "mlp"), epochs: int = 2, repeats: int = 3
) -> list[dict]:
    """Seconds per epoch of the suite's trainer and of the naive reference on identical starting
    weights, and their ratio (the speed-up). Medians over ``repeats`` interleaved repetitions."""
    rows = []
    starts = {}
    for name in models:
        torch.manual_seed(0)
        starts[name] = make_network(name, table.n_features).to(table.device)
        time_suite_epoch(copy.deepcopy(starts[name]), table)  # warm-up
    suite: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
    naive: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
    rmse: dict[str, tuple[float, float]] = {}
    for repeat in range(repeats):
        for name in models:
            network = copy.deepcopy(starts[name])
            history = []
            suite[name].append(
                timed_both(
                    lambda: train_network(
                        network, *table.tensors, max_epochs=epochs, patience=None, batch_size=BATCH_SIZE,
                        seed=repeat, epoch_callback=history.append,
                    ),
                    table.device,
                )
            )
            reference = NaiveReference(copy.deepcopy(starts[name]))
            naive_rmse = [math.nan]
            naive[name].append(
                timed_both(lambda: naive_rmse.__setitem__(0, naive_fit(reference, table, epochs, seed=repeat)), table.device)
            )
            rmse[name] = (history[-1]["val_rmse"], naive_rmse[0])
    for name in models:
        suite_seconds = statistics.median(wall for wall, _ in suite[name]) / epochs
        naive_seconds = statistics.median(wall for wall, _ in naive[name]) / epochs
        suite_cpu = statistics.median(cpu for _, cpu in suite[name])
        naive_cpu = statistics.median(cpu for _, cpu in naive[name])
        rows.append(
            {
                "model": name,
                "epochs": epochs,
                "suite_seconds_per_epoch": suite_seconds,
                "naive_seconds_per_epoch": naive_seconds,
                "speedup": naive_seconds / suite_seconds,
                "speedup_cpu": naive_cpu / suite_cpu,
                "suite_val_rmse": rmse[name][0],
                "naive_val_rmse": rmse[name][1],
            }
        )
    return rows


# --------------------------------------------------------------------------- packing trials


def _packed_worker(rank, device_name, n_rows, n_features, epochs, model, barrier, results, profile) -> None:
    """One trial in its own process: warm up, wait for the others, then time ``epochs`` epochs."""
    device = torch.device(device_name)
    torch.set_num_threads(1)
    stream = None
    if device.type == "cuda":
        if device.index is not None:
            torch.cuda.set_device(device)
        stream = torch.cuda.Stream(device)  # each packed trial queues its work on its own stream
    context = torch.cuda.stream(stream) if stream is not None else _nullcontext()
    with context:
        table = Table(n_rows, n_features, device, seed=rank)
        torch.manual_seed(rank)
        network = make_network(model, n_features).to(device)
        time_suite_epoch(network, table)  # warm-up
        busy = _device_busy_seconds(network, table) if profile and device.type == "cuda" else None
        barrier.wait()
        seconds = [time_suite_epoch(network, table, seed=epoch + 1) for epoch in range(epochs)]
    results.put({"rank": rank, "seconds": seconds, "busy_seconds": busy})


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _device_busy_seconds(network: nn.Module, table: Table) -> float | None:
    """Seconds the GPU spends in kernels during one epoch (torch.profiler), or None if unavailable."""
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as profiler:
            time_suite_epoch(network, table)
        return sum(event.self_device_time_total for event in profiler.key_averages()) / 1e6
    except Exception:  # profiler support differs between builds; the packing figures stand without it
        return None


def run_packed(n_trials: int, device: torch.device, n_rows: int, n_features: int, epochs: int, model: str) -> dict:
    """Run ``n_trials`` trials at once, one process each; per-trial median s/epoch and total rows/s."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(n_trials), context.Queue()
    processes = [
        context.Process(
            target=_packed_worker,
            args=(rank, str(device), n_rows, n_features, epochs, model, barrier, results, n_trials == 1),
        )
        for rank in range(n_trials)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=1800) for _ in processes]
    for process in processes:
        process.join()
    per_trial = [statistics.median(outcome["seconds"]) for outcome in outcomes]
    busy = next((o["busy_seconds"] for o in outcomes if o["busy_seconds"] is not None), None)
    seconds = statistics.median(per_trial)
    return {
        "trials": n_trials,
        "seconds_per_epoch": seconds,
        "rows_per_second_per_trial": n_rows / seconds,
        "rows_per_second_total": sum(n_rows / s for s in per_trial),
        "busy_seconds_per_epoch": busy,
    }


def measure_packing(
    device: torch.device, packed: int, n_rows: int = 20_000, n_features: int = 20, epochs: int = 3, model: str = "ltc_mhn"
) -> list[dict]:
    """One trial alone, then ``packed`` trials at once on the same device. Each row gets the
    slowdown per trial against the lone trial and the slowdown the device share explains: on a
    GPU, max(1, packed × the lone trial's busy fraction); on a CPU with a core per trial, 1."""
    alone = run_packed(1, device, n_rows, n_features, epochs, model)
    together = run_packed(packed, device, n_rows, n_features, epochs, model)
    busy = alone["busy_seconds_per_epoch"]
    if device.type == "cuda":
        explained = max(1.0, packed * busy / alone["seconds_per_epoch"]) if busy is not None else math.nan
    else:
        explained = max(1.0, packed / max(1, os.cpu_count() or 1))
    rows = []
    for row in (alone, together):
        slowdown = row["seconds_per_epoch"] / alone["seconds_per_epoch"]
        rows.append({**row, "model": model, "slowdown": slowdown, "explained_slowdown": 1.0 if row is alone else explained})
    if busy is not None:
        rows[0]["busy_share"] = busy / alone["seconds_per_epoch"]
    return rows


# --------------------------------------------------------------------------- tables


def format_table(rows: list[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """Rows as an aligned text table; ``columns`` are (key, heading, format spec) triples.

    A spec ending in ``x`` prints a ratio (``1.23x``); text columns (spec ``s``) are left-aligned,
    numbers right-aligned; a missing or NaN value prints as ``-``.
    """
    cells = [[heading for _, heading, _ in columns]]
    for row in rows:
        line = []
        for key, _, spec in columns:
            value = row.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                line.append("-")
            elif spec.endswith("x"):
                line.append(format(value, spec[:-1]) + "x")
            else:
                line.append(format(value, spec))
        cells.append(line)
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    text = []
    for index, line in enumerate(cells):
        padded = [
            cell.ljust(width) if spec == "s" else cell.rjust(width)
            for cell, width, (_, _, spec) in zip(line, widths, columns)
        ]
        text.append("  ".join(padded).rstrip())
        if index == 0:
            text.append("  ".join("-" * width for width in widths))
    return "\n".join(text)


THROUGHPUT_COLUMNS = (
    ("model", "model", "s"),
    ("width", "width", "d"),
    ("parameters", "parameters", "d"),
    ("seconds_per_epoch", "s/epoch", ".3f"),
    ("rows_per_second", "rows/s", ".0f"),
    ("gflop_per_epoch", "GFLOP/epoch", ".2f"),
    ("gflops", "GFLOP/s", ".1f"),
    ("peak_share", "of peak", ".1%"),
    ("epoch_vs_ltc", "epoch vs ltc", ".2fx"),
    ("cpu_seconds_per_epoch", "CPU s/epoch", ".3f"),
    ("cpu_vs_ltc", "CPU vs ltc", ".2fx"),
)
NAIVE_COLUMNS = (
    ("model", "model", "s"),
    ("epochs", "epochs", "d"),
    ("suite_seconds_per_epoch", "suite s/epoch", ".3f"),
    ("naive_seconds_per_epoch", "naive s/epoch", ".3f"),
    ("speedup", "speed-up", ".2fx"),
    ("speedup_cpu", "CPU-time speed-up", ".2fx"),
    ("suite_val_rmse", "suite val RMSE", ".3f"),
    ("naive_val_rmse", "naive val RMSE", ".3f"),
)
PACKING_COLUMNS = (
    ("model", "model", "s"),
    ("trials", "trials", "d"),
    ("seconds_per_epoch", "s/epoch per trial", ".3f"),
    ("rows_per_second_per_trial", "rows/s per trial", ".0f"),
    ("rows_per_second_total", "rows/s total", ".0f"),
    ("slowdown", "slowdown", ".2fx"),
    ("explained_slowdown", "explained by share", ".2fx"),
)


def describe_machine(device: torch.device) -> str:
    """One line naming the device, torch and the load."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return (
        f"torch {torch.__version__} on {device} ({name}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, load average {load:.1f})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model.bench", description="Training throughput of the models.")
    parser.add_argument("--rows", type=int, default=20_000, help="training rows of the synthetic table (default 20000)")
    parser.add_argument("--features", type=int, default=20, help="number of features (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per model after a warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as in a trial)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--models", nargs="+", default=list(BENCH_MODELS), choices=BENCH_MODELS)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    with torch_threads(args.threads):
        print(describe_machine(device))
        peak = peak_matmul_gflops(device)
        table = Table(args.rows, args.features, device)
        rows = measure_throughput(table, args.models, repeats=args.repeats, peak_gflops=peak)
    print(f"{args.rows} rows x {args.features} features, batch {BATCH_SIZE}; float32 matmul peak {peak:.1f} GFLOP/s")
    print(format_table(rows, THROUGHPUT_COLUMNS))


if __name__ == "__main__":
    main()
