"""Sub-commands of ``python -m hpo`` for searching: tune, sweep, resume, status.

``hpo.__main__`` calls :func:`register`; each handler returns an exit code: 0 success, 1 some work
failed (the summary says how much), 2 usage error (a one-line message naming the problem).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from hpo.spec import SpecError

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE_SPEC = "smoke.toml"


def studies_dir() -> Path:
    """``studies/`` of this checkout, or of the working directory for an installed package."""
    here = REPO_ROOT / "studies"
    return here if here.is_dir() else Path.cwd() / "studies"


def default_runs_dir() -> Path:
    return studies_dir() / "runs"


# --------------------------------------------------------------------------- parser


def _add_ray_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray")
    group.add_argument("--address", help="join an existing Ray cluster (e.g. ray://host:10001 or host:6379)")
    group.add_argument(
        "--dashboard",
        action="store_true",
        help="start Ray's dashboard on 127.0.0.1 (token auth on; prints its address and how to log in)",
    )
    group.add_argument(
        "--dashboard-host",
        metavar="HOST",
        help="address the dashboard listens on instead of 127.0.0.1, e.g. 0.0.0.0 (implies --dashboard)",
    )
    group.add_argument(
        "--no-dashboard-auth",
        dest="dashboard_auth",
        action="store_false",
        help="turn Ray's token authentication off (RAY_AUTH_MODE=disabled): anyone reaching Ray or its "
        "dashboard can run code as you; prints a warning",
    )
    group.add_argument("--num-cpus", type=int, help="CPUs of a local Ray instance (default: all)")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="count", default=1, help="-v adds Ray Tune's own progress tables"
    )
    verbosity.add_argument("-q", "--quiet", action="store_true", help="only one line per finished item")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="run name (default: <study name>-<timestamp>)")
    parser.add_argument("--runs-dir", type=Path, help="where run directories go (default: studies/runs)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a spec key, e.g. --set search.trials=4 (repeatable; TOML values)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add tune, sweep, resume and status to ``python -m hpo``."""
    tune = subparsers.add_parser(
        "tune",
        help="search one task (flags override the defaults)",
        description="Search one task: for each outer fold, search on its training part, refit the best "
        "configuration, score on its test part.",
    )
    tune.add_argument("--task", required=True, help="CTR23 task name or OpenML task id")
    tune.add_argument("--variant", default="ltc_mhn", help="variant or baseline (default: ltc_mhn)")
    tune.add_argument("--spec", type=Path, help="start from this study spec instead of the built-in defaults")
    tune.add_argument("--trials", type=int, help="trials per search")
    tune.add_argument("--folds", type=int, help="outer folds 0..K-1")
    tune.add_argument("--seeds", type=int, nargs="+", help="seeds")
    tune.add_argument("--epochs", type=int, help="maximum epochs per fit")
    tune.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    tune.add_argument("--cpu", type=float, help="CPUs per trial")
    tune.add_argument("--gpu", help='GPUs per trial: a number such as 0.25, or "auto"')
    tune.add_argument("--concurrency", type=int, help="most trials at once (0: as resources allow)")
    tune.add_argument("--storage", help="Optuna storage URL (default: the run's optuna.journal)")
    _add_run_options(tune)
    _add_ray_options(tune)
    tune.set_defaults(func=handle_tune)

    sweep = subparsers.add_parser(
        "sweep",
        help="run every task × variant × fold × seed of a study spec",
        description="Run a study spec (studies/*.toml): every task × model × outer fold × seed, baselines included.",
    )
    sweep.add_argument("spec", type=Path, help="study spec, e.g. studies/smoke.toml")
    sweep.add_argument(
        "--storage",
        metavar="URL",
        help="keep the Optuna studies in this database instead of the run's optuna.journal, e.g. "
        "postgresql://user:password@host:5432/db (sets search.storage; the password is never written)",
    )
    _add_run_options(sweep)
    _add_ray_options(sweep)
    sweep.set_defaults(func=handle_sweep)

    resume = subparsers.add_parser(
        "resume",
        help="continue an interrupted run",
        description="Continue a run: finished items and trials are kept, stale running trials are marked failed.",
    )
    resume.add_argument("run_dir", type=Path, help="the run directory, e.g. studies/runs/smoke-20250101-120000")
    resume.add_argument(
        "--storage",
        metavar="URL",
        help="the run's storage URL with its password (spec.toml keeps it masked); same database only",
    )
    _add_ray_options(resume)
    resume.set_defaults(func=handle_resume)

    status = subparsers.add_parser(
        "status",
        help="progress of a run per task and variant (works while it runs)",
        description="Trials done / failed / remaining, best validation RMSE and elapsed time per task and variant.",
    )
    status.add_argument("run_dir", type=Path, help="the run directory")
    status.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until interrupted")
    status.set_defaults(func=handle_status)


# --------------------------------------------------------------------------- handlers


def _usage_error(message: str) -> int:
    from hpo.spec import one_line

    print(one_line(f"error: {message}"), file=sys.stderr)
    return 2


def _verbosity(args: argparse.Namespace) -> int:
    return 0 if getattr(args, "quiet", False) else int(getattr(args, "verbose", 1))


def _check_ray_options(args: argparse.Namespace) -> None:
    """Refuse Ray options that cannot work, before anything starts."""
    if args.num_cpus is not None and args.num_cpus < 1:
        raise SpecError(f"--num-cpus must be ≥ 1; got {args.num_cpus}")
    host = args.dashboard_host
    if host is not None and (not host.strip() or any(c.isspace() or not c.isprintable() for c in host)):
        raise SpecError(f"--dashboard-host must be a host name or address such as 0.0.0.0; got {host!r}")


def _run(spec, run_dir, args: argparse.Namespace, resume: bool) -> int:
    from hpo.cluster import ResourceError
    from hpo.rundir import RunLockedError
    from hpo.storage import StorageError, redact_text
    from hpo.sweep import RunExistsError, run

    try:
        _check_ray_options(args)
        summary = run(
            spec,
            run_dir,
            resume=resume,
            address=args.address,
            num_cpus=args.num_cpus,
            dashboard=args.dashboard or args.dashboard_host is not None,
            dashboard_host=args.dashboard_host,
            dashboard_auth=args.dashboard_auth,
            verbose=_verbosity(args),
            command=["python", "-m", "hpo", *sys.argv[1:]],
        )
    except (SpecError, ResourceError, RunLockedError, RunExistsError, StorageError) as error:
        return _usage_error(redact_text(str(error), spec.search.storage))
    except ConnectionError as error:
        return _usage_error(f"could not reach the Ray cluster at {args.address}: {error}")
    _print_where(run_dir)
    return summary.exit_code


def _print_where(run_dir) -> None:
    print(f"Results: {run_dir.results_file}")
    print(f"  trials: {run_dir.trials_file}   models: {run_dir.models_dir}   provenance: {run_dir.provenance_file}")
    print(f"  progress table: python -m hpo status {run_dir.root}")


def _new_run(spec, args: argparse.Namespace):
    from hpo.sweep import default_run_name, new_run_dir

    runs_dir = (args.runs_dir or default_runs_dir()).resolve()
    _check_writable(runs_dir, "--runs-dir")
    name = args.name or default_run_name(spec)
    return new_run_dir(runs_dir, name)


def handle_sweep(args: argparse.Namespace) -> int:
    from hpo.spec import load_spec
    from hpo.rundir import RunLockedError
    from hpo.sweep import RunExistsError

    try:
        spec = resolve_base_run(load_spec(args.spec, overrides=args.overrides + storage_override(args.storage)))
        if args.name:
            _check_name(args.name)
        run_dir = _new_run(spec, args)
    except (SpecError, RunExistsError, RunLockedError) as error:
        return _usage_error(str(error))
    return _run(spec, run_dir, args, resume=False)


def resolve_base_run(spec):
    """Make ``one_at_a_time.base_run`` absolute and check it holds results (before Ray starts)."""
    oat = spec.one_at_a_time
    if oat is None or not oat.base_run:
        return spec
    base = Path(oat.base_run).expanduser().resolve()
    if not (base / "results.parquet").is_file():
        raise SpecError(f"one_at_a_time.base_run: {base} holds no results.parquet (it must be a finished run directory)")
    return dataclasses.replace(spec, one_at_a_time=dataclasses.replace(oat, base_run=str(base)))


def tune_overrides(args: argparse.Namespace, raw: dict[str, Any] | None = None) -> list[str]:
    """``--set`` strings equivalent to the tune command's flags (``raw``: the base spec's data)."""
    from hpo.space import BASELINES, VARIANTS
    from hpo.spec import DEFAULTS

    if args.variant not in VARIANTS + BASELINES:
        raise SpecError(f"--variant must be one of {', '.join(VARIANTS + BASELINES)}; got {args.variant!r}")
    task = args.task
    name = "tune-" + "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{task}-{args.variant}")
    overrides = [
        f'study.name="{name}"',
        f'study.tasks=["{task}"]',
        f'study.variants={_toml_list([args.variant] if args.variant in VARIANTS else [])}',
        f'study.baselines={_toml_list([args.variant] if args.variant in BASELINES else [])}',
    ]
    flag_keys = {
        "trials": "search.trials",
        "folds": "study.folds",
        "epochs": "training.max_epochs",
        "patience": "training.patience",
        "cpu": "resources.cpu",
        "concurrency": "search.max_concurrent_trials",
    }
    for flag, key in flag_keys.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.trials is not None and args.variant == "xgboost":
        overrides.append(f"search.xgboost_trials={args.trials}")
    if args.seeds:
        overrides.append(f"study.seeds={_toml_list(args.seeds)}")
    if args.gpu is not None:
        overrides.append(f'resources.gpu="auto"' if args.gpu == "auto" else f"resources.gpu={_number(args.gpu, '--gpu')}")
    overrides += storage_override(args.storage)
    grace = (raw or {}).get("scheduler", {}).get("grace_period", DEFAULTS["scheduler"]["grace_period"])
    if args.epochs is not None and isinstance(grace, int) and grace > args.epochs >= 1:
        overrides.append(f"scheduler.grace_period={args.epochs}")  # ASHA's first rung within the epochs
    return overrides + list(args.overrides)


def storage_override(url: str | None) -> list[str]:
    """``--set`` string for a ``--storage`` URL (any character of a password quoted safely)."""
    import json

    return [] if url is None else [f"search.storage={json.dumps(url, ensure_ascii=False)}"]


def _number(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SpecError(f'{flag} must be a number or "auto"; got {text!r}') from None


def _toml_list(values: list[Any]) -> str:
    return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in values) + "]"


def _check_writable(folder: Path, flag: str) -> None:
    """``folder`` is (or can be made) a writable directory."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SpecError(f"{flag} {folder}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError(f"{flag} {folder}: {existing} is not writable")


def _check_name(name: str) -> None:
    from hpo.spec import _NAME_PATTERN

    if not _NAME_PATTERN.match(name):
        raise SpecError(f"--name must be letters, digits, '.', '_' or '-'; got {name!r}")


def handle_tune(args: argparse.Namespace) -> int:
    import tomllib

    from hpo.spec import parse_spec, read_toml
    from hpo.rundir import RunLockedError
    from hpo.sweep import RunExistsError
    from hpo.tasks import UnknownTaskError, get_task

    try:
        try:
            args.task = get_task(args.task).name
        except (TypeError, ValueError) as error:
            raise SpecError(f"--task: {error}") from None
        raw: dict[str, Any] = {}
        if args.spec is not None:
            if not args.spec.is_file():
                raise SpecError(f"--spec {args.spec} does not exist")
            raw = read_toml(args.spec)
            raw.pop("one_at_a_time", None)
        spec = parse_spec(raw, overrides=tune_overrides(args, raw), source=str(args.spec or "tune"))
        if args.name:
            _check_name(args.name)
        run_dir = _new_run(spec, args)
    except (SpecError, RunExistsError, RunLockedError, UnknownTaskError, tomllib.TOMLDecodeError) as error:
        return _usage_error(str(error))
    return _run(spec, run_dir, args, resume=False)


def handle_resume(args: argparse.Namespace) -> int:
    from hpo.rundir import RunDir
    from hpo.sweep import load_run_spec

    from hpo.storage import StorageError, redact_url, storage_url_for_resume

    run_dir = RunDir(args.run_dir)
    try:
        spec = load_run_spec(run_dir)
        if args.storage is not None:
            storage = storage_url_for_resume(spec.search.storage, args.storage)
            spec = dataclasses.replace(spec, search=dataclasses.replace(spec.search, storage=storage))
    except (SpecError, StorageError) as error:
        return _usage_error(str(error) if args.storage is None else str(error).replace(args.storage, redact_url(args.storage)))
    return _run(spec, run_dir, args, resume=True)


def handle_status(args: argparse.Namespace) -> int:
    from hpo.rundir import RunDir
    from hpo.status import render_status

    run_dir = RunDir(args.run_dir)
    if not run_dir.spec_file.exists():
        return _usage_error(f"{run_dir.root} is not a run directory (no spec.toml)")
    if args.watch is not None and not (math.isfinite(args.watch) and 0 < args.watch <= 86400):
        return _usage_error(f"--watch must be a number of seconds in (0, 86400]; got {args.watch}")
    try:
        while True:
            text = render_status(run_dir)
            if args.watch:
                print("\033[2J\033[H", end="")
            print(text, flush=True)
            if not args.watch:
                return 0
            time.sleep(max(0.5, args.watch))
    except KeyboardInterrupt:
        return 0


# --------------------------------------------------------------------------- main job


def run_main_job(argv: list[str] | None = None) -> tuple[int, Path | None]:
    """The README's main job: run ``studies/smoke.toml`` into ``studies/runs/smoke-<timestamp>``
    (or ``--name``) and print where the results are. Returns (exit code, run directory or None)."""
    parser = argparse.ArgumentParser(prog="python -m hpo main")
    _add_run_options(parser)
    _add_ray_options(parser)
    args = parser.parse_args(argv or [])
    spec_path = studies_dir() / SMOKE_SPEC
    from hpo.spec import load_spec
    from hpo.rundir import RunLockedError
    from hpo.sweep import RunExistsError

    try:
        spec = load_spec(spec_path, overrides=args.overrides)
        if args.name:
            _check_name(args.name)
        run_dir = _new_run(spec, args)
    except (SpecError, RunExistsError, RunLockedError) as error:
        return _usage_error(str(error)), None
    print(f"Main job: the smoke study {spec_path}")
    code = _run(spec, run_dir, args, resume=False)
    return code, (run_dir.root if run_dir.results_file.exists() else None)
