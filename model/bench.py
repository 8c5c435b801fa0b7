"""Training throughput benchmark (a program, not a test): ``python -m model.bench``.

Trains ``ltc``, ``ltc_mhn``, ``matched_ltc`` and a plain MLP of the same width with the suite's
trainer on a synthetic table (default 20 000 rows, 8 features, default hyperparameters, batch
size 256, 10 % validation) and prints rows per second. The first epoch is a warm-up and is not
timed; an epoch's time includes its validation pass.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from torch import nn

from .network import NETWORK_DEFAULTS, build_network
from .trainer import resolve_device, torch_threads, train_network

BENCH_MODELS = ("ltc", "ltc_mhn", "matched_ltc", "mlp")


class MLPNetwork(nn.Module):
    """Reference without dynamics or memory: Linear(d → n) → ReLU → Linear(n → n) → ReLU → Linear(n → 1)."""

    def __init__(self, n_features: int, hidden_size: int = 64) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(n_features, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, 1),
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.layers(inputs).squeeze(-1)


def synthetic_table(n_rows: int, n_features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal features and a standardised nonlinear target."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_features)).astype(np.float32)
    y = np.sin(2 * X[:, 0]) + X[:, 1] ** 2 - X[:, 2] * X[:, 3 % n_features] + 0.5 * X[:, -1]
    y = (y - y.mean()) / y.std()
    return X, y.astype(np.float32)


def make_network(name: str, n_features: int) -> nn.Module:
    if name == "mlp":
        return MLPNetwork(n_features, NETWORK_DEFAULTS["hidden_size"])
    return build_network(name, n_features)


def measure(name: str, X: np.ndarray, y: np.ndarray, epochs: int, device: torch.device, seed: int = 0) -> dict:
    """Train ``name`` for ``epochs`` epochs; time every epoch after the first."""
    torch.manual_seed(seed)
    network = make_network(name, X.shape[1]).to(device)
    n_val = len(X) // 10
    tensors = [torch.as_tensor(part, device=device) for part in (X[n_val:], y[n_val:], X[:n_val], y[:n_val])]
    stamps: list[float] = []
    start = time.perf_counter()
    train_network(network, *tensors, max_epochs=epochs, patience=None, seed=seed,
                  epoch_callback=lambda record: stamps.append(time.perf_counter()))
    timed = np.diff([start, *stamps])[1:]  # drop the warm-up epoch
    seconds = float(np.median(timed))
    width = getattr(network, "hidden_size", NETWORK_DEFAULTS["hidden_size"])
    return {
        "model": name,
        "width": width,
        "parameters": sum(p.numel() for p in network.parameters()),
        "seconds_per_epoch": seconds,
        "rows_per_second": (len(X) - n_val) / seconds,
    }


def format_table(rows: list[dict]) -> str:
    reference = next((row["seconds_per_epoch"] for row in rows if row["model"] == "ltc"), None)
    lines = [
        f"{'model':<12} {'width':>5} {'parameters':>10} {'s/epoch':>8} {'rows/s':>9} {'epoch vs ltc':>12}",
        "-" * 61,
    ]
    for row in rows:
        ratio = f"{row['seconds_per_epoch'] / reference:.2f}x" if reference else "-"
        lines.append(
            f"{row['model']:<12} {row['width']:>5} {row['parameters']:>10} {row['seconds_per_epoch']:>8.3f} "
            f"{row['rows_per_second']:>9.0f} {ratio:>12}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the synthetic table (default 20000)")
    parser.add_argument("--features", type=int, default=8, help="number of features (default 8)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per model, the first untimed (default 4)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--models", nargs="+", default=list(BENCH_MODELS), choices=BENCH_MODELS)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is not timed)")

    device = resolve_device(args.device)
    X, y = synthetic_table(args.rows, args.features)
    with torch_threads(args.threads):
        print(
            f"torch {torch.__version__} on {device} ({platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
            f"load average {os.getloadavg()[0]:.1f}); {args.rows} rows x {args.features} features, "
            f"batch 256, {args.epochs - 1} timed epochs (median)"
        )
        rows = [measure(name, X, y, args.epochs, device) for name in args.models]
    print(format_table(rows))
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if device.type == "cpu" and load > cpus:
        print(f"note: load average {load:.1f} exceeds the {cpus} CPUs; other processes shared the cores, "
              "so these numbers understate the machine (threads > 1 suffer most)")


if __name__ == "__main__":
    main()
