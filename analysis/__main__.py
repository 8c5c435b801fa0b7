"""Command line: ``python -m analysis {report,sensitivity,landscape} RUN_DIR ...``.

Each command reads a finished (or partial) run directory, writes its outputs and prints the path
of the HTML file it wrote. Exit status: 0 done, 2 usage error (bad arguments, not a run
directory, unknown task or parameter), 1 failure while analysing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

USAGE_ERROR = 2
FAILURE = 1


class UsageError(Exception):
    """A mistake in the command line; the message says what to do instead."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Reports, sensitivity analyses and loss landscapes from a run directory (studies/runs/RUN).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{report,sensitivity,landscape}")

    report = commands.add_parser("report", help="write the full report (Markdown + self-contained HTML)")
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    report.add_argument("--out", type=Path, default=None, metavar="DIR", help="output folder (default RUN_DIR/report)")
    report.add_argument("--landscape", choices=("auto", "stored", "skip"), default="auto",
                        help="auto: redraw stored grids, else compute quick ones (default); stored: only "
                             "redraw; skip: leave landscapes out")
    report.add_argument("--landscape-tasks", type=int, default=2, metavar="N",
                        help="tasks for quick landscapes when none are stored (default 2)")
    report.add_argument("--oat-run", type=Path, default=None, metavar="DIR",
                        help="run directory with one-at-a-time results (default: this run, or a sibling "
                             "run whose spec names this run as base_run)")
    report.add_argument("--param", action="append", default=None, metavar="NAME",
                        help="parameter(s) for sensitivity sections (repeatable; default beta)")

    sensitivity = commands.add_parser("sensitivity", help="sensitivity of validation/test RMSE to one parameter")
    sensitivity.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    sensitivity.add_argument("--param", default="beta", metavar="NAME",
                             help="searched hyperparameter (default beta; e.g. hopfield_size, learning_rate)")
    sensitivity.add_argument("--out", type=Path, default=None, metavar="DIR",
                             help="output folder (default RUN_DIR/analysis/sensitivity_PARAM)")
    sensitivity.add_argument("--oat-run", type=Path, default=None, metavar="DIR")
    sensitivity.add_argument("--no-importances", action="store_true", help="skip fANOVA importances")

    landscape = commands.add_parser("landscape", help="loss-landscape surfaces of saved models (Li et al.)")
    landscape.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    landscape.add_argument("--task", required=True, metavar="NAME")
    landscape.add_argument("--variants", default="ltc,ltc_mhn", metavar="A,B",
                           help="comma-separated variants (default ltc,ltc_mhn)")
    landscape.add_argument("--grid", type=int, default=25, metavar="N", help="points per axis (default 25)")
    landscape.add_argument("--span", type=float, default=1.0, help="grid covers [-span, span]² (default 1)")
    landscape.add_argument("--fold", type=int, default=None, help="outer fold (default: first complete)")
    landscape.add_argument("--seed", type=int, default=None, help="run seed (default: first complete)")
    landscape.add_argument("--rows", choices=("train", "test"), default="train",
                           help="rows the loss is evaluated on: outer training (default) or outer test part")
    landscape.add_argument("--max-rows", type=int, default=1024, metavar="N", help="row subsample (default 1024)")
    landscape.add_argument("--direction-seed", type=int, default=0, help="seed of the two random directions")
    landscape.add_argument("--hessian-iterations", type=int, default=100, metavar="N")
    landscape.add_argument("--out", type=Path, default=None, metavar="DIR",
                           help="output folder (default RUN_DIR/analysis/landscape)")
    landscape.add_argument("--redraw", action="store_true",
                           help="redraw figures from the stored grid without recomputing")
    return parser


def _load(run_dir: Path):
    from analysis.runs import RunDirectoryError, load_run

    try:
        return load_run(run_dir)
    except RunDirectoryError as error:
        raise UsageError(str(error)) from None


def _writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot write the output folder {folder} ({error.strerror}); choose one with --out DIR") from None


def _report(args) -> Path:
    from analysis.report import write_report

    run = _load(args.run_dir)
    if args.oat_run is not None:
        _load(args.oat_run)
    if args.landscape_tasks < 0:
        raise UsageError(f"--landscape-tasks must be ≥ 0, got {args.landscape_tasks}")
    _writable(args.out if args.out is not None else run.path / "report")
    paths = write_report(run.path, args.out, args.landscape, args.landscape_tasks, args.oat_run,
                         tuple(args.param or ("beta",)))
    return paths.html


def _sensitivity(args) -> Path:
    from analysis.document import Document
    from analysis.sensitivity import parameter_names, sensitivity_section

    from analysis.runs import base_run_of

    run = _load(args.run_dir)
    oat_run = _load(args.oat_run) if args.oat_run is not None else None
    base = base_run_of(run)
    if base is not None and run.search_results.empty:  # a one-at-a-time run: trials live in its base run
        run, oat_run = base, oat_run if oat_run is not None else run
    searched = parameter_names(run)
    oat_source = oat_run if oat_run is not None else run
    has_oat = not oat_source.oat_results.empty and (oat_source.oat_results["oat_param"] == args.param).any()
    if args.param not in searched and not has_oat:
        if run.trials is None:
            raise UsageError(f"{run.path} has no trials.parquet and no one-at-a-time rows for {args.param!r}")
        raise UsageError(f"--param {args.param!r} was not searched in {run.path}; searched: "
                         + (", ".join(searched) or "none"))
    out = args.out if args.out is not None else args.run_dir / "analysis" / f"sensitivity_{args.param}"
    document = Document(f"Sensitivity to {args.param}: {run.name}")
    document.add(sensitivity_section(run, args.param, oat_run=oat_run, importances=not args.no_importances))
    return document.write(out, stem=f"sensitivity_{args.param}")["html"]


def _landscape(args) -> Path:
    from analysis.document import Document, Paragraph, Section
    from analysis.landscape import load_landscapes, save_landscapes
    from analysis.stability import compute_task_landscapes, landscape_figure, landscape_file_name, landscape_table

    run = _load(args.run_dir)
    from analysis.names import VARIANTS

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants:
        raise UsageError("--variants must name at least one variant, e.g. ltc,ltc_mhn")
    not_neural = [v for v in variants if v not in VARIANTS]
    if not_neural:
        raise UsageError(f"--variants: {', '.join(not_neural)} has no torch network; choose from {', '.join(VARIANTS)}")
    if args.grid < 3:
        raise UsageError(f"--grid must be ≥ 3, got {args.grid}")
    if args.span <= 0:
        raise UsageError(f"--span must be positive, got {args.span}")
    if args.max_rows < 2:
        raise UsageError(f"--max-rows must be ≥ 2, got {args.max_rows}")
    if args.task not in set(run.results["task"]):
        raise UsageError(f"--task {args.task!r} is not in {run.path}/results.parquet; tasks: "
                         + ", ".join(sorted(set(run.results["task"]))))
    out = args.out if args.out is not None else run.path / "analysis" / "landscape"
    if args.redraw:
        candidates = sorted(out.glob(f"landscape_{args.task}_fold*_seed*.npz"))
        if args.fold is not None or args.seed is not None:
            candidates = [p for p in candidates if p.name == landscape_file_name(
                args.task, args.fold if args.fold is not None else 0, args.seed if args.seed is not None else 0)]
        if not candidates:
            raise UsageError(f"no stored landscape of {args.task} under {out}; run without --redraw first")
        landscapes, metadata = load_landscapes(candidates[-1])
        landscapes = {v: landscapes[v] for v in variants if v in landscapes} or landscapes
    else:
        unknown = [v for v in variants if not (run.path / "models" / args.task / v).is_dir()]
        if len(unknown) == len(variants):
            raise UsageError(f"no saved models of {', '.join(variants)} for {args.task} under {run.path / 'models'}")
        landscapes, metadata = compute_task_landscapes(
            run, args.task, variants, args.fold, args.seed, args.grid, args.span, args.direction_seed,
            args.rows, args.max_rows, args.hessian_iterations)
        save_landscapes(out / landscape_file_name(args.task, metadata["fold"], metadata["seed"]), landscapes, metadata)
    stem = f"landscape_{args.task}_fold{metadata['fold']}_seed{metadata['seed']}"
    document = Document(f"Loss landscape: {args.task} ({run.name})")
    section = Section("Loss landscape")
    section.add(Paragraph(f"Grid stored in `{out / (stem + '.npz')}`; redraw with `python -m analysis landscape "
                          f"{run.path} --task {args.task} --redraw`."))
    section.add(landscape_figure(landscapes, args.task, stem))
    section.add(landscape_table([(args.task, landscapes, metadata)]))
    document.add(section)
    return document.write(out, stem=stem)["html"]


COMMANDS = {"report": _report, "sensitivity": _sensitivity, "landscape": _landscape}


def main(argv: list[str] | None = None) -> int:
    """Run one command; return the exit status (0 ok, 2 usage error, 1 failure)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        path = COMMANDS[args.command](args)
    except UsageError as error:
        print(f"python -m analysis {args.command}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return FAILURE
    except Exception as error:  # an analysis bug or unreadable file: one line plus where to look
        import traceback

        traceback.print_exc(file=sys.stderr)
        print(f"python -m analysis {args.command}: failed: {type(error).__name__}: {error}", file=sys.stderr)
        return FAILURE
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
