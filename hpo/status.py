"""Progress of a run per task and variant, readable while a driver runs it: items done, trials
done / failed / remaining, best validation RMSE, mean test RMSE and elapsed time.

Finished items come from results.parquet, the search in flight from its Optuna study. Reads
files only; never starts Ray.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from typing import Any

from hpo.plan import build_plan, trials_for
from hpo.rundir import RunDir


def _in_flight(storage, study_name: str) -> dict[str, Any]:
    """Trials finished / failed / running, best value and start time of a study (empty if none)."""
    from optuna.trial import TrialState

    from hpo.storage import find_study, is_interrupted

    study = find_study(storage, study_name)
    info = {"finished": 0, "failed": 0, "running": 0, "best": math.nan, "started": None}
    if study is None:
        return info
    for trial in study.get_trials(deepcopy=False):
        if trial.datetime_start and (info["started"] is None or trial.datetime_start < info["started"]):
            info["started"] = trial.datetime_start
        if trial.state == TrialState.RUNNING:
            info["running"] += 1
        elif trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) and not is_interrupted(trial):
            info["finished"] += 1
            info["failed"] += trial.state == TrialState.FAIL
            values = [trial.value] if trial.state == TrialState.COMPLETE else list(trial.intermediate_values.values())
            for value in values:
                if value is not None and math.isfinite(value):
                    info["best"] = value if math.isnan(info["best"]) else min(info["best"], value)
    return info


def status_rows(run_dir: RunDir) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row per (task, variant) in plan order, and run-level facts."""
    from hpo.spec import load_spec
    from hpo.storage import open_storage
    from hpo.sweep import study_name_for

    spec = load_spec(run_dir.spec_file)
    plan = build_plan(spec)
    results = run_dir.read_results()
    by_key = {}
    for record in results.to_dict("records"):
        key = (
            record["task"],
            record["variant"],
            int(record["fold"]),
            int(record["seed"]),
            record["study"],
            record["oat_param"] if isinstance(record["oat_param"], str) else None,
            None if record["oat_value"] is None or math.isnan(record["oat_value"]) else round(float(record["oat_value"]), 12),
        )
        by_key[key] = record
    storage = None
    if spec.search.storage or run_dir.journal_file.exists():
        try:
            storage = open_storage(spec.search.storage, run_dir.journal_file)
        except Exception:  # an unreachable database must not break the status table
            storage = None
    now = _dt.datetime.now()
    running = run_dir.is_running()
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    totals = {"items": len(plan), "done": 0, "failed": 0}
    for item in plan:
        label = item.variant if item.kind != "one_at_a_time" else f"{item.variant} ({item.oat_param} 1-at-a-time)"
        row = rows.setdefault(
            (item.task, label),
            {
                "task": item.task,
                "variant": label,
                "items": 0,
                "items_done": 0,
                "items_failed": 0,
                "trials_done": 0,
                "trials_failed": 0,
                "trials_remaining": 0,
                "running": 0,
                "best_val_rmse": math.nan,
                "test_rmse": [],
                "seconds": 0.0,
            },
        )
        row["items"] += 1
        planned = trials_for(spec, item)
        record = by_key.get(item.key)
        if record is not None:
            totals["done"] += 1
            row["items_done"] += 1
            failed = record["status"] != "ok"
            row["items_failed"] += failed
            totals["failed"] += failed
            row["trials_done"] += int(record["n_trials"] or 0)
            row["trials_failed"] += int(record["n_failed_trials"] or 0)
            row["seconds"] += float(record.get("search_seconds") or 0.0) + _finite(record.get("fit_seconds"))
            if not failed:
                row["test_rmse"].append(float(record["rmse"]))
            value = record.get("best_val_rmse")
            if item.kind == "search" and value is not None and math.isfinite(value):
                row["best_val_rmse"] = _min(row["best_val_rmse"], value)
            continue
        if item.kind == "search" and storage is not None:
            info = _in_flight(storage, study_name_for(spec, run_dir, item))
            row["trials_done"] += info["finished"]
            row["trials_failed"] += info["failed"]
            row["running"] += info["running"] if running else 0  # else stale: resume re-runs them
            row["trials_remaining"] += max(0, planned - info["finished"])
            row["best_val_rmse"] = _min(row["best_val_rmse"], info["best"])
            if info["started"] is not None and running:
                row["seconds"] += max(0.0, (now - info["started"]).total_seconds())
        else:
            row["trials_remaining"] += planned
    facts = _run_facts(run_dir)
    facts.update(totals)
    return list(rows.values()), facts


def _finite(value: Any) -> float:
    return float(value) if value is not None and math.isfinite(value) else 0.0


def _min(current: float, value: float) -> float:
    if value is None or not math.isfinite(value):
        return current
    return value if math.isnan(current) else min(current, value)


def _run_facts(run_dir: RunDir) -> dict[str, Any]:
    facts: dict[str, Any] = {"running": run_dir.is_running(), "started": None, "finished": None, "holder": None}
    if run_dir.provenance_file.exists():
        try:
            provenance = json.loads(run_dir.provenance_file.read_text())
        except json.JSONDecodeError:
            provenance = {}
        facts["started"] = provenance.get("started")
        sessions = provenance.get("sessions") or []
        if sessions:
            facts["finished"] = sessions[-1].get("finished")
    if facts["running"] and run_dir.lock_file.exists():
        facts["holder"] = run_dir.lock_file.read_text().strip() or None
    return facts


def _fmt_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _fmt(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"


def render_status(run_dir: RunDir) -> str:
    """The status table as text."""
    rows, facts = status_rows(run_dir)
    if facts["running"]:
        state = "running" + (f" ({facts['holder']})" if facts["holder"] else "")
    elif facts["done"] == facts["items"]:
        state = "finished"
    else:
        state = "stopped (continue with: python -m hpo resume " + str(run_dir.root) + ")"
    header = [
        f"Run {run_dir.name}: {state}",
        f"started {facts['started'] or '-'}"
        + (f", last session ended {facts['finished']}" if facts["finished"] and not facts["running"] else ""),
        f"items: {facts['done']} of {facts['items']} done ({facts['failed']} failed)",
        "",
    ]
    columns = ["task", "variant", "items", "trials done", "failed", "remaining", "running", "best val RMSE", "test RMSE", "elapsed"]
    table = []
    for row in rows:
        test = row["test_rmse"]
        table.append(
            [
                row["task"],
                row["variant"],
                f"{row['items_done']}/{row['items']}" + (f" ({row['items_failed']} failed)" if row["items_failed"] else ""),
                str(row["trials_done"]),
                str(row["trials_failed"]),
                str(row["trials_remaining"]),
                str(row["running"]),
                _fmt(row["best_val_rmse"]),
                _fmt(sum(test) / len(test)) if test else "-",
                _fmt_seconds(row["seconds"]),
            ]
        )
    widths = [max(len(columns[i]), *(len(r[i]) for r in table)) if table else len(columns[i]) for i in range(len(columns))]
    right = set(range(2, len(columns)))

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    body = [line(columns), line(["-" * w for w in widths])] + [line(r) for r in table]
    return "\n".join(header + body)
