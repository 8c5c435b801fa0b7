"""`python -m hpo data ...`: list, inspect and fetch CTR23 tasks."""

from __future__ import annotations

import argparse

from hpo.tasks import TASKS, fetch_suite_task_ids, resolve_tasks


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command and its sub-commands."""
    data = subparsers.add_parser("data", help="list, inspect and fetch the CTR23 tasks")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="{list,show,fetch}")

    listing = commands.add_parser("list", help="the 35 tasks, their size and where they load from")
    listing.add_argument(
        "--check-online", action="store_true",
        help="also compare the built-in list with OpenML's suite 353 (needs network)",
    )
    listing.set_defaults(func=_list)

    show = commands.add_parser("show", help="shape, target, feature types, missing values, folds")
    show.add_argument("name", help="task name (case-insensitive) or OpenML task id")
    show.add_argument("--folds", type=int, default=5, help="outer folds to size (default 5)")
    show.set_defaults(func=_show)

    fetch = commands.add_parser("fetch", help="fill the cache from OpenML or the mirror")
    target = fetch.add_mutually_exclusive_group(required=True)
    target.add_argument("--task", nargs="+", metavar="NAME", help="task names or ids")
    target.add_argument("--suite", choices=["ctr23"], help="every task of the suite")
    fetch.add_argument(
        "--refresh", action="store_true",
        help="drop the tasks' cached files first (after a corrupted or truncated download)",
    )
    fetch.set_defaults(func=_fetch)


def _list(args: argparse.Namespace) -> int:
    from hpo.data import availability, cache_dir, mirror_dir

    print(f"OpenML-CTR23 (suite 353): {len(TASKS)} tasks; cache {cache_dir()}; mirror {mirror_dir() or '(none)'}")
    header = f"{'task_id':>7}  {'name':<30} {'rows':>7} {'features':>8}  {'CV':<14} available"
    print(header)
    print("-" * len(header))
    counts: dict[str, int] = {}
    for task in TASKS:
        where = availability(task)
        counts[where] = counts.get(where, 0) + 1
        label = {"network": "needs network"}.get(where, where)
        print(f"{task.task_id:>7}  {task.name:<30} {task.n_rows:>7} {task.n_features:>8}  {task.cv_procedure:<14} {label}")
    print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    if args.check_online:
        online = fetch_suite_task_ids()
        known = {task.task_id for task in TASKS}
        if online == known:
            print("the built-in list matches OpenML's suite 353")
        else:
            print(f"differs from OpenML: only online {sorted(online - known)}, only built in {sorted(known - online)}")
            return 1
    return 0


def _show(args: argparse.Namespace) -> int:
    from hpo.data import availability, load_task, validation_holdout

    (task,) = resolve_tasks([args.name])
    where = availability(task)
    data = load_task(task)
    X, y = data.X, data.y
    print(f"{task.name}  (OpenML task {task.task_id}, dataset {task.dataset_id}; loaded from {where})")
    print(f"shape: {X.shape[0]} rows x {X.shape[1]} features; target `{task.target}`")
    summary = y.describe()
    print("target: " + ", ".join(f"{k} {summary[k]:.4g}" for k in ["mean", "std", "min", "50%", "max"])
          + f", missing {int(y.isna().sum())}")
    print(f"features: {X.shape[1] - len(data.categorical)} numeric, {len(data.categorical)} categorical")
    width = max(len(str(c)) for c in X.columns)
    for column in X.columns:
        kind = "categorical" if column in data.categorical else "numeric"
        levels = f"{X[column].nunique()} levels" if kind == "categorical" else str(X[column].dtype)
        missing = int(X[column].isna().sum())
        print(f"  {str(column):<{width}}  {kind:<11} {levels:<12} missing {missing}")
    print(f"missing values in total: {int(X.isna().sum().sum())}")
    print(f"outer folds: {task.cv_procedure}, splits {data.splits_source}; "
          f"first {min(args.folds, task.folds)} of repeat 0 (validation = seeded 10 % of training):")
    for fold in range(min(args.folds, task.folds)):
        train, test = data.outer_split(fold)
        inner, val = validation_holdout(train, 0.1, seed=0, fold=fold, repeat=0)
        print(f"  fold {fold}: train {len(inner)}, validation {len(val)}, test {len(test)}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hpo.data import DataCorruptError, DataFaultError, DataUnavailableError, load_task, refresh_cache

    tasks = resolve_tasks(args.task if args.task else [args.suite])
    if args.refresh:
        for task in tasks:
            refresh_cache(task)
    failed: list[str] = []
    progress = tqdm(tasks, unit="task", desc="fetching")
    for task in progress:
        progress.set_postfix_str(task.name)
        try:
            load_task(task)
        except (DataUnavailableError, DataCorruptError, DataFaultError) as error:
            failed.append(task.name)
            tqdm.write(f"failed: {error}")
    progress.close()
    print(f"{len(tasks) - len(failed)} of {len(tasks)} tasks in the cache" +
          (f"; missing: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
