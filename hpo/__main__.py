"""Command line of the suite: ``python -m hpo {data,tune,sweep,resume,status,main} ...``.

Exit codes: 0 success, 1 failure (work failed or data missing), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys

from hpo import cli_data
from hpo.tasks import UnknownTaskError


class UsageError(ValueError):
    """A mistake in what the user asked for (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hpo",
        description="Hyperparameter optimisation of liquid-memory regression models on OpenML-CTR23.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    cli_data.register(subparsers)
    try:
        from hpo import cli_search
    except ImportError:  # search engine not installed in this checkout
        cli_search = None
    if cli_search is not None:
        cli_search.register(subparsers)
        main_job = subparsers.add_parser(
            "main", help="the README's main job: run studies/smoke.toml, then write its report"
        )
        main_job.add_argument("--name", help="run name (default: smoke-<timestamp>)")
        main_job.add_argument("--no-report", action="store_true", help="skip the analysis report")
        main_job.set_defaults(func=_main_job)
    try:
        from hpo import bench
    except ImportError:  # benchmark module not in this checkout
        bench = None
    if bench is not None:
        bench.register(subparsers)
    return parser


def _main_job(args: argparse.Namespace) -> int:
    from hpo import cli_search

    argv = ["--name", args.name] if args.name else []
    code, run_dir = cli_search.run_main_job(argv)
    if args.no_report or run_dir is None:
        return code
    try:
        from analysis.__main__ import main as analysis_main
    except ImportError:
        print("analysis package not available: no report written")
        return code
    report_code = analysis_main(["report", str(run_dir)])
    return code or report_code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from hpo.data import DataCorruptError, DataFaultError, DataUnavailableError

    try:
        return int(args.func(args) or 0)
    except (UnknownTaskError, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (DataUnavailableError, DataCorruptError, DataFaultError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
