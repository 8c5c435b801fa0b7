"""The benchmark's command line and table-making functions on tiny configurations.

No timing is asserted anywhere: only that rows are complete and consistent, and that the naive
reference computes the same network as the suite.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import model
from hpo import bench
from model import bench as model_bench
from model import native
from model.trainer import COMPILE_ENVIRONMENT_VARIABLE, compile_from_environment, resolve_compile, train_network

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_bench_help_lists_quick_and_parts():
    result = subprocess.run(
        [sys.executable, "-m", "hpo", "bench", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout and "--parts" in result.stdout and "--device" in result.stdout


def test_bench_refuses_an_unknown_part():
    result = subprocess.run(
        [sys.executable, "-m", "hpo", "bench", "--parts", "z"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "invalid choice" in result.stderr


@pytest.mark.parametrize("variant", ["ltc_mhn", "ltc", "fixed_beta"])
@pytest.mark.parametrize("feedback", [True, False])
def test_naive_reference_computes_the_same_network(variant, feedback):
    torch.manual_seed(0)
    network = model.build_network(variant, 5, hidden_size=16, heads=4, hopfield_size=8, feedback=feedback, unfolds=3)
    network = network.double()
    u = torch.randn(7, 5, dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_allclose(
            model_bench.NaiveReference(network)(u).numpy(), network(u).numpy(), rtol=1e-10, atol=1e-12
        )


def test_throughput_rows_on_a_tiny_table():
    table = model_bench.Table(300, 4, torch.device("cpu"))
    rows = model_bench.measure_throughput(table, repeats=1, peak_gflops=50.0, settings={"hidden_size": 8, "unfolds": 2})
    assert [row["model"] for row in rows] == list(model_bench.BENCH_MODELS)
    for row in rows:
        assert row["seconds_per_epoch"] > 0 and row["rows_per_second"] > 0
        assert row["gflop_per_epoch"] > 0 and row["gflops"] > 0
        assert row["peak_share"] == pytest.approx(row["gflops"] / 50.0)
    by_model = {row["model"]: row for row in rows}
    assert by_model["ltc"]["epoch_vs_ltc"] == 1.0
    # the memory adds matrix products, the matched width adds more: FLOPs per epoch are ordered
    assert by_model["ltc"]["gflop_per_epoch"] < by_model["ltc_mhn"]["gflop_per_epoch"]
    assert by_model["matched_ltc"]["width"] > by_model["ltc"]["width"] == 8
    text = model_bench.format_table(rows, model_bench.THROUGHPUT_COLUMNS)
    lines = text.splitlines()
    assert lines[0].startswith("model") and len(lines) == 2 + len(rows)
    assert all(line.rstrip().endswith("x") for line in lines[2:])


def test_kernel_comparison_rows_on_a_tiny_table():
    table = model_bench.Table(300, 4, torch.device("cpu"))
    rows = model_bench.measure_kernels(table, repeats=1)
    assert [row["model"] for row in rows] == ["ltc", "ltc_mhn"]
    builds = model_bench.kernel_builds(table.device)
    assert builds[:2] == ("reference", "python") and (("native" in builds) == native.available())
    for row in rows:
        assert row["fused_build"] == builds[-1]
        assert row["fused_seconds_per_epoch"] == row[f"{builds[-1]}_seconds_per_epoch"]
        assert row["python_seconds_per_epoch"] > 0
        assert row["speedup"] == pytest.approx(row["reference_seconds_per_epoch"] / row["fused_seconds_per_epoch"])
        assert row["speedup_cpu"] > 0


def test_native_switch_is_scoped(monkeypatch):
    monkeypatch.delenv(native.NATIVE_ENVIRONMENT_VARIABLE, raising=False)
    with native.switched_off():
        assert not native.enabled() and native.load() is None
    assert native.enabled() and native.NATIVE_ENVIRONMENT_VARIABLE not in os.environ
    monkeypatch.setenv(native.NATIVE_ENVIRONMENT_VARIABLE, "off")
    with native.switched_off():
        assert not native.enabled()
    assert os.environ[native.NATIVE_ENVIRONMENT_VARIABLE] == "off"


def test_sweep_says_when_it_builds_the_kernel(monkeypatch):
    from hpo.sweep import prepare_solver_kernel

    said = []
    monkeypatch.setattr(native, "is_built", lambda: True)
    assert prepare_solver_kernel(said.append) == native.describe() and said == []
    monkeypatch.setattr(native, "is_built", lambda: False)
    prepare_solver_kernel(said.append)
    assert len(said) == 1 and "once per machine" in said[0]
    monkeypatch.setenv(native.NATIVE_ENVIRONMENT_VARIABLE, "0")
    assert prepare_solver_kernel(said.append).startswith("python") and len(said) == 1


def test_epoch_flops_match_a_hand_count_for_the_mlp():
    table = model_bench.Table(256, 4, torch.device("cpu"), n_val=10)
    network = model_bench.MLPNetwork(4, hidden_size=8)
    # forward per row: 4·8 + 8·8 + 8·1 multiply-adds; backward twice that, except the input gradient
    # of the first layer (not needed): FLOPs = 2 · (3·fwd − 4·8) per training row, 2 · fwd per validation row
    forward = 4 * 8 + 8 * 8 + 8
    expected = 256 * 2 * (3 * forward - 4 * 8) + 10 * 2 * forward
    assert model_bench.epoch_flops(network, table) == expected


@pytest.mark.parametrize("variant", ["ltc", "ltc_mhn"])
def test_epoch_flops_count_the_products_of_the_default_build(variant):
    """The C++ kernel hands its products to BLAS, out of FlopCounterMode's sight: the count must
    still match the plain autograd loop's (the same products, within the fused kernel's own
    bookkeeping of about 1 %)."""
    table = model_bench.Table(512, 5, torch.device("cpu"), n_val=20)
    torch.manual_seed(0)
    network = model_bench.make_network(variant, 5)
    fused = model_bench.epoch_flops(network, table)
    network.kernel = "reference"
    assert fused == pytest.approx(model_bench.epoch_flops(network, table), rel=0.02)


def test_naive_comparison_rows_on_a_tiny_table():
    table = model_bench.Table(200, 4, torch.device("cpu"))
    rows = model_bench.compare_with_naive(table, models=("ltc_mhn", "mlp"), epochs=1, repeats=1)
    assert [row["model"] for row in rows] == ["ltc_mhn", "mlp"]
    for row in rows:
        assert row["speedup"] == pytest.approx(row["naive_seconds_per_epoch"] / row["suite_seconds_per_epoch"])
        assert math.isfinite(row["suite_val_rmse"]) and math.isfinite(row["naive_val_rmse"])


def test_packed_worker_times_its_epochs_in_process():
    import queue
    import threading

    results = queue.Queue()
    barrier = threading.Barrier(1)
    model_bench._packed_worker(0, "cpu", 128, 3, 2, "ltc_mhn", barrier, results, False)
    outcome = results.get_nowait()
    assert outcome["rank"] == 0 and len(outcome["seconds"]) == 2 and min(outcome["seconds"]) > 0
    assert outcome["busy_seconds"] is None  # measured on a GPU only


def test_packing_rows_from_per_trial_times(monkeypatch):
    def fake_run_packed(n_trials, device, n_rows, n_features, epochs, model):
        seconds = 1.0 if n_trials == 1 else 1.5
        return {
            "trials": n_trials, "seconds_per_epoch": seconds, "rows_per_second_per_trial": n_rows / seconds,
            "rows_per_second_total": n_trials * n_rows / seconds, "busy_seconds_per_epoch": None,
        }

    monkeypatch.setattr(model_bench, "run_packed", fake_run_packed)
    rows = model_bench.measure_packing(torch.device("cpu"), packed=2, n_rows=100, epochs=1)
    assert [row["trials"] for row in rows] == [1, 2]
    assert rows[0]["slowdown"] == 1.0 and rows[1]["slowdown"] == pytest.approx(1.5)
    assert rows[1]["explained_slowdown"] == pytest.approx(max(1.0, 2 / (os.cpu_count() or 1)))
    assert len(model_bench.format_table(rows, model_bench.PACKING_COLUMNS).splitlines()) == 4


def test_asha_expected_epochs_by_hand():
    # grace 10, factor 3, max 200: all trials run 10 epochs, 1/3 reach 30, 1/9 reach 90, 1/27 reach 200
    expected = 10 + (30 - 10) / 3 + (90 - 30) / 9 + (200 - 90) / 27
    assert bench.asha_expected_epochs(200, 10, 3) == pytest.approx(expected)
    assert bench.asha_expected_epochs(9, 1, 3) == pytest.approx(1 + 2 / 3 + 6 / 9)
    assert bench.asha_expected_epochs(5, 5, 3) == pytest.approx(5)


def test_projection_of_a_one_task_spec_by_hand():
    from hpo.spec import parse_spec

    spec = parse_spec(
        {
            "study": {"name": "p", "tasks": ["concrete_compressive_strength"], "variants": ["ltc_mhn", "ltc"],
                      "baselines": ["xgboost", "ridge"], "folds": 2},
            "search": {"trials": 10, "xgboost_trials": 20},
            "scheduler": {"type": "fifo"},
            "training": {"max_epochs": 4, "patience": 2},
        }
    )
    costs = {
        "ltc_mhn": bench.CostModel(fixed=1.0, per_row=0.0),
        "ltc": bench.CostModel(fixed=0.0, per_row=0.001, factor=2.0),
        "matched_ltc": bench.CostModel(fixed=1.0, per_row=0.0),
        "xgboost": bench.CostModel(fixed=0.5, per_row=0.0),
        "ridge": bench.CostModel(fixed=3.0, per_row=0.0),
    }
    rows, extra = bench.projection_rows(spec, costs, ray_overhead=0.5)
    by_model = {row["model"]: row["cpu_hours"] * 3600 for row in rows}
    outer = 1030 * 0.9  # concrete: 1030 rows, 10 outer folds
    inner = outer * 0.9
    assert extra["epochs_per_trial"] == 4  # FIFO: every trial runs max_epochs
    assert by_model["ltc_mhn"] == pytest.approx(2 * (10 * (4 * 1.0 + 0.5) + 4 * 1.0))
    assert by_model["ltc"] == pytest.approx(2 * (10 * (4 * 0.002 * inner + 0.5) + 4 * 0.002 * outer))
    assert by_model["xgboost"] == pytest.approx(2 * (20 * (0.5 + 0.5) + 0.5))
    assert by_model["ridge"] == pytest.approx(2 * 3.0)
    assert by_model["total"] == pytest.approx(sum(v for k, v in by_model.items() if k != "total"))
    assert extra["largest_tasks"][0][0] == "concrete_compressive_strength"


def test_row_builders_for_search_parts():
    overhead = bench.overhead_rows(
        [{"objective": "trivial", "reuse_actors": True, "trials": 4, "ray_seconds": 6.0, "optuna_seconds": 2.0}]
    )
    assert overhead[0]["added_seconds_per_trial"] == pytest.approx(1.0)
    asha = bench.asha_rows(
        [{"task": "t", "trials": 6, "fifo_best": 2.0, "asha_best": 2.02, "fifo_epochs": 60, "asha_epochs": 24, "asha_pruned": 4}]
    )
    assert asha[0]["rmse_ratio"] == pytest.approx(1.01) and asha[0]["epoch_ratio"] == pytest.approx(0.4)
    seeded = bench.asha_rows(
        [
            {"task": "t", "seed": seed, "trials": 6, "fifo_best": 2.0, "asha_best": best, "fifo_epochs": 60,
             "asha_epochs": epochs, "asha_pruned": 4}
            for seed, best, epochs in [(0, 2.2, 20), (1, 1.9, 30), (2, 2.02, 40)]
        ]
    )
    assert [row["seed"] for row in seeded] == ["0", "1", "2", "median"]
    assert seeded[-1]["rmse_ratio"] == pytest.approx(1.01)  # the median of 1.1, 0.95, 1.01
    assert seeded[-1]["epoch_ratio"] == pytest.approx(90 / 180) and seeded[-1]["asha_pruned"] == 12
    assert "fifo_best_val_rmse" not in seeded[-1]
    memory = bench.memory_rows(
        {"peak_rss_mb": 600.0, "rows": 10, "features": 3, "gpu_peak_mb": None},
        {"peak_total_pss_mb": 1500.0, "peak_split_mb": {"driver": 500.0}, "workers": [{"name": "ray::a", "peak_rss_mb": 3000.0}]},
    )
    assert [row["under_2_gb"] for row in memory] == ["yes", "-", "NO"]
    for rows, columns in [(overhead, bench.OVERHEAD_COLUMNS), (asha, bench.ASHA_COLUMNS), (memory, bench.MEMORY_COLUMNS)]:
        assert len(model_bench.format_table(rows, columns).splitlines()) == 2 + len(rows)


def test_process_tree_sampler_sees_this_process():
    sampler = bench.ProcessTreeSampler(os.getpid())
    sampler.sample()
    summary = sampler.summary()
    if not Path(f"/proc/{os.getpid()}/smaps_rollup").exists():
        pytest.skip("no /proc/<pid>/smaps_rollup on this system")
    assert summary["peak_total_pss_mb"] > 10 and summary["peak_split_mb"]["driver"] > 10


def test_compile_setting_is_checked(monkeypatch):
    assert resolve_compile(False) is None and resolve_compile(True) == "default"
    assert resolve_compile("reduce-overhead") == "reduce-overhead"
    with pytest.raises(ValueError, match="compile"):
        resolve_compile("fast")
    monkeypatch.setenv(COMPILE_ENVIRONMENT_VARIABLE, "0")
    assert compile_from_environment() is None
    monkeypatch.setenv(COMPILE_ENVIRONMENT_VARIABLE, "max-autotune-no-cudagraphs")
    assert compile_from_environment() == "max-autotune-no-cudagraphs"
    monkeypatch.setenv(COMPILE_ENVIRONMENT_VARIABLE, "sometimes")
    with pytest.raises(ValueError, match=COMPILE_ENVIRONMENT_VARIABLE):
        compile_from_environment()
    with pytest.raises(ValueError, match="LIQUID_MEMORY_COMPILE"):
        model.LiquidHopfieldRegressor(max_epochs=1).fit(np.zeros((10, 2)), np.arange(10.0))
    X = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="compile"):
        train_network(torch.nn.Linear(2, 1), X, X[:, 0], X, X[:, 0], compile="fast")
