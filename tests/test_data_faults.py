"""Data faults end in clear errors or documented handling, never in a silently wrong number."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpo import data as data_layer
from hpo.data import DataCorruptError, DataFaultError, TaskData, check_task_data, load_task, make_fold

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def private_cache(tmp_path, monkeypatch, mirror):
    """A cache of this test's own, so corrupting it touches nothing else."""
    monkeypatch.setenv("HPO_OPENML_CACHE", str(tmp_path / "cache"))
    data_layer._load_cached.cache_clear()
    yield tmp_path / "cache"
    data_layer._load_cached.cache_clear()


def _with(data: TaskData, **changes) -> TaskData:
    fields = dict(task=data.task, X=data.X, y=data.y, categorical=data.categorical,
                  splits_source=data.splits_source, splits=data.splits)
    fields.update(changes)
    return TaskData(**fields)


def test_truncated_dataset_file_names_the_file_and_the_fix(private_cache):
    data_layer.ensure_available("concrete_compressive_strength")
    parquet = private_cache / "org/openml/www/datasets/44959/dataset_44959.pq"
    content = parquet.read_bytes()
    parquet.write_bytes(content[: len(content) // 3])
    with pytest.raises(DataCorruptError) as error:
        load_task("concrete_compressive_strength")
    message = str(error.value)
    assert "dataset_44959.pq" in message
    assert "data fetch --task concrete_compressive_strength --refresh" in message
    # The advertised fix works: refresh drops the cached copy and the mirror's is taken again.
    result = subprocess.run(
        [sys.executable, "-m", "hpo", "data", "fetch", "--task", "concrete_compressive_strength", "--refresh"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert load_task("concrete_compressive_strength").X.shape == (1030, 8)


def test_corrupted_split_file_is_a_clear_error(private_cache):
    data_layer.ensure_available("QSAR_fish_toxicity")
    arff = private_cache / "org/openml/www/tasks/361621/datasplits.arff"
    arff.write_text(arff.read_text()[:4000] + "\nGARBAGE,,,\n")
    with pytest.raises((DataCorruptError, DataFaultError)) as error:
        load_task("QSAR_fish_toxicity")
    assert "QSAR_fish_toxicity" in str(error.value)


def test_non_finite_target_is_refused():
    data = load_task("QSAR_fish_toxicity")
    y = data.y.copy()
    y.iloc[5] = np.nan
    with pytest.raises(DataFaultError, match="1 missing or infinite values .first at row 5"):
        check_task_data(_with(data, y=y))
    y.iloc[5] = np.inf
    with pytest.raises(DataFaultError, match="infinite"):
        check_task_data(_with(data, y=y))


def test_constant_target_is_refused():
    data = load_task("QSAR_fish_toxicity")
    with pytest.raises(DataFaultError, match="constant"):
        check_task_data(_with(data, y=data.y * 0 + 3.0))


def test_fewer_rows_than_folds_is_refused():
    data = load_task("QSAR_fish_toxicity")
    tiny = data.X.iloc[:7]
    with pytest.raises(DataFaultError, match="7 rows cannot make 10 folds"):
        check_task_data(_with(data, X=tiny, y=data.y.iloc[:7]))


def test_all_missing_feature_is_dropped_not_imputed_from_nothing():
    data = load_task("QSAR_fish_toxicity")
    X = data.X.copy()
    column = X.columns[0]
    X[column] = np.nan
    fold = make_fold(_with(data, X=X), 0)
    assert column not in fold.feature_names
    assert fold.X_train.shape[1] == data.X.shape[1] - 1
    assert np.isfinite(fold.X_train).all() and np.isfinite(fold.X_test).all()
