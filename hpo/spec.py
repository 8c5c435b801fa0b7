"""Study specifications: TOML files in ``studies/`` parsed into typed, validated data.

A spec says which tasks, variants, baselines, outer folds and seeds a sweep covers, how each search
runs (trials, scheduler, concurrency, storage), how models train (epochs, patience), the resources
per trial, the search space (defaults: MODEL.md §6) and, optionally, a one-at-a-time study.
Everything is checked here, before Ray starts: an unknown key or an impossible value raises
:class:`SpecError` naming the key. Nothing here imports Ray.

Sections and keys (defaults in :data:`DEFAULTS`)::

    [study]         name, description, tasks ("all" or names/ids), variants, baselines,
                    folds (K → folds 0..K-1, or a list of fold indices), repeat, seeds,
                    validation_fraction
    [search]        trials, xgboost_trials, max_concurrent_trials (0: as resources allow),
                    reuse_actors, startup_trials (TPE's random start), storage ("" → the run's
                    optuna.journal; else an Optuna storage URL, e.g. postgresql://...)
    [scheduler]     type ("asha" | "fifo"), grace_period, reduction_factor (ASHA, per epoch)
    [training]      max_epochs, patience, batch_size, grad_clip (0: none), weight_decay
    [resources]     cpu (per trial), gpu (per trial: 0, a fraction such as 0.25, or "auto")
    [failure]       max_retries (a trial whose worker process dies is retried this often from
                    its last per-epoch checkpoint, then recorded as failed; 0: never retried)
    [space]         overrides of the liquid–memory space, one key per hyperparameter:
                    { low, high, log, default } | { choices, default } | a constant
    [xgboost_space] the same for xgboost
    [one_at_a_time] param, values, variants, base_run ("" → this run's own searches)
    [testing]       fault injection for tests only: fail_variants, fail_trials (trials raise),
                    diverge_trials (their loss becomes NaN), kill_trials + kill_epoch (their
                    worker process kills itself with SIGKILL in that epoch, once per trial)
"""

from __future__ import annotations

import copy
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo.space import (
    BASELINES,
    INTEGER_PARAMS,
    NEURAL_SPACE,
    VARIANTS,
    XGBOOST_SPACE,
    Choice,
    Domain,
    Fixed,
    FloatRange,
    IntRange,
    Space,
    variant_params,
)

AUTO = "auto"
AUTO_GPU_FRACTION = 0.25  # resources.gpu = "auto": four trials per GPU when the cluster has GPUs
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class SpecError(ValueError):
    """A study specification that cannot run; the message names the offending key."""


DEFAULTS: dict[str, dict[str, Any]] = {
    "study": {
        "name": "study",
        "description": "",
        "tasks": [],
        "variants": ["ltc_mhn"],
        "baselines": [],
        "folds": 5,
        "repeat": 0,
        "seeds": [0],
        "validation_fraction": 0.1,
    },
    "search": {
        "trials": 50,
        "xgboost_trials": None,  # None: same as trials
        "max_concurrent_trials": 0,
        "reuse_actors": True,
        "startup_trials": 10,
        "storage": "",
    },
    "scheduler": {"type": "asha", "grace_period": 5, "reduction_factor": 3},
    "training": {"max_epochs": 100, "patience": 10, "batch_size": 256, "grad_clip": 0.0, "weight_decay": 0.0},
    "resources": {"cpu": 1, "gpu": 0},
    "failure": {"max_retries": 1},
    "space": {},
    "xgboost_space": {},
    "one_at_a_time": {},
    "testing": {"fail_variants": [], "fail_trials": [], "diverge_trials": [], "kill_trials": [], "kill_epoch": 1},
}
_ONE_AT_A_TIME_KEYS = ("param", "values", "variants", "base_run")

# What each hyperparameter may be, whatever the range: (lowest, lowest included, highest).
_NEURAL_LIMITS = {
    "beta": (0.0, True, math.inf),
    "hopfield_size": (1, True, math.inf),
    "heads": (1, True, math.inf),
    "alpha": (0.0, False, math.inf),
    "delta": (0.0, False, math.inf),
    "learning_rate": (0.0, False, math.inf),
    "hidden_size": (1, True, math.inf),
    "unfolds": (1, True, math.inf),
}
_XGBOOST_LIMITS = {
    "learning_rate": (0.0, False, math.inf),
    "max_depth": (1, True, math.inf),
    "subsample": (0.0, False, 1.0),
    "colsample_bytree": (0.0, False, 1.0),
    "reg_lambda": (0.0, True, math.inf),
    "reg_alpha": (0.0, True, math.inf),
    "min_child_weight": (0.0, True, math.inf),
    "n_estimators": (1, True, math.inf),
}


# --------------------------------------------------------------------------- typed spec


@dataclass(frozen=True)
class StudySection:
    name: str
    description: str
    tasks: tuple[str, ...]
    variants: tuple[str, ...]
    baselines: tuple[str, ...]
    folds: tuple[int, ...]
    repeat: int
    seeds: tuple[int, ...]
    validation_fraction: float

    @property
    def models(self) -> tuple[str, ...]:
        """Variants, then baselines: every model a sweep fits."""
        return self.variants + self.baselines


@dataclass(frozen=True)
class SearchSection:
    trials: int
    xgboost_trials: int
    max_concurrent_trials: int
    reuse_actors: bool
    startup_trials: int
    storage: str

    def trials_for(self, model: str) -> int:
        return self.xgboost_trials if model == "xgboost" else self.trials


@dataclass(frozen=True)
class SchedulerSection:
    type: str
    grace_period: int
    reduction_factor: float


@dataclass(frozen=True)
class TrainingSection:
    max_epochs: int
    patience: int
    batch_size: int
    grad_clip: float
    weight_decay: float


@dataclass(frozen=True)
class ResourcesSection:
    cpu: float
    gpu: float | str  # a number, or "auto"


@dataclass(frozen=True)
class OneAtATimeSection:
    param: str
    values: tuple[float, ...]
    variants: tuple[str, ...]
    base_run: str


@dataclass(frozen=True)
class FailureSection:
    max_retries: int = 1


@dataclass(frozen=True)
class TestingSection:
    fail_variants: tuple[str, ...] = ()
    fail_trials: tuple[int, ...] = ()
    diverge_trials: tuple[int, ...] = ()
    kill_trials: tuple[int, ...] = ()
    kill_epoch: int = 1


@dataclass(frozen=True)
class StudySpec:
    """A validated study specification (see the module docstring for the keys)."""

    study: StudySection
    search: SearchSection
    scheduler: SchedulerSection
    training: TrainingSection
    resources: ResourcesSection
    space: Space
    xgboost_space: Space
    one_at_a_time: OneAtATimeSection | None = None
    testing: TestingSection = field(default_factory=TestingSection)
    failure: FailureSection = field(default_factory=FailureSection)

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as plain TOML-able data (every default filled in)."""
        study = self.study
        data: dict[str, Any] = {
            "study": {
                "name": study.name,
                "description": study.description,
                "tasks": list(study.tasks),
                "variants": list(study.variants),
                "baselines": list(study.baselines),
                "folds": list(study.folds),
                "repeat": study.repeat,
                "seeds": list(study.seeds),
                "validation_fraction": study.validation_fraction,
            },
            "search": dict(vars(self.search)),
            "scheduler": dict(vars(self.scheduler)),
            "training": dict(vars(self.training)),
            "resources": dict(vars(self.resources)),
            "failure": dict(vars(self.failure)),
            "space": {name: _domain_to_data(d) for name, d in self.space.items()},
            "xgboost_space": {name: _domain_to_data(d) for name, d in self.xgboost_space.items()},
            "testing": {
                "fail_variants": list(self.testing.fail_variants),
                "fail_trials": list(self.testing.fail_trials),
                "diverge_trials": list(self.testing.diverge_trials),
                "kill_trials": list(self.testing.kill_trials),
                "kill_epoch": self.testing.kill_epoch,
            },
        }
        if self.one_at_a_time is not None:
            oat = self.one_at_a_time
            data["one_at_a_time"] = {
                "param": oat.param,
                "values": list(oat.values),
                "variants": list(oat.variants),
                "base_run": oat.base_run,
            }
        return data

    def to_toml(self) -> str:
        """The resolved spec as TOML text; :func:`parse_spec` reads it back to an equal spec."""
        return dump_toml(self.to_dict())


# --------------------------------------------------------------------------- loading


def load_spec(path: str | Path, overrides: list[str] | None = None) -> StudySpec:
    """Read and validate a TOML study spec; ``overrides`` are ``section.key=value`` strings."""
    return parse_spec(read_toml(path), overrides=overrides, source=str(path))


def read_toml(path: str | Path) -> dict[str, Any]:
    """The data of a TOML spec file; a missing, unreadable or malformed file is a :class:`SpecError`."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(one_line(f"study spec {path} does not exist (specs live in studies/, e.g. studies/smoke.toml)"))
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise SpecError(one_line(f"{path}: not valid TOML ({error})")) from None
    except UnicodeDecodeError as error:
        raise SpecError(one_line(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})")) from None
    except OSError as error:
        raise SpecError(one_line(f"{path}: cannot be read ({error.strerror or error})")) from None


def parse_spec(raw: dict[str, Any], overrides: list[str] | None = None, source: str = "spec") -> StudySpec:
    """Validate a spec given as data (a parsed TOML document)."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        apply_override(raw, item)
    try:
        return _parse(raw)
    except SpecError as error:
        raise SpecError(one_line(f"{source}: {error}")) from None


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped, so it prints on one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``section.key=value`` (value in TOML syntax; bare words are strings) in raw spec data."""
    if "=" not in item:
        raise SpecError(f"override {_show(item)} must look like section.key=value (e.g. search.trials=4)")
    dotted, text = (part.strip() for part in item.split("=", 1))
    parts = dotted.split(".")
    if len(parts) < 2 or not all(parts):
        raise SpecError(f"override {_show(item)}: the key must be section.key (e.g. search.trials)")
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        value = text
    table = raw
    for part in parts[:-1]:
        child = table.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(f"override {_show(item)}: {part} is not a table")
        table = child
    table[parts[-1]] = value


def _parse(raw: dict[str, Any]) -> StudySpec:
    unknown = sorted(set(raw) - set(DEFAULTS), key=str)
    if unknown:
        raise SpecError(f"unknown section or key {_show(unknown[0])}; accepted sections: {', '.join(DEFAULTS)}")
    tables = {}
    for section, defaults in DEFAULTS.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise SpecError(f"{section} must be a table ([{section}])")
        if section not in ("space", "xgboost_space", "one_at_a_time"):
            extra = sorted(set(table) - set(defaults), key=str)
            if extra:
                raise SpecError(
                    f"unknown key {section}.{extra[0]}; accepted keys of [{section}]: {', '.join(defaults)}"
                )
            table = {**defaults, **table}
        tables[section] = table

    study = _parse_study(tables["study"])
    search = _parse_search(tables["search"])
    scheduler = _parse_scheduler(tables["scheduler"])
    training = _parse_training(tables["training"])
    if scheduler.type == "asha" and scheduler.grace_period > training.max_epochs:
        raise SpecError(
            f"scheduler.grace_period ({scheduler.grace_period}) exceeds training.max_epochs "
            f"({training.max_epochs}); lower it or use scheduler.type = \"fifo\""
        )
    resources = _parse_resources(tables["resources"])
    space = _parse_space(tables["space"], NEURAL_SPACE, _NEURAL_LIMITS, "space")
    _check_heads(space)
    xgboost_space = _parse_space(tables["xgboost_space"], XGBOOST_SPACE, _XGBOOST_LIMITS, "xgboost_space")
    one_at_a_time = _parse_one_at_a_time(tables["one_at_a_time"], study, space)
    if not study.models and one_at_a_time is None:
        raise SpecError("study.variants and study.baselines are both empty: nothing to run")
    testing = _parse_testing(tables["testing"], study)
    failure = FailureSection(max_retries=_integer(tables["failure"], "failure", "max_retries", minimum=0))
    return StudySpec(
        study, search, scheduler, training, resources, space, xgboost_space, one_at_a_time, testing, failure
    )


# --------------------------------------------------------------------------- sections


def _parse_study(table: dict[str, Any]) -> StudySection:
    from hpo.tasks import UnknownTaskError, resolve_tasks

    name = _string(table, "study", "name")
    if not _NAME_PATTERN.match(name):
        raise SpecError(f"study.name must be letters, digits, '.', '_' or '-'; got {_show(name)}")
    tasks_value = table["tasks"]
    if isinstance(tasks_value, (str, int)):
        tasks_value = [tasks_value]
    if not isinstance(tasks_value, list) or not tasks_value:
        raise SpecError('study.tasks must name at least one task (a list of names or ids, or "all")')
    try:
        tasks = resolve_tasks(tasks_value)
    except (UnknownTaskError, TypeError, ValueError) as error:
        raise SpecError(f"study.tasks: {error}") from None

    variants = _name_list(table, "study", "variants", VARIANTS)
    baselines = _name_list(table, "study", "baselines", BASELINES)

    repeat = _integer(table, "study", "repeat", minimum=0)
    folds_value = table["folds"]
    if isinstance(folds_value, bool):
        raise SpecError(f"study.folds must be a count K ≥ 1 or a list of fold indices; got {_show(folds_value)}")
    if isinstance(folds_value, int):
        if folds_value < 1:
            raise SpecError(f"study.folds must be ≥ 1; got {folds_value}")
        folds = tuple(range(folds_value))
    elif isinstance(folds_value, list) and folds_value and all(
        isinstance(f, int) and not isinstance(f, bool) and f >= 0 for f in folds_value
    ):
        folds = tuple(dict.fromkeys(folds_value))
    else:
        raise SpecError(f"study.folds must be a count K ≥ 1 or a list of fold indices ≥ 0; got {_show(folds_value)}")
    for task in tasks:
        if max(folds) >= task.folds:
            raise SpecError(
                f"study.folds: task {task.name} has outer folds 0..{task.folds - 1}; "
                f"fold {max(folds)} does not exist"
            )
        if repeat >= task.repeats:
            raise SpecError(f"study.repeat: task {task.name} has repeats 0..{task.repeats - 1}; got {repeat}")

    seeds_value = table["seeds"]
    if isinstance(seeds_value, int) and not isinstance(seeds_value, bool):
        seeds_value = [seeds_value]
    if not (
        isinstance(seeds_value, list)
        and seeds_value
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds_value)
    ):
        raise SpecError(f"study.seeds must be a non-empty list of integers ≥ 0; got {_show(seeds_value)}")
    fraction = _number(table, "study", "validation_fraction")
    if not 0.0 < fraction < 0.5:
        raise SpecError(f"study.validation_fraction must be in (0, 0.5); got {fraction}")
    return StudySection(
        name=name,
        description=_string(table, "study", "description"),
        tasks=tuple(task.name for task in tasks),
        variants=variants,
        baselines=baselines,
        folds=folds,
        repeat=repeat,
        seeds=tuple(dict.fromkeys(seeds_value)),
        validation_fraction=fraction,
    )


def _parse_search(table: dict[str, Any]) -> SearchSection:
    trials = _integer(table, "search", "trials", minimum=1)
    xgboost_trials = trials if table["xgboost_trials"] is None else _integer(table, "search", "xgboost_trials", minimum=1)
    storage = _string(table, "search", "storage")
    if storage and "://" not in storage:
        raise SpecError(
            f"search.storage must be empty (the run's optuna.journal) or an Optuna storage URL such as "
            f"postgresql://user@host/db; got {_show(storage)}"
        )
    return SearchSection(
        trials=trials,
        xgboost_trials=xgboost_trials,
        max_concurrent_trials=_integer(table, "search", "max_concurrent_trials", minimum=0),
        reuse_actors=_boolean(table, "search", "reuse_actors"),
        startup_trials=_integer(table, "search", "startup_trials", minimum=0),
        storage=storage,
    )


def _parse_scheduler(table: dict[str, Any]) -> SchedulerSection:
    kind = _string(table, "scheduler", "type")
    if kind not in ("asha", "fifo"):
        raise SpecError(f'scheduler.type must be "asha" or "fifo"; got {_show(kind)}')
    factor = _number(table, "scheduler", "reduction_factor")
    if factor <= 1:
        raise SpecError(f"scheduler.reduction_factor must be > 1; got {factor}")
    return SchedulerSection(kind, _integer(table, "scheduler", "grace_period", minimum=1), factor)


def _parse_training(table: dict[str, Any]) -> TrainingSection:
    grad_clip = _number(table, "training", "grad_clip")
    weight_decay = _number(table, "training", "weight_decay")
    if grad_clip < 0:
        raise SpecError(f"training.grad_clip must be ≥ 0 (0: no clipping); got {grad_clip}")
    if weight_decay < 0:
        raise SpecError(f"training.weight_decay must be ≥ 0; got {weight_decay}")
    return TrainingSection(
        max_epochs=_integer(table, "training", "max_epochs", minimum=1),
        patience=_integer(table, "training", "patience", minimum=1),
        batch_size=_integer(table, "training", "batch_size", minimum=1),
        grad_clip=grad_clip,
        weight_decay=weight_decay,
    )


def _parse_resources(table: dict[str, Any]) -> ResourcesSection:
    cpu = _number(table, "resources", "cpu")
    if cpu <= 0:
        raise SpecError(f"resources.cpu must be > 0 (CPUs per trial); got {cpu}")
    gpu = table["gpu"]
    if isinstance(gpu, str):
        if gpu != AUTO:
            raise SpecError(f'resources.gpu must be a number ≥ 0 or "auto"; got {_show(gpu)}')
    else:
        gpu = _number(table, "resources", "gpu")
        if gpu < 0:
            raise SpecError(f"resources.gpu must be ≥ 0 (GPUs per trial, e.g. 0.25); got {gpu}")
        if gpu > 1 and gpu != int(gpu):
            raise SpecError(f"resources.gpu above 1 must be a whole number of GPUs; got {gpu}")
    return ResourcesSection(cpu=cpu, gpu=gpu)


def _parse_space(table: dict[str, Any], base: Space, limits: dict, section: str) -> Space:
    space = dict(base)
    for name, value in table.items():
        if name not in base:
            raise SpecError(f"unknown key {section}.{name}; accepted hyperparameters: {', '.join(base)}")
        space[name] = _parse_domain(value, base[name], limits[name], f"{section}.{name}")
    return space


def _parse_domain(value: Any, builtin: Domain, limit: tuple, key: str) -> Domain:
    integer = key.rsplit(".", 1)[1] in INTEGER_PARAMS
    if not isinstance(value, dict):
        return Fixed(_check_value(value, integer, limit, key))
    keys = set(value)
    if "choices" in keys:
        extra = keys - {"choices", "default"}
        if extra:
            raise SpecError(f"unknown key {key}.{sorted(extra)[0]}; a choice takes choices and default")
        choices = value["choices"]
        if not isinstance(choices, list) or not choices:
            raise SpecError(f"{key}.choices must be a non-empty list")
        choices = tuple(dict.fromkeys(_check_value(c, integer, limit, f"{key}.choices") for c in choices))
        default = value.get("default", _builtin_default(builtin))
        if default not in choices:
            raise SpecError(f"{key}.default must be one of {list(choices)}; got {_show(default)} (set {key}.default)")
        return Choice(choices, default)
    extra = keys - {"low", "high", "log", "default"}
    if extra:
        raise SpecError(
            f"unknown key {key}.{sorted(extra)[0]}; a range takes low, high, log, default (a choice: choices, default)"
        )
    if not {"low", "high"} <= keys:
        raise SpecError(f"{key} needs both low and high (or choices, or a constant)")
    low = _check_value(value["low"], integer, limit, f"{key}.low")
    high = _check_value(value["high"], integer, limit, f"{key}.high")
    if not low < high:
        raise SpecError(f"{key}.low must be below {key}.high; got low={low}, high={high}")
    log = value.get("log", getattr(builtin, "log", False))
    if not isinstance(log, bool):
        raise SpecError(f"{key}.log must be true or false; got {_show(log)}")
    if log and low <= 0:
        raise SpecError(f"{key}.low must be > 0 for a log-uniform range; got {low}")
    default = value.get("default", _builtin_default(builtin))
    default = _check_value(default, integer, limit, f"{key}.default")
    if not low <= default <= high:
        raise SpecError(f"{key}.default must lie in [{low}, {high}]; got {default} (set {key}.default)")
    if integer:
        return IntRange(int(low), int(high), int(default), log)
    return FloatRange(float(low), float(high), float(default), log)


def _builtin_default(domain: Domain) -> Any:
    return domain.value if isinstance(domain, Fixed) else domain.default


def _check_value(value: Any, integer: bool, limit: tuple, key: str) -> Any:
    lowest, inclusive, highest = limit
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{key} must be a number; got {_show(value)}")
    if integer and not (isinstance(value, int) or float(value).is_integer()):
        raise SpecError(f"{key} must be an integer; got {_show(value)}")
    if not math.isfinite(value) or value < lowest or (value == lowest and not inclusive) or value > highest:
        bound = f"{'≥' if inclusive else '>'} {lowest}" + (f" and ≤ {highest}" if math.isfinite(highest) else "")
        raise SpecError(f"{key} must be {bound}; got {_show(value)}")
    return int(value) if integer else float(value)


def _values(domain: Domain) -> list:
    if isinstance(domain, Fixed):
        return [domain.value]
    if isinstance(domain, Choice):
        return list(domain.choices)
    if isinstance(domain, IntRange):
        return list(range(domain.low, domain.high + 1))
    return []


def _check_heads(space: Space) -> None:
    """Every value of heads must divide every value of hidden_size (H divides M = n)."""
    for name in ("hidden_size", "heads"):
        domain = space[name]
        if isinstance(domain, IntRange) and domain.high - domain.low > 10_000:
            raise SpecError(f"space.{name} spans {domain.high - domain.low + 1} values; give it as choices")
    sizes, heads = _values(space["hidden_size"]), _values(space["heads"])
    if not sizes or not heads:
        raise SpecError("space.hidden_size and space.heads must be choices or constants (heads must divide hidden_size)")
    for size in sizes:
        for head in heads:
            if size % head:
                raise SpecError(
                    f"space.heads value {head} does not divide space.hidden_size value {size} "
                    f"(H must divide M = n); restrict space.heads or space.hidden_size"
                )


def _parse_one_at_a_time(table: dict[str, Any], study: StudySection, space: Space) -> OneAtATimeSection | None:
    if not table:
        return None
    extra = sorted(set(table) - set(_ONE_AT_A_TIME_KEYS), key=str)
    if extra:
        raise SpecError(
            f"unknown key one_at_a_time.{extra[0]}; accepted keys of [one_at_a_time]: {', '.join(_ONE_AT_A_TIME_KEYS)}"
        )
    param = table.get("param", "beta")
    if not isinstance(param, str) or param not in NEURAL_SPACE:
        raise SpecError(f"one_at_a_time.param must be one of {', '.join(NEURAL_SPACE)}; got {_show(param)}")
    values = table.get("values")
    if not isinstance(values, list) or not values:
        raise SpecError("one_at_a_time.values must be a non-empty list of values")
    integer = param in INTEGER_PARAMS
    values = tuple(_check_value(v, integer, _NEURAL_LIMITS[param], "one_at_a_time.values") for v in values)
    if param == "heads":
        for size in _values(space["hidden_size"]):
            for head in values:
                if size % head:
                    raise SpecError(f"one_at_a_time.values: heads {head} does not divide hidden_size {size}")
    base_run = table.get("base_run", "")
    if not isinstance(base_run, str):
        raise SpecError(f"one_at_a_time.base_run must be a path (or empty); got {_show(base_run)}")
    default_variants = [v for v in study.variants if param in variant_params(v)]
    variants = table.get("variants", default_variants)
    if not isinstance(variants, list) or not variants:
        raise SpecError(f"one_at_a_time.variants must be a non-empty list of variants that search {param}")
    for variant in variants:
        if variant not in VARIANTS or param not in variant_params(variant):
            searching = [v for v in VARIANTS if param in variant_params(v)]
            raise SpecError(
                f"one_at_a_time.variants: {_show(variant)} does not search {param} (variants that do: {', '.join(searching)})"
            )
        if not base_run and variant not in study.variants:
            raise SpecError(
                f"one_at_a_time.variants: {_show(variant)} is not in study.variants, so this run has no best "
                f"configuration for it; add it there or set one_at_a_time.base_run to a run that has"
            )
    if param == "beta" and "zero_beta" in variants:
        raise SpecError("one_at_a_time.variants: zero_beta holds β ≡ 0")
    return OneAtATimeSection(param=param, values=values, variants=tuple(dict.fromkeys(variants)), base_run=base_run)


def _parse_testing(table: dict[str, Any], study: StudySection) -> TestingSection:
    fail_variants = _name_list(table, "testing", "fail_variants", study.models)
    numbers = {}
    for key in ("fail_trials", "diverge_trials", "kill_trials"):
        value = table[key]
        if not isinstance(value, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value
        ):
            raise SpecError(f"testing.{key} must be a list of Optuna trial numbers ≥ 0; got {_show(value)}")
        numbers[key] = tuple(value)
    return TestingSection(
        fail_variants=fail_variants, **numbers, kill_epoch=_integer(table, "testing", "kill_epoch", minimum=1)
    )


# --------------------------------------------------------------------------- value helpers


def _show(value: Any, limit: int = 80) -> str:
    """A value as it appears in an error message: its repr, on one line, cut to ``limit`` chars."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _string(table: dict, section: str, key: str) -> str:
    value = table[key]
    if not isinstance(value, str):
        raise SpecError(f"{section}.{key} must be a string; got {_show(value)}")
    return value


def _boolean(table: dict, section: str, key: str) -> bool:
    value = table[key]
    if not isinstance(value, bool):
        raise SpecError(f"{section}.{key} must be true or false; got {_show(value)}")
    return value


def _integer(table: dict, section: str, key: str, minimum: int) -> int:
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{section}.{key} must be an integer ≥ {minimum}; got {_show(value)}")
    if value < minimum:
        raise SpecError(f"{section}.{key} must be ≥ {minimum}; got {value}")
    return value


def _number(table: dict, section: str, key: str) -> float:
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"{section}.{key} must be a finite number; got {_show(value)}")
    return float(value)


def _name_list(table: dict, section: str, key: str, accepted: tuple[str, ...]) -> tuple[str, ...]:
    value = table[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{section}.{key} must be a list of names from {', '.join(accepted)}; got {_show(value)}")
    for name in value:
        if name not in accepted:
            raise SpecError(f"{section}.{key}: unknown name {_show(name)}; accepted: {', '.join(accepted)}")
    return tuple(dict.fromkeys(value))


# --------------------------------------------------------------------------- TOML output


def _domain_to_data(domain: Domain) -> Any:
    if isinstance(domain, Fixed):
        return domain.value
    if isinstance(domain, Choice):
        return {"choices": list(domain.choices), "default": domain.default}
    return {"low": domain.low, "high": domain.high, "log": domain.log, "default": domain.default}


def dump_toml(data: dict[str, Any]) -> str:
    """Write nested tables of scalars, lists and inline tables as TOML (enough for specs)."""
    lines: list[str] = []
    for section, table in data.items():
        if not isinstance(table, dict):
            raise TypeError(f"top-level {section} must be a table")
        lines.append(f"[{section}]")
        for key, value in table.items():
            if value is None:
                continue
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_key(key: str) -> str:
    return key if re.match(r"^[A-Za-z0-9_-]+$", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    """A TOML basic string; control characters (not allowed raw in TOML) as escapes."""
    escapes = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    escaped = "".join(
        escapes.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in text
    )
    return f'"{escaped}"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")

