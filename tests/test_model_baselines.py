"""The registry, the five baselines, and every model on one real CTR23 task from the mirror."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeRegressor

import model

NEURAL_FAST = dict(hidden_size=32, learning_rate=1e-2, batch_size=128, n_threads=1)


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def synthetic(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """y = 2 x4 + sin(2 x0) + x1² − x2 x3 + noise (as in test_model_training)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, 5))
    y = 2 * X[:, 4] + np.sin(2 * X[:, 0]) + X[:, 1] ** 2 - X[:, 2] * X[:, 3] + 0.1 * rng.normal(size=n_rows)
    return X.astype(np.float32), y


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return 1 - np.sum((y_true - y_pred) ** 2) / np.sum((y_true - y_true.mean()) ** 2)


# --- registry ---------------------------------------------------------------------------------------


def test_registry_names_every_model():
    assert model.BASELINES == ("xgboost", "random_forest", "gam", "ridge", "tree")
    assert model.MODEL_NAMES == model.VARIANTS + model.BASELINES
    assert [model.is_neural(name) for name in model.MODEL_NAMES] == [True] * 5 + [False] * 5
    for name in model.MODEL_NAMES:  # every name takes random_state and n_jobs, so callers treat all alike
        estimator = model.make_model(name, random_state=3, n_jobs=1)
        assert hasattr(estimator, "fit") and hasattr(estimator, "predict") and hasattr(estimator, "get_params")
    neural = model.make_model("fixed_beta", beta=2.0, n_jobs=1)
    assert isinstance(neural, model.LiquidHopfieldRegressor)
    assert (neural.variant, neural.beta, neural.n_threads) == ("fixed_beta", 2.0, 1)
    with pytest.raises(ValueError, match="unknown model name"):
        model.make_model("svm")
    with pytest.raises(ValueError, match="accepted"):
        model.make_model("ltc", hopfield=3)
    with pytest.raises(ValueError, match="accepted"):
        model.make_model("ridge", max_depth=3)
    with pytest.raises(ValueError, match="unknown model name"):
        model.is_neural("svm")


def test_xgboost_takes_the_searched_hyperparameters():
    searched = dict(
        learning_rate=0.05, max_depth=3, subsample=0.8, colsample_bytree=0.7, reg_lambda=2.0,
        reg_alpha=0.1, min_child_weight=3.0, n_estimators=40,
    )
    params = model.make_model("xgboost", **searched, n_jobs=1, random_state=5).get_params()
    assert {key: params[key] for key in searched} == searched
    assert (params["n_jobs"], params["random_state"]) == (1, 5)
    with pytest.raises(ValueError, match="eta"):
        model.make_model("xgboost", eta=0.1)


def test_random_forest_has_500_trees():
    forest = model.make_model("random_forest", n_jobs=2)
    assert forest.n_estimators == 500 and forest.n_jobs == 2


def test_gam_uses_splines_for_many_valued_features_and_linear_terms_otherwise():
    rng = np.random.default_rng(0)
    n_rows = 300
    X = np.column_stack(
        [
            rng.normal(size=n_rows),  # continuous → spline
            rng.integers(0, 2, n_rows),  # one-hot column (2 values) → linear
            rng.integers(0, 5, n_rows),  # 5 levels → linear
            rng.uniform(size=n_rows),  # continuous → spline
        ]
    ).astype(float)
    y = np.sin(2 * X[:, 0]) + X[:, 1] + 0.2 * X[:, 2] + X[:, 3] ** 2 + 0.05 * rng.normal(size=n_rows)
    gam = model.make_model("gam").fit(X, y)
    assert gam.spline_features_ == [0, 3] and gam.n_splines_ == 10 and gam.n_iter_ >= 1  # 300 rows / 4 features ≥ 10
    kinds = [type(term).__name__ for term in gam.gam_.terms if not term.isintercept]
    assert kinds == ["SplineTerm", "LinearTerm", "LinearTerm", "SplineTerm"]
    assert [term.n_coefs for term in gam.gam_.terms if not term.isintercept] == [10, 1, 1, 10]
    assert r2(y, gam.predict(X)) > 0.95

    few = model.make_model("gam").fit(X[:30], y[:30])  # 30 rows / 4 features < 10 → 5 basis functions
    assert few.n_splines_ == 5


def test_tree_penalty_is_chosen_by_ten_fold_cross_validation():
    rng = np.random.default_rng(1)
    X = rng.uniform(-2, 2, size=(400, 3))
    y = np.where(X[:, 0] > 0, 2.0, -1.0) + X[:, 1] + rng.normal(scale=1.0, size=400)
    tree = model.make_model("tree", random_state=0).fit(X, y)
    unpruned = DecisionTreeRegressor(random_state=0).fit(X, y)
    assert tree.ccp_alpha_ > 0 and tree.tree_.get_n_leaves() < unpruned.get_n_leaves() / 5
    # independent check: the chosen penalty's 10-fold CV error is no worse than no pruning's
    folds = KFold(10, shuffle=True, random_state=0)
    unpruned_mse = -cross_val_score(DecisionTreeRegressor(random_state=0), X, y, cv=folds,
                                    scoring="neg_mean_squared_error").mean()
    chosen_mse = -cross_val_score(DecisionTreeRegressor(random_state=0, ccp_alpha=tree.ccp_alpha_), X, y,
                                  cv=folds, scoring="neg_mean_squared_error").mean()
    assert chosen_mse == pytest.approx(tree.cv_mse_) and chosen_mse < unpruned_mse


def test_ridge_chooses_its_penalty_by_cross_validation():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 10))
    y = X @ rng.normal(size=10) + rng.normal(size=200)
    ridge = model.make_model("ridge").fit(X, y)
    assert ridge.alpha_ in model.baselines.RIDGE_ALPHAS and len(model.baselines.RIDGE_ALPHAS) > 10


# Thresholds: the best linear fit of this target reaches R² ≈ 0.54 and the best additive one ≈ 0.87.
BASELINE_R2_THRESHOLDS = {"xgboost": 0.8, "random_forest": 0.7, "gam": 0.75, "ridge": 0.45, "tree": 0.5}


@pytest.mark.parametrize("name", model.BASELINES)
def test_every_baseline_learns_the_synthetic_target(name):
    X, y = synthetic(800, seed=0)
    X_test, y_test = synthetic(1000, seed=1)
    estimator = model.make_model(name, random_state=0, n_jobs=1).fit(X, y)
    assert r2(y_test, estimator.predict(X_test)) > BASELINE_R2_THRESHOLDS[name]


# --- one real CTR23 task ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def concrete_fold(mirror):
    """Outer fold 0 of concrete_compressive_strength (1030 rows, 8 numeric features) from the mirror."""
    from hpo.data import load_task, make_fold

    data = load_task("concrete_compressive_strength")
    return data, make_fold(data, fold=0)


@pytest.mark.parametrize("name", model.MODEL_NAMES)
def test_every_model_beats_the_mean_on_a_ctr23_task_and_survives_save_load(name, concrete_fold, tmp_path: Path):
    data, fold = concrete_fold
    if model.is_neural(name):
        estimator = model.make_model(name, max_epochs=15, patience=5, random_state=0, **NEURAL_FAST)
        estimator.fit(fold.X_train, fold.y_train, eval_set=(fold.X_val, fold.y_val))
    else:
        estimator = model.make_model(name, random_state=0, n_jobs=1).fit(fold.X_fit, fold.y_fit)
    predictions = estimator.predict(fold.X_test)
    assert r2(fold.y_test, predictions) > 0.0  # better than predicting the mean on the outer test part

    # the saved file holds preprocessing and model: raw test rows in, the same predictions out
    pipeline = Pipeline([("preprocess", fold.preprocessor), ("model", estimator)])
    path = model.save_model(pipeline, tmp_path / f"{name}.pt", metadata={"variant": name, "fold": 0})
    loaded, metadata = model.load_model(path)
    assert metadata == {"variant": name, "fold": 0}
    raw_test_rows = data.X.iloc[fold.test_idx]
    np.testing.assert_array_equal(loaded.predict(raw_test_rows), pipeline.predict(raw_test_rows))
    # the preprocessor emits the same float32 arrays the fold holds, so predictions match exactly
    np.testing.assert_array_equal(loaded.predict(raw_test_rows), predictions)
