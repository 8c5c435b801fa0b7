"""Study specs: shipped files parse, defaults follow MODEL.md §6, bad files are refused naming the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from hpo.plan import build_plan
from hpo.space import Choice, FloatRange, IntRange, default_point, space_for
from hpo.spec import SpecError, apply_override, load_spec, parse_spec

STUDIES = Path(__file__).resolve().parents[1] / "studies"

# MODEL.md §1-4 defaults, written out by hand (the first configuration every search evaluates).
MODEL_MD_DEFAULTS = {
    "beta": 0.25,
    "hopfield_size": 16,
    "heads": 4,
    "alpha": 1.0,
    "delta": 0.5,
    "learning_rate": 1e-3,
    "hidden_size": 64,
    "unfolds": 6,
}

MINIMAL = {"study": {"tasks": ["concrete_compressive_strength"]}}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["smoke.toml", "ctr23.toml", "beta_sensitivity.toml"])
def test_shipped_specs_parse(name):
    spec = load_spec(STUDIES / name)
    assert build_plan(spec), f"{name} plans no work"


def test_ctr23_is_the_paper_protocol():
    spec = load_spec(STUDIES / "ctr23.toml")
    assert len(spec.study.tasks) == 35
    assert spec.study.variants == ("ltc_mhn", "ltc", "zero_beta", "fixed_beta", "matched_ltc")
    assert set(spec.study.baselines) == {"xgboost", "random_forest", "gam", "ridge", "tree"}
    assert spec.study.folds == (0, 1, 2, 3, 4)


def test_beta_sensitivity_varies_beta_only():
    spec = load_spec(STUDIES / "beta_sensitivity.toml")
    assert spec.one_at_a_time is not None and spec.one_at_a_time.param == "beta"
    oat = [item for item in build_plan(spec) if item.kind == "one_at_a_time"]
    assert oat and {item.oat_param for item in oat} == {"beta"}
    assert {item.oat_value for item in oat} == set(spec.one_at_a_time.values)


def test_smoke_is_small():
    spec = load_spec(STUDIES / "smoke.toml")
    assert len(spec.study.tasks) == 2
    assert spec.search.trials <= 6 and spec.training.max_epochs <= 5


def test_defaults_follow_model_md():
    spec = parse_spec(MINIMAL)
    assert default_point(space_for("ltc_mhn", spec.space, spec.xgboost_space)) == MODEL_MD_DEFAULTS
    space = spec.space
    assert space["beta"] == FloatRange(1e-2, 1e1, 0.25, log=True)
    assert space["hopfield_size"] == Choice((4, 8, 16, 32, 64), 16)
    assert space["heads"] == Choice((1, 2, 4, 8), 4)
    assert space["alpha"] == FloatRange(0.25, 2.0, 1.0, log=False)
    assert space["delta"] == FloatRange(1e-2, 2.0, 0.5, log=True)
    assert space["learning_rate"] == FloatRange(3e-4, 3e-2, 1e-3, log=True)
    assert space["hidden_size"] == Choice((32, 64, 128), 64)
    assert space["unfolds"] == IntRange(2, 8, 6)
    # ltc has no memory parameters; zero_beta has no β to search
    assert set(space_for("ltc", space, spec.xgboost_space)) == {"learning_rate", "hidden_size", "unfolds"}
    assert "beta" not in space_for("zero_beta", space, spec.xgboost_space)


def test_resolved_spec_round_trips():
    raw = {
        **MINIMAL,
        "search": {"trials": 7},
        "space": {"beta": {"low": 0.05, "high": 5.0}, "unfolds": 4, "hidden_size": {"choices": [32, 64]}},
        "one_at_a_time": {"values": [0.1, 1.0]},
    }
    spec = parse_spec(raw)
    again = parse_spec(tomllib.loads(spec.to_toml()))
    assert again == spec
    assert spec.search.xgboost_trials == 7  # defaults to trials


def test_overrides_use_toml_values():
    raw = dict(MINIMAL)
    apply_override(raw, "search.trials=3")
    apply_override(raw, 'resources.gpu="auto"')
    apply_override(raw, "study.folds=[1, 3]")
    spec = parse_spec(raw)
    assert spec.search.trials == 3 and spec.resources.gpu == "auto" and spec.study.folds == (1, 3)


def test_tasks_all_means_the_suite():
    spec = parse_spec({"study": {"tasks": "all"}})
    assert len(spec.study.tasks) == 35


@pytest.mark.parametrize(
    "text, key",
    [
        ("[serch]\ntrials = 4", "serch"),
        ("[search]\ntrails = 4", "search.trails"),
        ("[search]\ntrials = 0", "search.trials"),
        ("[search]\ntrials = 2.5", "search.trials"),
        ('[search]\nstorage = "journal.log"', "search.storage"),
        ('[study]\ntasks = ["not_a_task"]', "study.tasks"),
        ('[study]\nvariants = ["lstm"]', "study.variants"),
        ('[study]\nbaselines = ["svm"]', "study.baselines"),
        ("[study]\nfolds = 11", "study.folds"),
        ("[study]\nfolds = 0", "study.folds"),
        ("[study]\nseeds = [-1]", "study.seeds"),
        ("[study]\nvalidation_fraction = 0.9", "study.validation_fraction"),
        ('[study]\nname = "a b"', "study.name"),
        ("[resources]\ngpu = -1", "resources.gpu"),
        ('[resources]\ngpu = "many"', "resources.gpu"),
        ("[resources]\ncpu = 0", "resources.cpu"),
        ("[training]\nmax_epochs = 0", "training.max_epochs"),
        ("[training]\nmax_epochs = 3\n[scheduler]\ngrace_period = 5", "scheduler.grace_period"),
        ('[scheduler]\ntype = "hyperband"', "scheduler.type"),
        ("[scheduler]\nreduction_factor = 1", "scheduler.reduction_factor"),
        ("[space]\nbeta = { low = 1.0, high = 0.1 }", "space.beta"),
        ("[space]\nbeta = { low = 0.0, high = 1.0, log = true }", "space.beta.low"),
        ("[space]\nbeta = { low = 1.0, high = 2.0 }", "space.beta.default"),
        ("[space]\nbeta = { low = 0.1, high = 2.0, step = 0.1 }", "space.beta.step"),
        ("[space]\nheads = { choices = [3] }", "space.heads"),
        ("[space]\nheads = { choices = [1, 2, 4, 8, 16], default = 4 }\nhidden_size = { choices = [24] }", "space.hidden_size"),
        ("[space]\nhopfield_size = 2.5", "space.hopfield_size"),
        ("[space]\nwidth = 64", "space.width"),
        ("[space]\nalpha = -1.0", "space.alpha"),
        ("[xgboost_space]\nsubsample = { low = 0.5, high = 1.5 }", "xgboost_space.subsample.high"),
        ('[one_at_a_time]\nvalues = [0.1]\nvariants = ["ltc"]', "one_at_a_time.variants"),
        ("[one_at_a_time]\nvalues = []", "one_at_a_time.values"),
        ('[one_at_a_time]\nparam = "gamma"\nvalues = [1.0]', "one_at_a_time.param"),
        ("[one_at_a_time]\nvalues = [0.1]\nbase = 1", "one_at_a_time.base"),
        ('[testing]\nfail_variants = ["gam"]', "testing.fail_variants"),
    ],
)
def test_bad_specs_name_the_key(tmp_path, text, key):
    base = '[study]\ntasks = ["concrete_compressive_strength"]\n'
    if "tasks =" in text:
        body = text
    elif text.startswith("[study]"):
        body = text.replace("[study]", base, 1)
    else:
        body = base + text
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path, body))
    assert key in str(caught.value)


def test_invalid_toml_is_refused(tmp_path):
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(write(tmp_path, "[study\ntasks = 1"))


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")


def test_cli_refuses_a_bad_spec_before_ray(tmp_path, capsys):
    from hpo.__main__ import main

    path = write(tmp_path, '[study]\ntasks = ["concrete_compressive_strength"]\n[search]\ntrails = 4\n')
    code = main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2
    assert "search.trails" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
