"""The CTR23 registry and the data layer, checked against the mirror's manifest and by hand."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpo import data as data_layer
from hpo.data import DataUnavailableError, load_task, make_fold
from hpo.tasks import TASKS, UnknownTaskError, get_task, resolve_tasks

REPO = Path(__file__).resolve().parents[1]


def _mirror_tasks(manifest: dict) -> list[dict]:
    return [entry for entry in manifest["tasks"] if entry["status"] != "missing"]


# --------------------------------------------------------------------------- registry


def test_registry_matches_manifest(manifest):
    expected = {entry["task_id"]: entry for entry in manifest["tasks"]}
    assert len(TASKS) == 35 == len(expected)
    for task in TASKS:
        entry = expected[task.task_id]
        assert task.name == entry["name"]
        assert task.dataset_id == entry["dataset_id"]
        assert task.target == entry["target"]
        assert (task.n_rows, task.n_features) == (entry["n_rows"], entry["n_features"])
        procedure = entry["estimation_procedure"]
        assert (task.repeats, task.folds) == (procedure["repeats"], procedure["folds"])


def test_lookup_by_name_case_insensitive_and_by_id():
    assert get_task("ABALONE").task_id == 361234
    assert get_task("  Moneyball ") is get_task("moneyball")
    assert get_task(361618).name == "forest_fires"
    assert get_task("361618").name == "forest_fires"
    assert len(resolve_tasks("ctr23")) == 35
    assert [t.name for t in resolve_tasks(["abalone", "361234", "cars"])] == ["abalone", "cars"]


def test_unknown_name_lists_closest_valid_names():
    with pytest.raises(UnknownTaskError) as error:
        get_task("abalon")
    assert "abalone" in str(error.value)
    with pytest.raises(UnknownTaskError) as error:
        get_task("wine")
    message = str(error.value)
    assert "red_wine" in message and "white_wine" in message
    with pytest.raises(UnknownTaskError, match="task id"):
        get_task(12)


# --------------------------------------------------------------------------- loading


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def test_every_mirror_task_loads_as_the_manifest_says(manifest, mirror):
    before = _tree_digest(mirror)
    for entry in _mirror_tasks(manifest):
        data = load_task(entry["task_id"])
        assert data.X.shape == (entry["n_rows"], entry["n_features"]), entry["name"]
        assert list(data.X.columns) == entry["feature_names"], entry["name"]
        assert data.y.name == entry["target"]
        assert np.isfinite(data.y.to_numpy()).all()
        expected_categorical = set(entry["categorical_features"]) | set(entry["string_features"])
        assert set(data.categorical) == expected_categorical, entry["name"]
        assert data.splits_source == "reconstructed"  # the mirror's split files say so
    assert _tree_digest(mirror) == before, "the mirror must never be written"
    assert len(_mirror_tasks(manifest)) == 30


def test_cache_copy_is_writable_and_reused(mirror):
    task = get_task("airfoil_self_noise")
    load_task(task)
    assert data_layer.availability(task) == "cached"
    task_dir = data_layer.cache_dir() / "org" / "openml" / "www" / "tasks" / str(task.task_id)
    assert os.access(task_dir / "datasplits.arff", os.W_OK)


def test_missing_task_offline_fails_fast_with_instructions(monkeypatch):
    monkeypatch.setattr(data_layer, "openml_reachable", lambda timeout=3.0: False)
    started = time.monotonic()
    with pytest.raises(DataUnavailableError) as error:
        load_task("sarcos")
    assert time.monotonic() - started < 10
    message = str(error.value)
    assert "sarcos" in message and "361254" in message and "data fetch --task sarcos" in message


def test_missing_task_without_patching_fails_fast():
    """The real path (no network here): DNS or connect fails, and we do not retry for minutes."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "hpo", "data", "fetch", "--task", "fps_benchmark"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert time.monotonic() - started < 30  # includes interpreter start and imports
    assert result.returncode == 1
    assert "fps_benchmark" in result.stdout + result.stderr


# --------------------------------------------------------------------------- folds


def test_folds_of_a_repeat_partition_the_rows():
    data = load_task("QSAR_fish_toxicity")  # 10 x 10-fold CV
    for repeat in (0, 3):
        tests = [data.outer_split(fold, repeat)[1] for fold in range(10)]
        all_test = np.concatenate(tests)
        assert np.array_equal(np.sort(all_test), np.arange(data.n_rows))
        for fold in range(10):
            fold_data = make_fold(data, fold, repeat=repeat, seed=7)
            train, val, test = fold_data.train_idx, fold_data.val_idx, fold_data.test_idx
            assert not set(test) & set(train) and not set(test) & set(val) and not set(train) & set(val)
            assert len(train) + len(val) + len(test) == data.n_rows
            assert len(val) == int(np.ceil(0.1 * (len(train) + len(val))))


def test_validation_holdout_is_seeded():
    data = load_task("QSAR_fish_toxicity")
    a, b, c = (make_fold(data, 0, seed=s) for s in (1, 1, 2))
    assert np.array_equal(a.val_idx, b.val_idx)
    assert not np.array_equal(a.val_idx, c.val_idx)
    assert np.array_equal(a.X_val, b.X_val)


def test_fold_out_of_range_is_a_clear_error():
    data = load_task("QSAR_fish_toxicity")
    with pytest.raises(ValueError, match="fold=10 is out of range"):
        make_fold(data, 10)
    with pytest.raises(ValueError, match="repeat=10"):
        make_fold(data, 0, repeat=10)


# --------------------------------------------------------------------------- preprocessing


def test_preprocessing_is_fit_on_training_rows_only():
    data = load_task("concrete_compressive_strength")
    fold = make_fold(data, 0)
    # Independent check: the scaler's statistics are those of the training rows, by hand.
    train_rows = data.X.iloc[fold.train_idx]
    scaler = fold.preprocessor.named_steps["columns"].named_transformers_["numeric"].named_steps["scale"]
    np.testing.assert_allclose(scaler.mean_, train_rows.mean().to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(scaler.scale_, train_rows.std(ddof=0).to_numpy(), rtol=1e-10)
    # Changing a test row (and a validation row) leaves the fitted transformer unchanged.
    tampered = data.X.copy()
    tampered.iloc[fold.test_idx[0], 0] = 1e9
    tampered.iloc[fold.val_idx[0], 1] = -1e9
    altered = data_layer.TaskData(data.task, tampered, data.y, data.categorical, data.splits_source, data.splits)
    refit = make_fold(altered, 0)
    np.testing.assert_array_equal(refit.X_train, fold.X_train)
    changed = refit.preprocessor.named_steps["columns"].named_transformers_["numeric"].named_steps["scale"]
    np.testing.assert_array_equal(changed.mean_, scaler.mean_)
    assert refit.X_test[0, 0] != fold.X_test[0, 0]  # the test row itself is transformed, not used


def test_abalone_sex_is_one_hot_encoded():
    data = load_task("abalone")
    assert data.categorical == ["sex"]
    fold = make_fold(data, 0)
    sex_columns = [i for i, name in enumerate(fold.feature_names) if name.startswith("sex_")]
    assert [fold.feature_names[i] for i in sex_columns] == ["sex_F", "sex_I", "sex_M"]
    block = fold.X_test[:, sex_columns]
    assert set(np.unique(block)) <= {0.0, 1.0}
    np.testing.assert_array_equal(block.sum(axis=1), 1.0)
    raw = fold.preprocessor.transform(data.X.iloc[fold.test_idx])
    assert raw.dtype == np.float32
    np.testing.assert_array_equal(raw, fold.X_test)  # a saved pipeline sees exactly these arrays
    expected = data.X["sex"].iloc[fold.test_idx].to_numpy()
    decoded = np.array(["F", "I", "M"])[block.argmax(axis=1)]
    np.testing.assert_array_equal(decoded, expected)


def test_forest_fires_string_columns_are_categorical():
    data = load_task("forest_fires")
    assert set(data.categorical) == {"month", "day"}
    fold = make_fold(data, 0)
    months = [name for name in fold.feature_names if name.startswith("month_")]
    days = [name for name in fold.feature_names if name.startswith("day_")]
    assert len(days) == 7
    assert set(months) <= {f"month_{m}" for m in ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]}
    assert fold.X_train.shape[1] == 10 + len(months) + len(days)
    assert fold.X_train.dtype == np.float32 and np.isfinite(fold.X_train).all()


def test_unknown_levels_at_test_time_are_ignored():
    data = load_task("abalone")
    fold = make_fold(data, 0)
    row = data.X.iloc[[fold.test_idx[0]]].copy()
    row["sex"] = "never-seen"
    encoded = fold.preprocessor.transform(row)
    sex_columns = [i for i, name in enumerate(fold.feature_names) if name.startswith("sex_")]
    np.testing.assert_array_equal(encoded[0, sex_columns], 0.0)


def test_missing_values_are_imputed_from_training_rows():
    data = load_task("abalone")
    fold = make_fold(data, 0)
    row = data.X.iloc[[fold.test_idx[0]]].copy()
    row["length"] = np.nan
    row["sex"] = np.nan
    encoded = fold.preprocessor.transform(row)
    train = data.X.iloc[fold.train_idx]
    length = list(fold.feature_names).index("length")
    scaler = fold.preprocessor.named_steps["columns"].named_transformers_["numeric"].named_steps["scale"]
    median_scaled = (train["length"].median() - scaler.mean_[0]) / scaler.scale_[0]
    assert encoded[0, length] == pytest.approx(median_scaled, rel=1e-5)
    most_frequent = train["sex"].mode()[0]
    assert encoded[0, fold.feature_names.index(f"sex_{most_frequent}")] == 1.0


def test_target_scaler_has_exact_inverse():
    fold = make_fold(load_task("concrete_compressive_strength"), 0)
    scaler = fold.target_scaler()
    z = scaler.transform(fold.y_test.reshape(-1, 1))
    assert abs(scaler.transform(fold.y_train.reshape(-1, 1)).mean()) < 1e-12
    np.testing.assert_allclose(scaler.inverse_transform(z).ravel(), fold.y_test, rtol=1e-12)


# --------------------------------------------------------------------------- command line


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hpo", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_cli_data_list_shows_all_tasks_and_availability():
    result = _cli("data", "list")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()[:6].isdigit()]
    assert len(lines) == 35
    sarcos = next(line for line in lines if " sarcos " in line)
    assert sarcos.endswith("needs network")
    abalone = next(line for line in lines if " abalone " in line)
    assert abalone.split()[-1] in {"cached", "mirror"} and "4177" in abalone


def test_cli_data_show_and_usage_errors():
    result = _cli("data", "show", "forest_fires")
    assert result.returncode == 0, result.stderr
    assert "517 rows x 12 features" in result.stdout and "categorical" in result.stdout
    assert "splits reconstructed" in result.stdout
    bad = _cli("data", "show", "forrest_fires")
    assert bad.returncode == 2 and "forest_fires" in bad.stderr and "Traceback" not in bad.stderr
    assert _cli("data", "frobnicate").returncode == 2


def test_preprocessed_frame_matches_pandas_one_hot():
    """The encoder's output equals an independent pandas get_dummies encoding on train rows."""
    data = load_task("forest_fires")
    fold = make_fold(data, 1)
    train = data.X.iloc[fold.train_idx]
    dummies = pd.get_dummies(train[["month", "day"]], dtype=np.float32)
    ours = pd.DataFrame(fold.X_train, columns=fold.feature_names)[list(dummies.columns)]
    np.testing.assert_array_equal(ours.to_numpy(), dummies.to_numpy())
