"""Input faults, generated: study specs with random keys, types, out-of-range values and missing
fields, and command lines built from random flags and values. Each ends either in a valid spec /
a run handed to the driver, or in a one-line error naming the offending key with exit code 2 —
never in a traceback. The driver itself is replaced by a stub here: what is tested is everything
that happens before a search starts."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import re
import tomllib
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hpo.__main__ import main
from hpo.spec import DEFAULTS, SpecError, StudySpec, apply_override, load_spec, parse_spec
from hpo.tasks import TASKS

BASE = {
    "study": {
        "name": "fuzz",
        "description": "",
        "tasks": ["QSAR_fish_toxicity"],
        "variants": ["ltc_mhn", "ltc"],
        "baselines": ["ridge"],
        "folds": 2,
        "repeat": 0,
        "seeds": [0, 1],
        "validation_fraction": 0.1,
    },
    "search": {"trials": 4, "xgboost_trials": 4, "max_concurrent_trials": 1, "reuse_actors": True, "startup_trials": 2, "storage": ""},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "training": {"max_epochs": 3, "patience": 2, "batch_size": 128, "grad_clip": 0.0, "weight_decay": 0.0},
    "resources": {"cpu": 1, "gpu": 0},
    "failure": {"max_retries": 1},
    "space": {
        "beta": {"low": 0.01, "high": 10.0, "log": True, "default": 0.25},
        "hidden_size": {"choices": [32, 64], "default": 64},
        "unfolds": 6,
    },
    "xgboost_space": {"n_estimators": {"low": 10, "high": 200, "log": True, "default": 100}},
    "one_at_a_time": {"param": "beta", "values": [0.1, 1.0], "variants": ["ltc_mhn"], "base_run": ""},
    "testing": {"fail_variants": [], "fail_trials": [], "diverge_trials": [], "kill_trials": [], "kill_epoch": 1},
}
SECTIONS = list(BASE)
WORDS = [
    "ltc_mhn", "ltc", "zero_beta", "ridge", "xgboost", "asha", "fifo", "auto", "all", "beta", "heads",
    "QSAR_fish_toxicity", "concrete_compressive_strength", "kings_county", "postgresql://u:p@h/db", "",
]
KEYS = sorted({key for table in DEFAULTS.values() for key in table} | {"low", "high", "log", "default", "choices"})

# Values TOML can hold (no None), biased towards the edges and towards names the spec knows.
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-3, max_value=130),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1, max_value=20),
    st.sampled_from(WORDS),
    st.text(max_size=12),
    st.datetimes(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=4),
    ),
    max_leaves=8,
)
new_keys = st.one_of(st.text(min_size=1, max_size=12), st.sampled_from(KEYS))


def _paths(data: dict, prefix: tuple = ()) -> list[tuple]:
    paths = []
    for key, value in data.items():
        paths.append(prefix + (key,))
        if isinstance(value, dict):
            paths.extend(_paths(value, prefix + (key,)))
    return paths


PATHS = _paths(BASE)


@st.composite
def mutated_specs(draw):
    """The base spec with one mutation; returns (raw spec, the path mutated, kind of mutation)."""
    raw = copy.deepcopy(BASE)
    kind = draw(st.sampled_from(["set", "set", "set", "delete", "add_key", "add_section"]))
    if kind == "add_section":
        name = draw(new_keys)
        assume(name not in raw)
        raw[name] = draw(st.one_of(values, st.dictionaries(new_keys, values, max_size=2)))
        return raw, (name,), kind
    path = draw(st.sampled_from(PATHS))
    parent = raw
    for key in path[:-1]:
        parent = parent[key]
    if kind == "set":
        parent[path[-1]] = draw(values)
    elif kind == "delete":
        del parent[path[-1]]
    else:  # add a key beside path
        name = draw(new_keys)
        assume(name not in parent)
        parent[name] = draw(values)
        path = path[:-1] + (name,)
    return raw, path, kind


def _dotted(path: tuple) -> str:
    return ".".join(str(part) for part in path)


def assert_clear(message: str) -> None:
    assert "\n" not in message and "\r" not in message, message
    assert "Traceback" not in message
    assert len(message) < 2000


@settings(max_examples=300, deadline=None)
@given(mutated_specs())
def test_a_mutated_spec_is_valid_or_refused_naming_the_key(case):
    raw, path, kind = case
    try:
        spec = parse_spec(raw, source="fuzz.toml")
    except SpecError as error:
        message = str(error)
        assert_clear(message)
        assert message.startswith("fuzz.toml: ")
        key = _dotted(path[:2])
        if kind in ("add_section", "add_key"):
            # quoted with repr, or printed as is with each non-printable character escaped (one line)
            name = str(path[-1])
            shown = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in name)
            assert repr(name)[1:-1] in message or shown in message, message
        else:
            # the key itself, or, for a value that conflicts with another key, a key of that section
            named = re.findall(r"\b(" + "|".join(SECTIONS) + r")\.", message)
            assert key in message or path[0] in named, (path, message)
        return
    assert isinstance(spec, StudySpec)
    # a valid spec survives its own spec.toml (what resume reads back)
    assert parse_spec(tomllib.loads(spec.to_toml())) == spec


@settings(max_examples=150, deadline=None)
@given(st.lists(mutated_specs(), min_size=2, max_size=4))
def test_several_faults_at_once_still_end_in_one_clear_line(cases):
    raw = copy.deepcopy(BASE)
    for mutated, _, _ in cases:  # merge the mutations of several cases
        for section, table in mutated.items():
            if isinstance(table, dict) and isinstance(raw.get(section), dict):
                raw[section].update(table)
            else:
                raw[section] = table
    try:
        parse_spec(raw)
    except SpecError as error:
        assert_clear(str(error))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_random_text_as_a_spec_file(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("spec") / "random.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load_spec(path)
    except SpecError as error:
        assert_clear(str(error))


def test_unreadable_spec_files_are_refused_in_one_line(tmp_path):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[study]\nname = \"\xff\xfe\"\n")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec(binary)
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path)  # a folder


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_overrides_never_crash(key, value):
    raw = copy.deepcopy(BASE)
    try:
        apply_override(raw, f"{key}={value}")
        parse_spec(raw)
    except SpecError as error:
        assert_clear(str(error))


def test_spec_toml_round_trips_awkward_strings():
    raw = copy.deepcopy(BASE)
    raw["study"]["description"] = 'tab\tquote" back\\ bell\x07 nul\x00 del\x7f é ≥ \U0001f600'
    raw["search"]["storage"] = "sqlite:///file:/tmp/a b.db?mode=rwc&uri=true"
    spec = parse_spec(raw)
    assert parse_spec(tomllib.loads(spec.to_toml())) == spec


# --------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A valid spec file, an existing run directory and a runs folder."""
    root = tmp_path_factory.mktemp("cli")
    spec_file = root / "spec.toml"
    spec_file.write_text('[study]\ntasks = ["QSAR_fish_toxicity"]\nfolds = 1\n[training]\nmax_epochs = 2\n[scheduler]\ngrace_period = 1\n')
    run_dir = root / "runs" / "existing"
    run_dir.mkdir(parents=True)
    (run_dir / "spec.toml").write_text(parse_spec(tomllib.loads(spec_file.read_text())).to_toml())
    (root / "a_file").write_text("not a folder")
    return root


text_values = st.one_of(
    st.sampled_from(["0", "1", "2", "-1", "0.25", "nan", "inf", "-inf", "1e400", "auto", "abc", "", " ", "²", "３"]),
    st.sampled_from([task.name for task in TASKS[:5]] + ["361621", "99999999", "9" * 30]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=15),
)
set_items = st.builds(
    lambda section, key, value: f"{section}.{key}={value}",
    st.sampled_from(SECTIONS + ["nope"]),
    st.sampled_from(KEYS + ["nope"]),
    st.one_of(text_values, st.sampled_from(['"x"', "[1, 2]", "{ low = 1 }", "true", '"ltc"', '["ltc_mhn"]'])),
)
RAY_FLAGS = {"--num-cpus": text_values, "--dashboard-host": text_values, "--address": st.just("127.0.0.1:1")}
FLAGS = {
    "tune": {
        "--task": text_values, "--variant": st.one_of(text_values, st.sampled_from(["ltc", "xgboost", "ridge"])),
        "--trials": text_values, "--folds": text_values, "--seeds": text_values, "--epochs": text_values,
        "--patience": text_values, "--cpu": text_values, "--gpu": text_values, "--concurrency": text_values,
        "--storage": text_values, "--name": text_values, "--set": set_items, **RAY_FLAGS,
    },
    "sweep": {"--name": text_values, "--set": set_items, **RAY_FLAGS},
    "resume": {"--storage": st.one_of(text_values, st.just("postgresql://u:secret@h/db")), **RAY_FLAGS},
    "status": {"--watch": text_values},
}
SWITCHES = ["--dashboard", "--no-dashboard-auth", "-q", "-v"]


@st.composite
def command_lines(draw, workspace):
    command = draw(st.sampled_from(list(FLAGS)))
    argv = [command]
    if command == "sweep":
        argv.append(draw(st.sampled_from([str(workspace / "spec.toml"), str(workspace / "missing.toml"), str(workspace), "x.toml"])))
    elif command in ("resume", "status"):
        argv.append(draw(st.sampled_from([str(workspace / "runs" / "existing"), str(workspace / "missing"), str(workspace / "a_file")])))
    if command == "tune" and draw(st.booleans()):
        argv += ["--task", draw(st.sampled_from(["QSAR_fish_toxicity", "361621", "concrete_compressive_strength"]))]
    for flag in draw(st.lists(st.sampled_from(list(FLAGS[command])), max_size=5)):
        argv += [flag, draw(FLAGS[command][flag])]
    if command != "status":
        argv += draw(st.lists(st.sampled_from(SWITCHES), max_size=2, unique=True))
        if draw(st.booleans()):
            argv += ["--runs-dir", draw(st.sampled_from([str(workspace / "runs"), str(workspace / "a_file"), str(workspace / "a_file" / "x")]))]
    return argv


def run_cli(argv: list[str]) -> tuple[int, str, str, list]:
    """Run ``python -m hpo`` in-process with the driver replaced by a stub that records its calls."""
    from hpo.sweep import SweepSummary

    calls = []

    def driver(spec, run_dir, **kwargs):
        calls.append((spec, run_dir, kwargs))
        return SweepSummary(run_dir.root, 0)

    out, err = io.StringIO(), io.StringIO()
    with mock.patch("hpo.sweep.run", driver), mock.patch("time.sleep", side_effect=KeyboardInterrupt):
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit:  # argparse's own usage errors
                code = exit.code
    return code, out.getvalue(), err.getvalue(), calls


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_command_lines_end_cleanly(workspace, data):
    argv = data.draw(command_lines(workspace))
    code, out, err, calls = run_cli(argv)
    assert "Traceback" not in err and "Traceback" not in out
    if code == 2:
        lines = err.strip().splitlines()
        assert lines, argv
        if lines[-1].startswith("python -m hpo"):  # argparse: usage, then one error line
            assert ": error: " in lines[-1]
        else:
            assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
        assert not calls
    else:
        assert code == 0, (argv, code, err)
        assert calls or argv[0] == "status"
    for spec, _, kwargs in calls:  # what reached the driver is valid
        assert isinstance(spec, StudySpec)
        assert kwargs["num_cpus"] is None or kwargs["num_cpus"] >= 1
    assert "secret" not in err + out


@pytest.mark.parametrize(
    "argv, key",
    [
        (["tune", "--task", "QSAR_fish_toxicity", "--trials", "0"], "search.trials"),
        (["tune", "--task", "QSAR_fish_toxicity", "--gpu", "nan"], "resources.gpu"),
        (["tune", "--task", "QSAR_fish_toxicity", "--cpu", "-1"], "resources.cpu"),
        (["tune", "--task", "²"], "--task"),
        (["tune", "--task", "QSAR_fish_toxicity", "--set", "failure.max_retries=-1"], "failure.max_retries"),
        (["tune", "--task", "QSAR_fish_toxicity", "--set", "training.epochs=3"], "training.epochs"),
        (["tune", "--task", "QSAR_fish_toxicity", "--num-cpus", "0"], "--num-cpus"),
        (["status", "RUN", "--watch", "inf"], "--watch"),
        (["sweep", "SPEC", "--runs-dir", "FILE/x"], "--runs-dir"),
        (["sweep", "SPEC", "--set", "testing.kill_epoch=0"], "testing.kill_epoch"),
    ],
)
def test_named_errors(workspace, argv, key):
    replace = {"RUN": str(workspace / "runs" / "existing"), "SPEC": str(workspace / "spec.toml"), "FILE": str(workspace / "a_file")}
    argv = [replace.get(a, a.replace("FILE", str(workspace / "a_file"))) for a in argv]
    code, out, err, calls = run_cli(argv)
    assert code == 2 and not calls
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ") and key in line, line


def test_a_valid_command_reaches_the_driver_with_its_settings(workspace):
    code, _, err, calls = run_cli(
        ["tune", "--task", "361621", "--variant", "ltc", "--trials", "3", "--epochs", "2", "--dashboard-host", "0.0.0.0",
         "--no-dashboard-auth", "--runs-dir", str(workspace / "runs"), "--name", "ok", "--num-cpus", "2"]
    )
    assert code == 0, err
    ((spec, run_dir, kwargs),) = calls
    assert spec.study.tasks == ("QSAR_fish_toxicity",) and spec.study.variants == ("ltc",)
    assert spec.search.trials == 3 and spec.training.max_epochs == 2 and spec.scheduler.grace_period == 2
    assert kwargs["dashboard"] and kwargs["dashboard_host"] == "0.0.0.0" and kwargs["dashboard_auth"] is False
    assert run_dir.root == (workspace / "runs" / "ok").resolve()
