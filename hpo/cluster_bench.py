"""``python -m hpo.cluster_bench``: what a two-node cluster costs against one node, same spec.

Runs one study spec (default: studies/smoke.toml with two trials at a time) four ways, one after
the other on this machine, and prints a table:

  single node    a local Ray started by the driver with ``--num-cpus`` (2)     journal file
  single node    the same                                                    PostgreSQL
  two nodes      ``ray start`` head + worker on loopback, half the CPUs each   journal file
  two nodes      the same                                                    PostgreSQL

Columns (medians over ``--repeats`` interleaved runs): wall seconds of the driver process, seconds the plan took (the driver's own clock,
Ray's start-up excluded), the sum and median of the trials' seconds, trials per node. The
cluster's and PostgreSQL's start-up are not counted. On a shared machine the figures are noisy:
run it when the machine is otherwise idle, and read ratios rather than single numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hpo.loopback import LocalPostgres, LocalRayCluster
from hpo.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]


def _sweep(argv: list[str], env: dict[str, str], log: Path) -> tuple[int, float]:
    started = time.perf_counter()
    with open(log, "ab") as handle:
        code = subprocess.run(
            [sys.executable, "-m", "hpo", "sweep", *argv], cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT
        ).returncode
    return code, time.perf_counter() - started


def _row(label: str, storage: str, code: int, wall: float, run: RunDir, node_names: dict[str, str]) -> dict:
    provenance = json.loads(run.provenance_file.read_text())
    plan_seconds = provenance["sessions"][-1].get("summary", {}).get("seconds", float("nan"))
    trials = run.read_trials()
    seconds = [float(s) for s in trials["seconds"].dropna()]
    per_node: dict[str, int] = {}
    for node_id in trials["node_id"].dropna():
        per_node[node_names.get(node_id, node_id[:8])] = per_node.get(node_names.get(node_id, node_id[:8]), 0) + 1
    return {
        "setting": label,
        "storage": storage,
        "exit": code,
        "wall_s": wall,
        "plan_s": plan_seconds,
        "trials": len(trials),
        "trial_s_sum": sum(seconds),
        "trial_s_median": statistics.median(seconds) if seconds else float("nan"),
        "per_node": ", ".join(f"{name} {count}" for name, count in sorted(per_node.items())),
    }


def _medians(rows: list[dict]) -> list[dict]:
    """One row per (setting, storage): medians of the numbers over repeats, the worst exit code."""
    merged: dict[tuple, list[dict]] = {}
    for row in rows:
        merged.setdefault((row["setting"], row["storage"]), []).append(row)
    out = []
    for group in merged.values():
        row = dict(group[-1])
        for key in ("wall_s", "plan_s", "trial_s_sum", "trial_s_median"):
            row[key] = statistics.median(r[key] for r in group)
        row["exit"] = max(r["exit"] for r in group)
        row["repeats"] = len(group)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpo.cluster_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=REPO / "studies" / "smoke.toml")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs in all: the single node has them all, each of two nodes half")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--no-postgres", action="store_true", help="only the journal-file runs")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each setting, interleaved; the table shows medians")
    args = parser.parse_args(argv)
    if args.cpus < 2 or args.cpus % 2:
        parser.error("--cpus must be an even number ≥ 2")
    sets = [f"search.max_concurrent_trials={args.cpus}", *args.overrides]
    root = Path(tempfile.mkdtemp(prefix="hb", dir="/tmp"))
    runs = root / "runs"
    runs.mkdir()
    common = [str(args.spec), "--runs-dir", str(runs), "-q"] + [part for item in sets for part in ("--set", item)]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    rows = []
    postgres = None if args.no_postgres else LocalPostgres.start()
    storages = [("journal", [])] + ([("postgresql", ["--storage", postgres.url])] if postgres else [])
    try:
        for repeat in range(1, args.repeats + 1):
            for storage, extra in storages:
                name = f"single-{storage}-{repeat}"
                code, wall = _sweep(common + ["--name", name, "--num-cpus", str(args.cpus)] + extra, env, root / f"{name}.log")
                run = RunDir(runs / name)
                local = {node_id: "local" for node_id in run.read_trials()["node_id"].dropna()}
                rows.append(_row("single node", storage, code, wall, run, local))
                print(f"  {name}: {wall:.0f} s (exit {code})", flush=True)
            cluster_root = root / f"ray{repeat}"
            cluster_root.mkdir()
            cluster = LocalRayCluster(cluster_root)  # up only for the two-node runs
            try:
                cluster.start_head(cpus=args.cpus // 2)
                cluster.add_worker(cpus=args.cpus // 2)
                cluster.wait_for_nodes()
                names = {node.node_id: node.name for node in cluster.nodes}
                for storage, extra in storages:
                    name = f"two-{storage}-{repeat}"
                    argv = common + ["--name", name, "--address", cluster.address] + extra
                    code, wall = _sweep(argv, cluster.env, root / f"{name}.log")
                    rows.append(_row("two nodes", storage, code, wall, RunDir(runs / name), names))
                    print(f"  {name}: {wall:.0f} s (exit {code})", flush=True)
            finally:
                cluster.stop()
    finally:
        if postgres is not None:
            postgres.stop()
    rows = _medians(rows)
    base = {row["storage"]: row for row in rows if row["setting"] == "single node"}
    load = os.getloadavg()[1]
    print(
        f"\nspec {args.spec.name} ({', '.join(sets)}), {args.cpus} CPUs in all, {os.cpu_count()} cores on this "
        f"machine (5-minute load average at the end: {load:.1f}); medians of {args.repeats} run(s) each\n"
    )
    print("| setting | storage | wall s | plan s | vs single node | trials | trial s (sum / median) | trials per node |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        ratio = row["plan_s"] / base[row["storage"]]["plan_s"] if row["storage"] in base else float("nan")
        print(
            f"| {row['setting']} | {row['storage']} | {row['wall_s']:.0f} | {row['plan_s']:.0f} | {ratio:.2f}× | "
            f"{row['trials']} | {row['trial_s_sum']:.0f} / {row['trial_s_median']:.1f} | {row['per_node'] or '—'} |"
        )
    failed = [row for row in rows if row["exit"] != 0]
    if failed:
        print(f"\nsome runs did not exit 0; their logs are in {root}")
        return 1
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
