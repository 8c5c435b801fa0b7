"""``python -m hpo bench [--quick]``: what training and searching cost on this machine.

One table per part, all measured in the same run (so ratios hold on a noisy machine), each figure
a median of several repetitions after a warm-up:

  a  training throughput of ltc, ltc_mhn, matched_ltc and an MLP of the same width: rows/s,
     GFLOP/s (FlopCounterMode, forward + backward) and its share of the float32 matmul peak
     measured in the same run; plus, in the full run, the cost and gain of torch.compile;
  b  the suite's trainer against a naive reference (model.bench.NaiveReference), same epochs;
  c  seconds per trial that Ray Tune adds over in-process Optuna: a trivial objective (with and
     without actor reuse) and a real 8-trial search of a small mirror task;
  d  ASHA + TPE against TPE alone at the same number of trials, on two small mirror tasks;
  e  peak memory of one trial on diamonds (the largest mirror task) and of a two-trial search;
  f  the full studies/ctr23.toml sweep projected in CPU-hours from measured epoch and fit times;
  p  one trial alone against trials packed on one device (4 on a GPU, one per core on a CPU).

The device is detected (``--device``). Trials run with one torch thread, as in a sweep.
Search-level parts use the search engine's own entry points (hpo.tuning.run_search,
hpo.estimators); the Ray trainable of part c lives here so that Ray imports it by reference.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PARTS = ("a", "b", "c", "d", "e", "f", "p")
PART_TITLES = {
    "a": "a. Training throughput (one epoch, batch 256, default settings)",
    "b": "b. The suite's trainer against a naive reference (same network, same epochs)",
    "c": "c. Search overhead: Ray Tune against in-process Optuna (one trial at a time)",
    "d": "d. Early stopping: ASHA + TPE against TPE alone (same trials, same seed)",
    "e": "e. Peak memory",
    "f": "f. Projection of the full studies/ctr23.toml sweep on this machine",
    "p": "p. Trials packed on one device",
}
SMALL_TASKS = ("concrete_compressive_strength", "airfoil_self_noise")
LARGEST_TASK = "diamonds"


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of every part; :data:`QUICK` runs in a few minutes, :data:`FULL` in under twenty."""

    rows: int = 20_000
    features: int = 20
    repeats: int = 5
    compile_check: bool = True
    naive_epochs: int = 2
    naive_repeats: int = 5
    trivial_trials: int = 10
    search_trials: int = 8
    search_epochs: int = 5
    asha_trials: int = 24
    asha_epochs: int = 40  # grace / max epochs = 1/20, as in studies/ctr23.toml (10 / 200)
    asha_grace: int = 2
    asha_seeds: tuple[int, ...] = (0, 1, 2)  # one search pair per seed: a single pair is mostly TPE's luck
    memory_epochs: int = 2
    projection_rows: tuple[int, int] = (2000, 8000)
    baseline_rows: tuple[int, int] = (1000, 4000)
    projection_configs: int = 6
    packing_rows: int = 20_000
    packing_epochs: int = 3


FULL = BenchConfig()
QUICK = BenchConfig(
    repeats=3,
    compile_check=False,
    naive_epochs=1,
    naive_repeats=1,
    trivial_trials=6,
    search_epochs=3,
    asha_trials=6,
    asha_epochs=20,
    asha_grace=1,
    asha_seeds=(0,),
    memory_epochs=1,
    projection_rows=(1000, 4000),
    baseline_rows=(500, 2000),
    projection_configs=2,
    packing_rows=5000,
    packing_epochs=2,
)


# --------------------------------------------------------------------------- command line


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` command."""
    parser = subparsers.add_parser(
        "bench",
        help="measure this machine: trainer throughput, naive reference, search overhead, ASHA, memory, sweep cost",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--quick", action="store_true", help="smaller repetitions and searches (a few minutes)")
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS), metavar="PART",
        help=f"parts to run, of {' '.join(PARTS)} (default: all)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--json", type=Path, help="also write every table's rows to this JSON file")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the chosen parts, print their tables; 0 when every part ran, 1 when one failed."""
    import torch

    from model.trainer import resolve_device

    config = QUICK if args.quick else FULL
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        print(f"error: --device: {error}", file=sys.stderr)
        return 2
    _default_mirror()
    # hpo.cluster.start_ray turns Ray's token authentication on by setting RAY_AUTH_MODE=token, but
    # after `import ray`, when Ray has already read it: set it first (the same choice, made in time)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    torch.set_num_threads(1)  # one thread per trial, as in a sweep
    _quiet_optuna()
    results: dict[str, Any] = {"config": asdict(config), "quick": bool(args.quick)}
    started = time.time()
    print(_machine_line(device), flush=True)
    state = BenchState(config, device)
    failed = False
    try:
        for part in [p for p in PARTS if p in args.parts]:
            print(f"\n{PART_TITLES[part]}", flush=True)
            part_started = time.time()
            try:
                tables = RUNNERS[part](state)
            except Exception as error:  # one part failing leaves the others' figures standing
                failed = True
                print(f"  part {part} failed: {type(error).__name__}: {error}", flush=True)
                results[part] = {"error": f"{type(error).__name__}: {error}"}
                continue
            for table in tables:
                print(table.text(), flush=True)
            results[part] = {table.name: table.rows for table in tables}
            print(f"  ({time.time() - part_started:.0f} s; load average {_load():.1f})", flush=True)
    finally:
        state.close()
    print(f"\nbench finished in {time.time() - started:.0f} s; load average now {_load():.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=_json_default))
        print(f"rows written to {args.json}")
    return 1 if failed else 0


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _default_mirror() -> None:
    """Point HPO_OPENML_MIRROR at the shared mirror beside the checkout when it is unset."""
    from hpo.data import MIRROR_ENV

    mirror = REPO_ROOT.parent / "shared" / "ctr23" / "openml_cache"
    if not os.environ.get(MIRROR_ENV) and mirror.is_dir():
        os.environ[MIRROR_ENV] = str(mirror)


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


def _machine_line(device) -> str:
    from model.bench import describe_machine

    return describe_machine(device) + f"; PID {os.getpid()}"


@dataclass
class Table:
    """A printed table: its rows (for --json and tests), columns and notes under it."""

    name: str
    rows: list[dict]
    columns: tuple
    notes: tuple[str, ...] = ()

    def text(self) -> str:
        from model.bench import format_table

        body = format_table(self.rows, self.columns)
        lines = ["  " + line for line in body.splitlines()]
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


class BenchState:
    """What the parts share: the configuration, the device, the peak rate and one Ray instance."""

    def __init__(self, config: BenchConfig, device) -> None:
        self.config = config
        self.device = device
        self.peak_gflops: float | None = None
        self.ray_cluster = None
        self.ray_init_seconds: float | None = None
        self.ray_overhead_per_trial: float | None = None  # from part c, used by part f
        self.asha_epoch_share: float | None = None  # from part d, used by part f

    def peak(self) -> float:
        from model.bench import peak_matmul_gflops

        if self.peak_gflops is None:
            self.peak_gflops = peak_matmul_gflops(self.device)
        return self.peak_gflops

    def ray(self):
        """A local Ray for the search parts, started once. Workers' output stays in Ray's logs
        (trial actors print tracebacks when Tune ends them), so the tables stay readable."""
        if self.ray_cluster is None:
            import logging

            import ray

            from hpo.cluster import start_ray

            started = time.perf_counter()
            if not ray.is_initialized():
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
                self._started_ray = True
            self.ray_cluster = start_ray(echo=lambda text: None)  # joins it; the search engine's view of it
            self.ray_init_seconds = time.perf_counter() - started
        return self.ray_cluster

    def close(self) -> None:
        if self.ray_cluster is not None and getattr(self, "_started_ray", False):
            import ray

            ray.shutdown()
        self.ray_cluster = None


# --------------------------------------------------------------------------- a. throughput


def part_throughput(state: BenchState) -> list[Table]:
    from model import native
    from model.bench import (
        KERNEL_COLUMNS,
        THROUGHPUT_COLUMNS,
        Table as DataTable,
        kernel_builds,
        measure_compile,
        measure_kernels,
        measure_throughput,
        peak_matmul_gflops,
    )

    config = state.config
    table = DataTable(config.rows, config.features, state.device)
    peak = state.peak()
    rows = measure_throughput(table, repeats=config.repeats, peak_gflops=peak)
    again = peak_matmul_gflops(state.device)  # measured again after the models: the better of the two
    if again > peak:
        state.peak_gflops = peak = again
        for row in rows:
            row["peak_share"] = row["gflops"] / peak
    notes = [
        f"{config.rows} training + {len(table.X_val)} validation rows x {config.features} features; "
        f"epoch = training + validation pass; median of {config.repeats} epochs after a warm-up",
        f"float32 matmul peak measured in this run: {peak:.1f} GFLOP/s ({_threads_text(state)}; best "
        f"{8192 if state.device.type == 'cuda' else 1024}^3 product before and after the models); "
        "GFLOP counted by FlopCounterMode (matrix products, forward + backward); solver kernel: "
        + (native.describe() if state.device.type == "cpu" else "python (model.kernels)"),
    ]
    tables = [Table("throughput", rows, THROUGHPUT_COLUMNS, tuple(notes))]
    kernels = measure_kernels(table, repeats=config.repeats)
    tables.append(
        Table(
            "kernels",
            kernels,
            KERNEL_COLUMNS,
            (
                "the suite's trainer every time; plain loop = kernel='reference'; fused, Python = model.kernels "
                "(LIQUID_MEMORY_NATIVE=0, and on CUDA); fused, C++ = model.native, the default on CPU "
                f"(here: {'built' if 'native' in kernel_builds(state.device) else 'not built'})",
            ),
        )
    )
    if config.compile_check:
        compiled = measure_compile(table, mode="reduce-overhead" if state.device.type == "cuda" else True)
        columns = (
            ("model", "model", "s"),
            ("mode", "torch.compile mode", "s"),
            ("eager_seconds_per_epoch", "eager s/epoch", ".3f"),
            ("compiled_seconds_per_epoch", "compiled s/epoch", ".3f"),
            ("compile_seconds", "compile s", ".1f"),
            ("epochs_to_amortise", "epochs to amortise", ".0f"),
        )
        tables.append(
            Table(
                "compile",
                [compiled],
                columns,
                ("the eager trainer uses the fused kernel; compiled, the plain loop is traced and fused by inductor",),
            )
        )
    return tables


def _threads_text(state: BenchState) -> str:
    import torch

    return "GPU" if state.device.type == "cuda" else f"{torch.get_num_threads()} thread"


# --------------------------------------------------------------------------- b. naive reference


def part_naive(state: BenchState) -> list[Table]:
    from model.bench import NAIVE_COLUMNS, Table as DataTable, compare_with_naive

    config = state.config
    table = DataTable(config.rows, config.features, state.device)
    rows = compare_with_naive(table, epochs=config.naive_epochs, repeats=config.naive_repeats)
    notes = (
        "naive: DataLoader over a TensorDataset, per-batch transfer and loss.item(), plain Adam, the input "
        "projection recomputed at every RK4 stage, a Python loop over Hopfield heads",
        "suite: tensors on the device, one gather per epoch, fused solver kernel, fused Adam, one sync per epoch",
        f"median of {config.naive_repeats} repetition(s) of {config.naive_epochs} epoch(s) each, same starting weights",
    )
    return [Table("naive", rows, NAIVE_COLUMNS, notes)]


# --------------------------------------------------------------------------- c. search overhead


def trivial_trainable(config: dict) -> None:
    """Ray Tune function trainable for part c: three cheap "epochs" of a quadratic."""
    from ray import tune

    for epoch in range(1, 4):
        tune.report({"val_rmse": (config["x"] - 2.0) ** 2 + 1.0 / epoch, "epoch": epoch})


def _trivial_optuna(n_trials: int, seed: int = 0) -> float:
    import optuna

    def objective(trial) -> float:
        x = trial.suggest_float("x", -5.0, 5.0)
        value = math.inf
        for epoch in range(1, 4):
            value = (x - 2.0) ** 2 + 1.0 / epoch
            trial.report(value, epoch)
        return value

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    started = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    return time.perf_counter() - started


def _trivial_ray(n_trials: int, reuse_actors: bool, storage: Path, seed: int = 0) -> float:
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(metric="val_rmse", mode="min", sampler=optuna.samplers.TPESampler(seed=seed))
    tuner = tune.Tuner(
        tune.with_resources(trivial_trainable, {"cpu": 1}),
        param_space={"x": tune.uniform(-5.0, 5.0)},
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=n_trials, max_concurrent_trials=1, reuse_actors=reuse_actors
        ),
        run_config=tune.RunConfig(
            name=f"trivial-reuse{int(reuse_actors)}", storage_path=str(storage), verbose=0, progress_reporter=None
        ),
    )
    started = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - started


def _fold_data(task: str, fold: int = 0, seed: int = 0) -> dict:
    from hpo.data import load_task, make_fold

    fold_data = make_fold(load_task(task), fold=fold, seed=seed, validation_fraction=0.1)
    return {"X_train": fold_data.X_train, "y_train": fold_data.y_train, "X_val": fold_data.X_val, "y_val": fold_data.y_val}


def _settings(variant: str, max_epochs: int, patience: int, device: str = "cpu"):
    from hpo.estimators import FitSettings

    return FitSettings(variant=variant, max_epochs=max_epochs, patience=patience, device=device, n_threads=1)


def _space(variant: str):
    from hpo.space import NEURAL_SPACE, XGBOOST_SPACE, space_for

    return space_for(variant, NEURAL_SPACE, XGBOOST_SPACE)


def run_ray_search(
    state: BenchState,
    workdir: Path,
    name: str,
    data: dict,
    settings,
    n_trials: int,
    asha: dict | None,
    max_concurrent: int = 1,
    startup_trials: int = 3,
):
    """One search through the search engine's own ``run_search`` (TPE, default point first)."""
    import optuna

    from hpo.storage import journal_storage
    from hpo.tuning import run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    state.ray()
    folder = workdir / name
    return run_search(
        study_name=name,
        storage=journal_storage(folder / "optuna.journal"),
        space=_space(settings.variant),
        settings=settings,
        data=data,
        n_trials=n_trials,
        search_dir=folder / "ray",
        trial_log=folder / "trial_log.jsonl",
        resources={"cpu": 1, "gpu": 0.25 if state.device.type == "cuda" else 0},
        scheduler=asha,
        max_concurrent_trials=max_concurrent,
        reuse_actors=True,
        startup_trials=startup_trials,
        ray_verbose=0,
        echo=None,
    )


def run_optuna_search(
    data: dict, settings, n_trials: int, seed: int = 0, startup_trials: int = 3
) -> tuple[float, list[float], list[int]]:
    """The same search in process: Optuna's TPE with the default point first, the trial's own fit.
    Returns the total seconds, each trial's seconds and each trial's epochs."""
    import optuna

    from hpo.estimators import build_estimator, fit_estimator
    from hpo.space import default_point, suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = _space(settings.variant)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials))
    study.enqueue_trial(default_point(space))
    epochs: list[int] = []
    seconds: list[float] = []

    def objective(trial) -> float:
        trial_started = time.perf_counter()
        params = suggest(trial, space)
        estimator = build_estimator(settings, params)
        curve: list[float] = []

        def report(record: dict) -> None:
            curve.append(record["val_rmse"])
            trial.report(record["val_rmse"], record["epoch"])

        fit_estimator(estimator, settings, data["X_train"], data["y_train"], data["X_val"], data["y_val"], epoch_callback=report)
        epochs.append(len(curve))
        seconds.append(time.perf_counter() - trial_started)
        return min(curve)

    started = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    return time.perf_counter() - started, seconds, epochs


def overhead_rows(measurements: list[dict]) -> list[dict]:
    """Per-trial seconds of Ray Tune and Optuna and what Ray adds, from total wall-clock times;
    where the first trials' own seconds are known (``ray_first_seconds``, ``optuna_first_seconds``)
    also what Ray adds to every later trial (a reused worker past its start-up and imports)."""
    rows = []
    for item in measurements:
        trials = item["trials"]
        ray_per_trial = item["ray_seconds"] / trials
        optuna_per_trial = item["optuna_seconds"] / trials
        later = math.nan
        if trials > 1 and item.get("ray_first_seconds") is not None and item.get("optuna_first_seconds") is not None:
            ray_later = (item["ray_seconds"] - item["ray_first_seconds"]) / (trials - 1)
            optuna_later = (item["optuna_seconds"] - item["optuna_first_seconds"]) / (trials - 1)
            later = ray_later - optuna_later
        rows.append(
            {
                "objective": item["objective"],
                "actor_reuse": "yes" if item["reuse_actors"] else "no",
                "trials": trials,
                "optuna_seconds_per_trial": optuna_per_trial,
                "ray_seconds_per_trial": ray_per_trial,
                "added_seconds_per_trial": ray_per_trial - optuna_per_trial,
                "added_after_first": later,
            }
        )
    return rows


OVERHEAD_COLUMNS = (
    ("objective", "objective", "s"),
    ("actor_reuse", "actor reuse", "s"),
    ("trials", "trials", "d"),
    ("optuna_seconds_per_trial", "Optuna s/trial", ".3f"),
    ("ray_seconds_per_trial", "Ray Tune s/trial", ".3f"),
    ("added_seconds_per_trial", "added by Ray s/trial", ".3f"),
    ("added_after_first", "added, trials 2..n", ".3f"),
)


def part_overhead(state: BenchState) -> list[Table]:
    config = state.config
    state.ray()
    measurements = []
    with tempfile.TemporaryDirectory(prefix="hpo-bench-") as folder:
        workdir = Path(folder)
        optuna_seconds = _trivial_optuna(config.trivial_trials)
        for reuse in (True, False):
            measurements.append(
                {
                    "objective": "trivial (3 reports)",
                    "reuse_actors": reuse,
                    "trials": config.trivial_trials,
                    "ray_seconds": _trivial_ray(config.trivial_trials, reuse, workdir),
                    "optuna_seconds": optuna_seconds,
                }
            )
        task = SMALL_TASKS[0]
        data = _fold_data(task)
        settings = _settings("ltc_mhn", config.search_epochs, config.search_epochs, device=state.device.type)
        optuna_seconds, optuna_trial_seconds, _ = run_optuna_search(data, settings, config.search_trials)
        started = time.perf_counter()
        outcome = run_ray_search(state, workdir, "real", data, settings, config.search_trials, asha=None)
        ray_seconds = time.perf_counter() - started
        if outcome.error:
            raise RuntimeError(f"the real search failed: {outcome.error}")
        first = min(outcome.trial_rows, key=lambda row: row["trial_number"])
        measurements.append(
            {
                "objective": f"{task} ltc_mhn, {config.search_epochs} epochs",
                "reuse_actors": True,
                "trials": config.search_trials,
                "ray_seconds": ray_seconds,
                "optuna_seconds": optuna_seconds,
                "ray_first_seconds": first["seconds"],
                "optuna_first_seconds": optuna_trial_seconds[0],
            }
        )
    rows = overhead_rows(measurements)
    # the projection charges every trial the larger of the trivial and the real steady-state overhead
    candidates = [rows[0]["added_seconds_per_trial"], rows[-1]["added_after_first"]]
    state.ray_overhead_per_trial = max(value for value in candidates if math.isfinite(value))
    notes = (
        f"ray.init took {state.ray_init_seconds:.1f} s (once per driver, not counted above); one trial at a time,"
        " 1 CPU per trial; the real search uses hpo.tuning.run_search (FIFO) and, in process, the same fit",
        "trials 2..n: after the first trial, whose worker starts and imports torch (in process that was done before)",
    )
    return [Table("overhead", rows, OVERHEAD_COLUMNS, notes)]


# --------------------------------------------------------------------------- d. ASHA


def asha_rows(results: list[dict]) -> list[dict]:
    """Per task and seed: best validation RMSE and epochs of both searches, and their ratios; per
    task searched with several seeds, a row "median" (median RMSE ratio, summed epochs)."""
    rows = []
    for item in results:
        rows.append(
            {
                "task": item["task"],
                "seed": str(item.get("seed", 0)),
                "trials": item["trials"],
                "fifo_best_val_rmse": item["fifo_best"],
                "asha_best_val_rmse": item["asha_best"],
                "rmse_ratio": item["asha_best"] / item["fifo_best"],
                "fifo_epochs": item["fifo_epochs"],
                "asha_epochs": item["asha_epochs"],
                "epoch_ratio": item["asha_epochs"] / item["fifo_epochs"],
                "asha_pruned": item["asha_pruned"],
            }
        )
    summaries = []
    for task in dict.fromkeys(row["task"] for row in rows):
        mine = [row for row in rows if row["task"] == task]
        if len(mine) < 2:
            continue
        fifo_epochs = sum(row["fifo_epochs"] for row in mine)
        asha_epochs = sum(row["asha_epochs"] for row in mine)
        summaries.append(
            {
                "task": task,
                "seed": "median",
                "trials": sum(row["trials"] for row in mine),
                "rmse_ratio": statistics.median(row["rmse_ratio"] for row in mine),
                "fifo_epochs": fifo_epochs,
                "asha_epochs": asha_epochs,
                "epoch_ratio": asha_epochs / fifo_epochs,
                "asha_pruned": sum(row["asha_pruned"] for row in mine),
            }
        )
    return rows + summaries


ASHA_COLUMNS = (
    ("task", "task", "s"),
    ("seed", "seed", "s"),
    ("trials", "trials", "d"),
    ("fifo_best_val_rmse", "TPE best val RMSE", ".4g"),
    ("asha_best_val_rmse", "ASHA+TPE best", ".4g"),
    ("rmse_ratio", "RMSE ratio", ".3f"),
    ("fifo_epochs", "TPE epochs", "d"),
    ("asha_epochs", "ASHA+TPE epochs", "d"),
    ("epoch_ratio", "epoch ratio", ".2f"),
    ("asha_pruned", "pruned", "d"),
)


def part_asha(state: BenchState) -> list[Table]:
    config = state.config
    results = []
    with tempfile.TemporaryDirectory(prefix="hpo-bench-") as folder:
        workdir = Path(folder)
        for task in SMALL_TASKS:
            data = _fold_data(task)  # once per task: every seed searches the same fold
            for seed in config.asha_seeds:
                settings = dataclasses.replace(
                    _settings("ltc_mhn", config.asha_epochs, config.asha_epochs, device=state.device.type), seed=seed
                )
                outcomes = {}
                for label, asha in (("fifo", None), ("asha", {"grace_period": config.asha_grace, "reduction_factor": 3})):
                    name = f"{task}-{label}-seed{seed}"
                    outcome = run_ray_search(state, workdir, name, data, settings, config.asha_trials, asha)
                    if outcome.error:
                        raise RuntimeError(f"{task} {label} seed {seed}: {outcome.error}")
                    outcomes[label] = outcome
                results.append(
                    {
                        "task": task,
                        "seed": seed,
                        "trials": config.asha_trials,
                        "fifo_best": outcomes["fifo"].best_val_rmse,
                        "asha_best": outcomes["asha"].best_val_rmse,
                        "fifo_epochs": sum(int(r["epochs"]) for r in outcomes["fifo"].trial_rows),
                        "asha_epochs": sum(int(r["epochs"]) for r in outcomes["asha"].trial_rows),
                        "asha_pruned": sum(r["state"] == "PRUNED" for r in outcomes["asha"].trial_rows),
                    }
                )
    rows = asha_rows(results)
    per_seed = [row for row in rows if row["seed"] != "median"]
    state.asha_epoch_share = sum(r["asha_epochs"] for r in per_seed) / sum(r["fifo_epochs"] for r in per_seed)
    seeds = ", ".join(map(str, config.asha_seeds))
    notes = (
        f"ltc_mhn, fold 0, {config.asha_trials} trials of at most {config.asha_epochs} epochs (no patience stop), "
        f"TPE with the default point first; ASHA grace {config.asha_grace}, reduction factor 3, one trial at a time",
        f"seed {seeds} (TPE's and the networks'; both searches of a pair use the same seed)"
        + ("; median: median RMSE ratio over the seeds, epochs summed" if len(config.asha_seeds) > 1 else ""),
    )
    return [Table("asha", rows, ASHA_COLUMNS, notes)]


# --------------------------------------------------------------------------- e. memory


def _child(kind: str, arguments: dict) -> None:
    """Entry point of the subprocesses of part e; prints one JSON line."""
    import resource

    import torch

    torch.set_num_threads(1)
    if kind == "trial":
        import gc

        from hpo.estimators import build_estimator, fit_estimator

        started = time.perf_counter()
        data = _fold_data(arguments["task"])  # in a sweep the driver does this; a trial receives the arrays
        loading_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        gc.collect()
        reset = _reset_peak_rss()
        settings = _settings("ltc_mhn", arguments["epochs"], arguments["epochs"], device=arguments["device"])
        estimator = build_estimator(settings, {})
        fit_estimator(estimator, settings, data["X_train"], data["y_train"], data["X_val"], data["y_val"])
        gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if arguments["device"] == "cuda" else None
        fit_peak = _proc_kb(os.getpid(), "status", "VmHWM:") if reset else None
        print(
            json.dumps(
                {
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "loading_peak_rss_mb": loading_peak,
                    "fit_peak_rss_mb": fit_peak / 1024 if fit_peak is not None else None,
                    "gpu_peak_mb": gpu_peak,
                    "seconds": time.perf_counter() - started,
                    "rows": len(data["X_train"]),
                    "features": int(data["X_train"].shape[1]),
                }
            )
        )
    elif kind == "search":
        from model.trainer import resolve_device

        sampler = ProcessTreeSampler(os.getpid())
        sampler.start()
        state = BenchState(QUICK, resolve_device(arguments["device"]))
        try:
            data = _fold_data(arguments["task"])
            settings = _settings("ltc_mhn", arguments["epochs"], arguments["epochs"], device=arguments["device"])
            with tempfile.TemporaryDirectory(prefix="hpo-bench-") as folder:
                outcome = run_ray_search(state, Path(folder), "memory", data, settings, 2, None, max_concurrent=2)
            sampler.stop()
        finally:
            state.close()
            sampler.stop()
        if outcome.error:
            raise RuntimeError(outcome.error)
        print(json.dumps({**sampler.summary(), "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    else:
        raise ValueError(f"unknown child kind {kind!r}")


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident set (Linux: /proc/self/clear_refs, value 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class ProcessTreeSampler:
    """Samples the memory of a process and its descendants (Linux /proc) a few times a second.

    ``summary()``: the largest simultaneous total proportional set size (PSS: shared pages split
    between the processes that map them, so the object store and libraries are counted once)
    with its split into the driver, Ray trial workers and Ray's own services, and the peak
    resident set (VmHWM) of each trial worker.
    """

    def __init__(self, root: int, interval: float = 0.25) -> None:
        self.root, self.interval = root, interval
        self.peak_total = 0.0
        self.peak_split: dict[str, float] = {}
        self.worker_peaks: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        split = {"driver": 0.0, "trial workers": 0.0, "Ray services": 0.0}
        for pid in _descendants(self.root):
            pss = _proc_kb(pid, "smaps_rollup", "Pss:")
            if pss is None:
                continue
            name = _proc_name(pid)
            if pid == self.root:
                group = "driver"
            elif name.startswith("ray::") and "IDLE" not in name and not name.endswith("Agent"):
                group = "trial workers"  # Ray names a worker after the task or actor it runs
                peak = _proc_kb(pid, "status", "VmHWM:")
                if peak is not None:
                    previous = self.worker_peaks.get(pid, (name, 0.0))[1]
                    self.worker_peaks[pid] = (name, max(previous, peak / 1024))
            else:
                group = "Ray services"
            split[group] += pss / 1024
        total = sum(split.values())
        if total > self.peak_total:
            self.peak_total, self.peak_split = total, split

    def summary(self) -> dict:
        return {
            "peak_total_pss_mb": self.peak_total,
            "peak_split_mb": self.peak_split,
            "workers": sorted(
                ({"name": name, "peak_rss_mb": peak} for name, peak in self.worker_peaks.values()),
                key=lambda worker: -worker["peak_rss_mb"],
            ),
        }


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _proc_kb(pid: int, file: str, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _proc_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def _run_child(kind: str, arguments: dict, timeout: float = 1200) -> dict:
    code = f"import hpo.bench as b; b._child({kind!r}, {json.dumps(arguments)})"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{kind} subprocess failed: {' | '.join(tail)}")
    return json.loads(lines[-1])


def memory_rows(trial: dict | None, search: dict | None, limit_mb: float = 2048.0) -> list[dict]:
    """Rows of part e: the trial process (whole, and its fit alone), the two-trial search."""

    def verdict(megabytes: float) -> str:
        return "yes" if megabytes < limit_mb else "NO"

    rows = []
    if trial is not None:
        rows.append(
            {
                "what": f"one trial ({trial['rows']} rows x {trial['features']} features)",
                "peak_mb": trial["peak_rss_mb"],
                "measure": "peak RSS of the process, loading the task included",
                "under_2_gb": verdict(trial["peak_rss_mb"]),
            }
        )
        if trial.get("fit_peak_rss_mb") is not None:
            rows.append(
                {
                    "what": "  its fit alone",
                    "peak_mb": trial["fit_peak_rss_mb"],
                    "measure": "peak RSS after the data arrived (what a Ray trial holds)",
                    "under_2_gb": verdict(trial["fit_peak_rss_mb"]),
                }
            )
        if trial.get("gpu_peak_mb") is not None:
            rows.append(
                {
                    "what": "  the same trial on the GPU",
                    "peak_mb": trial["gpu_peak_mb"],
                    "measure": "torch.cuda.max_memory_allocated",
                    "under_2_gb": verdict(trial["gpu_peak_mb"]),
                }
            )
    if search is not None:
        split = search["peak_split_mb"]
        rows.append(
            {
                "what": "two-trial search (2 concurrent)",
                "peak_mb": search["peak_total_pss_mb"],
                "measure": "largest total PSS: " + ", ".join(f"{k} {v:.0f}" for k, v in split.items()),
                "under_2_gb": "-",
            }
        )
        for worker in search["workers"]:
            peak = worker["peak_rss_mb"]
            rows.append(
                {
                    "what": f"  worker {worker['name'][:32]}",
                    "peak_mb": peak,
                    "measure": "peak RSS (VmHWM) of that Ray worker",
                    "under_2_gb": verdict(peak),
                }
            )
    return rows


MEMORY_COLUMNS = (
    ("what", "what", "s"),
    ("peak_mb", "peak MB", ".0f"),
    ("under_2_gb", "< 2 GB", "s"),
    ("measure", "measured as", "s"),
)


def part_memory(state: BenchState) -> list[Table]:
    config = state.config
    arguments = {"task": LARGEST_TASK, "epochs": config.memory_epochs, "device": state.device.type}
    trial = _run_child("trial", arguments)
    search = _run_child("search", arguments) if sys.platform.startswith("linux") else None
    notes = (
        f"{LARGEST_TASK} fold 0, ltc_mhn at its defaults, {config.memory_epochs} epoch(s); each measured in a fresh "
        "process (imports, data, model, trainer)",
    )
    return [Table("memory", memory_rows(trial, search), MEMORY_COLUMNS, notes)]


# --------------------------------------------------------------------------- f. projection


@dataclass(frozen=True)
class CostModel:
    """Seconds of one epoch (neural) or one fit (baseline) as ``fixed + per_row * rows``."""

    fixed: float
    per_row: float
    factor: float = 1.0  # mean cost of a configuration of the search space against the default one

    def seconds(self, rows: float) -> float:
        return (self.fixed + self.per_row * rows) * self.factor


def asha_expected_epochs(max_epochs: int, grace_period: int, reduction_factor: float) -> float:
    """Mean epochs per trial under ASHA when a 1/η share of trials passes each rung (an upper
    bound: patience-based stops inside a fit are not counted)."""
    rungs, rung = [], grace_period
    while rung < max_epochs:
        rungs.append(rung)
        rung = rung * reduction_factor
    epochs, previous, share = 0.0, 0.0, 1.0
    for rung in [*rungs, max_epochs]:
        epochs += share * (rung - previous)
        previous, share = rung, share / reduction_factor
    return epochs


VARIANT_COST = {"ltc_mhn": "ltc_mhn", "zero_beta": "ltc_mhn", "fixed_beta": "ltc_mhn", "ltc": "ltc", "matched_ltc": "matched_ltc"}


def projection_rows(spec, costs: dict[str, CostModel], ray_overhead: float, tasks=None) -> tuple[list[dict], dict]:
    """CPU-hours of every model of ``spec`` over its tasks and folds, from per-epoch / per-fit costs.

    Neural searches: trials × (ASHA's expected epochs × epoch seconds + Ray's added seconds), plus a
    refit of ``max_epochs`` epochs on the outer training part. xgboost: its trials × one fit each,
    plus the refit. Other baselines: one fit per fold.
    """
    from hpo.tasks import get_task

    tasks = [get_task(name) for name in (tasks or spec.study.tasks)]
    study, training, search, scheduler = spec.study, spec.training, spec.search, spec.scheduler
    if scheduler.type == "asha":
        epochs_per_trial = asha_expected_epochs(training.max_epochs, scheduler.grace_period, scheduler.reduction_factor)
    else:
        epochs_per_trial = float(training.max_epochs)
    per_model: dict[str, float] = {}
    per_task: dict[str, float] = {}
    for task in tasks:
        outer_train = task.n_rows * (1 - 1 / task.folds)
        inner_train = outer_train * (1 - study.validation_fraction)
        for model_name in study.models:
            if model_name in VARIANT_COST:
                cost = costs[VARIANT_COST[model_name]]
                trial_seconds = epochs_per_trial * cost.seconds(inner_train) + ray_overhead
                seconds = search.trials * trial_seconds + training.max_epochs * cost.seconds(outer_train)
            elif model_name == "xgboost":
                cost = costs["xgboost"]
                seconds = search.xgboost_trials * (cost.seconds(inner_train) + ray_overhead) + cost.seconds(outer_train)
            else:
                seconds = costs[model_name].seconds(outer_train)
            seconds *= len(study.folds) * len(study.seeds) * spec.resources.cpu
            per_model[model_name] = per_model.get(model_name, 0.0) + seconds
            per_task[task.name] = per_task.get(task.name, 0.0) + seconds
    total = sum(per_model.values())
    rows = [
        {"model": name, "cpu_hours": seconds / 3600, "share": seconds / total if total else math.nan}
        for name, seconds in per_model.items()
    ]
    rows.append({"model": "total", "cpu_hours": total / 3600, "share": 1.0})
    extra = {
        "epochs_per_trial": epochs_per_trial,
        "largest_tasks": sorted(((name, s / 3600) for name, s in per_task.items()), key=lambda item: -item[1])[:5],
        "tasks": len(tasks),
    }
    return rows, extra


def _fit_cost_model(sizes: tuple[int, int], seconds: tuple[float, float], factor: float = 1.0) -> CostModel:
    (small, large), (t_small, t_large) = sizes, seconds
    per_row = max(0.0, (t_large - t_small) / (large - small))
    return CostModel(fixed=max(0.0, t_small - per_row * small), per_row=per_row, factor=factor)


def measure_costs(config: BenchConfig, device, seed: int = 0) -> tuple[dict[str, CostModel], list[dict]]:
    """Epoch seconds of the neural variants and fit seconds of the baselines at two table sizes,
    and the mean cost of random search-space configurations against the default one.

    Seconds are process CPU seconds (the projection is in CPU-hours, and other jobs sharing the
    machine do not inflate them), the least of a few repetitions.
    """
    import numpy as np
    import torch

    from model import make_model
    from model.bench import Table as DataTable, make_network, time_suite_epoch_both

    def epoch_seconds(variant: str, table, **params) -> float:
        torch.manual_seed(seed)
        network = make_network(variant, config.features, **params).to(device)
        time_suite_epoch_both(network, table)  # warm-up
        return min(time_suite_epoch_both(network, table, seed=i)[1] for i in range(3))

    sizes = config.projection_rows
    measured: list[dict] = []
    costs: dict[str, CostModel] = {}
    tables = [DataTable(rows, config.features, device) for rows in sizes]
    for variant in ("ltc_mhn", "ltc", "matched_ltc"):
        times = tuple(epoch_seconds(variant, table) for table in tables)
        factor = _space_factor(variant, config, tables[0], epoch_seconds, seed) if variant != "matched_ltc" else None
        costs[variant] = _fit_cost_model(sizes, times, factor if factor is not None else 1.0)
        measured.append({"model": variant, "unit": "epoch", "seconds_small": times[0], "seconds_large": times[1], "space_factor": factor})
    costs["matched_ltc"] = CostModel(costs["matched_ltc"].fixed, costs["matched_ltc"].per_row, costs["ltc"].factor)
    measured[-1]["space_factor"] = costs["ltc"].factor

    from hpo.space import XGBOOST_SPACE

    n_estimators = XGBOOST_SPACE["n_estimators"]
    xgboost_factor = (n_estimators.high - n_estimators.low) / math.log(n_estimators.high / n_estimators.low) / n_estimators.default
    sizes = config.baseline_rows
    for name in ("xgboost", "random_forest", "gam", "ridge", "tree"):
        times = []
        for rows in sizes:
            rng = np.random.default_rng(seed)
            X = rng.normal(size=(rows, config.features)).astype(np.float32)
            y = np.sin(X[:, 0]) + X[:, 1] ** 2 + 0.1 * rng.normal(size=rows)
            estimator = make_model(name, random_state=seed, n_jobs=1)
            started = time.process_time()
            estimator.fit(X, y)
            times.append(time.process_time() - started)
        factor = xgboost_factor if name == "xgboost" else 1.0
        costs[name] = _fit_cost_model(sizes, tuple(times), factor)
        measured.append({"model": name, "unit": "fit", "seconds_small": times[0], "seconds_large": times[1], "space_factor": factor})
    return costs, measured


def _space_factor(variant: str, config: BenchConfig, table, epoch_seconds, seed: int) -> float:
    """Mean epoch seconds of ``config.projection_configs`` random configurations of the search
    space (the same draws for every variant) over the default configuration's, on ``table``."""
    import optuna

    from hpo.space import default_point, suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {k: v for k, v in _space(variant).items() if k != "learning_rate"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    default = default_point(space)
    samples, defaults = [], [epoch_seconds(variant, table, **default)]
    for _ in range(config.projection_configs):
        trial = study.ask()
        params = suggest(trial, space)
        if "heads" in params and params["hidden_size"] % params["heads"]:
            params["heads"] = 1
        samples.append(epoch_seconds(variant, table, **params))
        study.tell(trial, 0.0)
    defaults.append(epoch_seconds(variant, table, **default))  # before and after: load drifts
    return statistics.mean(samples) / min(defaults)


PROJECTION_COLUMNS = (
    ("model", "model", "s"),
    ("cpu_hours", "CPU-hours", ".1f"),
    ("share", "share", ".1%"),
)
COST_COLUMNS = (
    ("model", "model", "s"),
    ("unit", "unit", "s"),
    ("seconds_small", "s (small table)", ".3f"),
    ("seconds_large", "s (large table)", ".3f"),
    ("space_factor", "space factor", ".2f"),
)


def part_projection(state: BenchState) -> list[Table]:
    from hpo.spec import load_spec

    config = state.config
    spec = load_spec(REPO_ROOT / "studies" / "ctr23.toml")
    costs, measured = measure_costs(config, state.device)
    overhead = state.ray_overhead_per_trial if state.ray_overhead_per_trial is not None else 1.0
    rows, extra = projection_rows(spec, costs, max(0.0, overhead))
    total = rows[-1]["cpu_hours"]
    cpus = os.cpu_count() or 1
    largest = ", ".join(f"{name} {hours:.0f}" for name, hours in extra["largest_tasks"])
    notes = (
        f"{extra['tasks']} tasks x {len(spec.study.folds)} folds x {len(spec.study.seeds)} seed(s); {spec.search.trials} trials per "
        f"neural search ({spec.search.xgboost_trials} for xgboost); ASHA (grace {spec.scheduler.grace_period}, "
        f"factor {spec.scheduler.reduction_factor:g}, max {spec.training.max_epochs}) -> {extra['epochs_per_trial']:.1f} "
        "expected epochs per trial (patience stops not counted); refit: max_epochs epochs",
        f"rows per fit from each task's size (outer training = 9/10, inner = 9/10 of that); Ray adds "
        f"{overhead:.2f} s per trial ({'part c' if state.ray_overhead_per_trial is not None else 'assumed'}); "
        "neural epoch time scaled by the space factor (random configurations / default)",
        f"on this machine ({cpus} CPUs, one trial per CPU): about {total / cpus:.0f} hours of wall-clock; "
        f"largest tasks (CPU-hours): {largest}",
    )
    measured_notes = (
        f"CPU seconds; neural: tables of {config.projection_rows[0]} and {config.projection_rows[1]} rows, baselines: "
        f"{config.baseline_rows[0]} and {config.baseline_rows[1]} rows, x {config.features} features; cost = fixed + "
        "per-row, fitted through both; xgboost's space factor = mean n_estimators of its space / 100",
    )
    return [
        Table("projection", rows, PROJECTION_COLUMNS, notes),
        Table("projection_inputs", measured, COST_COLUMNS, measured_notes),
    ]


# --------------------------------------------------------------------------- p. packing


def part_packing(state: BenchState) -> list[Table]:
    from model.bench import PACKING_COLUMNS, measure_packing

    config = state.config
    packed = 4 if state.device.type == "cuda" else max(1, os.cpu_count() or 1)
    rows = measure_packing(state.device, packed, n_rows=config.packing_rows, epochs=config.packing_epochs)
    if state.device.type == "cuda":
        share = rows[0].get("busy_share")
        explanation = (
            f"a lone trial keeps the GPU busy {share:.0%} of its epoch, so {packed} packed trials may each slow "
            f"down by up to max(1, {packed} x {share:.2f})" if share is not None else "GPU busy share not measured"
        )
    else:
        explanation = f"one process per core, 1 thread each: {packed} trials on {os.cpu_count()} CPUs need no slowdown"
    notes = (
        f"ltc_mhn, {config.packing_rows} rows, median of {config.packing_epochs} epochs per trial, one process per "
        "trial (its own CUDA stream on a GPU), all started together",
        explanation,
    )
    return [Table("packing", rows, PACKING_COLUMNS, notes)]


RUNNERS = {
    "a": part_throughput,
    "b": part_naive,
    "c": part_overhead,
    "d": part_asha,
    "e": part_memory,
    "f": part_projection,
    "p": part_packing,
}


if __name__ == "__main__":  # python -m hpo.bench also works; Ray must see hpo.bench, not __main__
    from hpo import bench as _bench

    parser = argparse.ArgumentParser(prog="python -m hpo.bench")
    _bench.register(parser.add_subparsers(dest="command", required=True))
    arguments = parser.parse_args(["bench", *sys.argv[1:]])
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(arguments.func(arguments))
