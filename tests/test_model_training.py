"""Trainer and LiquidHopfieldRegressor: learning, early stopping, determinism, failures, persistence."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import model
from model.trainer import train_network

FAST = dict(hidden_size=32, learning_rate=1e-2, batch_size=128, n_threads=1)


def synthetic(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """y = 2 x4 + sin(2 x0) + x1² − x2 x3 + noise: additive, interacting and linear parts."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, 5))
    y = 2 * X[:, 4] + np.sin(2 * X[:, 0]) + X[:, 1] ** 2 - X[:, 2] * X[:, 3] + 0.1 * rng.normal(size=n_rows)
    return X.astype(np.float32), y


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return 1 - np.sum((y_true - y_pred) ** 2) / np.sum((y_true - y_true.mean()) ** 2)


@pytest.fixture(scope="module")
def data():
    X, y = synthetic(900, seed=0)
    X_test, y_test = synthetic(1000, seed=1)
    return X[:800], y[:800], X[800:], y[800:], X_test, y_test


@pytest.mark.parametrize("variant", model.VARIANTS)
def test_every_variant_learns_a_nonlinear_target(variant, data):
    X, y, X_val, y_val, X_test, y_test = data
    regressor = model.LiquidHopfieldRegressor(variant=variant, max_epochs=40, patience=8, **FAST)
    regressor.fit(X, y, eval_set=(X_val, y_val))
    # R² ≥ 0.8 where the best linear model reaches about 0.54 (Var 2x4 = 4 of about 7.5)
    assert r2(y_test, regressor.predict(X_test)) > 0.8
    assert regressor.score(X_test, y_test) == pytest.approx(r2(y_test, regressor.predict(X_test)))


def test_same_seed_gives_identical_fits_and_other_seed_differs(data):
    X, y, *_ = data
    fits = [
        model.LiquidHopfieldRegressor(max_epochs=3, random_state=seed, **FAST).fit(X, y) for seed in (7, 7, 8)
    ]
    assert fits[0].history_ == fits[1].history_
    np.testing.assert_array_equal(fits[0].predict(X), fits[1].predict(X))
    assert fits[0].history_ != fits[2].history_


def test_absurd_learning_rate_raises_non_finite_loss_error(data):
    X, y, *_ = data
    regressor = model.LiquidHopfieldRegressor(max_epochs=5, **{**FAST, "learning_rate": 1e12})
    with pytest.raises(model.NonFiniteLossError, match="non-finite"):
        regressor.fit(X, y)
    assert issubclass(model.NonFiniteLossError, FloatingPointError)
    assert issubclass(model.NonFiniteLossError, ArithmeticError)


def test_epoch_callback_receives_records_and_can_stop_training(data):
    X, y, X_val, y_val, *_ = data
    records = []
    regressor = model.LiquidHopfieldRegressor(variant="ltc", max_epochs=4, patience=None, **FAST)
    regressor.fit(X, y, eval_set=(X_val, y_val), epoch_callback=records.append)
    assert [record["epoch"] for record in records] == [1, 2, 3, 4]
    assert records == regressor.history_
    assert all(set(record) == {"epoch", "train_loss", "val_loss", "val_rmse"} for record in records)
    for record in records:  # val_rmse is the validation MSE in original units
        assert record["val_rmse"] == pytest.approx(math.sqrt(record["val_loss"]) * regressor.target_scale_)

    class Prune(Exception):
        pass

    seen = []

    def prune_after_two(record: dict) -> None:
        seen.append(record["epoch"])
        if record["epoch"] == 2:
            raise Prune

    with pytest.raises(Prune):
        model.LiquidHopfieldRegressor(variant="ltc", max_epochs=10, **FAST).fit(X, y, epoch_callback=prune_after_two)
    assert seen == [1, 2]


def test_early_stopping_restores_best_weights(data):
    X, y, X_val, y_val, *_ = data
    rng = np.random.default_rng(5)
    y_noisy = y[:150] + 3 * rng.normal(size=150)  # few noisy rows: validation loss turns up early
    regressor = model.LiquidHopfieldRegressor(
        variant="ltc", max_epochs=150, patience=4, **{**FAST, "learning_rate": 3e-2, "batch_size": 32}
    )
    regressor.fit(X[:150], y_noisy, eval_set=(X_val, y_val))
    assert regressor.n_epochs_ < 150, "expected early stopping"
    assert regressor.n_epochs_ == regressor.best_epoch_ + 4
    best = regressor.history_[regressor.best_epoch_ - 1]
    assert best["val_loss"] == min(record["val_loss"] for record in regressor.history_)
    rmse = float(np.sqrt(np.mean((regressor.predict(X_val) - y_val) ** 2)))
    assert rmse == pytest.approx(best["val_rmse"], rel=1e-4)  # the restored weights are the best epoch's
    # targets are standardised on the training rows only
    assert regressor.target_mean_ == pytest.approx(y_noisy.mean())
    assert regressor.target_scale_ == pytest.approx(y_noisy.std())


def test_trainer_uses_every_row_once_per_epoch_in_batches_of_256():
    class Recorder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3, 1)
            self.batches: list[int] = []

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            if self.training:
                self.batches.append(len(inputs))
            return self.linear(inputs).squeeze(-1)

    network = Recorder()
    X, y = torch.randn(1000, 3), torch.randn(1000)
    result = train_network(network, X, y, X[:100], y[:100], max_epochs=2, patience=None)
    assert network.batches == [256, 256, 256, 232] * 2
    assert result.n_epochs == 2 and result.best_epoch in (1, 2)


def test_n_threads_is_honoured_and_restored(data):
    X, y, *_ = data
    before = torch.get_num_threads()
    seen = []
    regressor = model.LiquidHopfieldRegressor(variant="ltc", max_epochs=1, **FAST)
    regressor.fit(X, y, epoch_callback=lambda record: seen.append(torch.get_num_threads()))
    assert seen == [1]
    assert torch.get_num_threads() == before


def test_device_choice(data):
    X, y, *_ = data
    assert model.trainer.resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert model.trainer.resolve_device("auto").type == expected
    regressor = model.LiquidHopfieldRegressor(variant="ltc", max_epochs=1, device="cuda", **FAST)
    if torch.cuda.is_available():
        regressor.fit(X, y)
        assert next(regressor.network_.parameters()).is_cuda
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            regressor.fit(X, y)


def test_scikit_learn_estimator_contract(data):
    X, y, X_val, y_val, *_ = data
    regressor = model.LiquidHopfieldRegressor(variant="zero_beta", heads=2, max_epochs=2, **FAST)
    params = regressor.get_params()
    assert set(params) == {
        "variant", "hidden_size", "unfolds", "hopfield_size", "heads", "beta", "alpha", "delta", "feedback",
        "learning_rate", "batch_size", "max_epochs", "patience", "validation_fraction", "grad_clip",
        "weight_decay", "device", "n_threads", "random_state",
    }
    copy = clone(regressor).set_params(unfolds=3, grad_clip=1.0, weight_decay=1e-4)
    assert copy.get_params()["unfolds"] == 3 and regressor.unfolds == 6
    with pytest.raises(NotFittedError):
        regressor.predict(X)
    pipeline = make_pipeline(StandardScaler(), copy).fit(X, y)
    fitted = pipeline[-1]
    assert fitted.n_features_in_ == 5 and fitted.n_epochs_ == 2 and fitted.network_.unfolds == 3
    assert isinstance(pipeline.score(X_val, y_val), float)
    with pytest.raises(ValueError, match="features"):
        fitted.predict(X[:, :4])


@pytest.mark.parametrize(
    "params, name",
    [
        ({"heads": 3}, "heads"),
        ({"variant": "lstm"}, "variant"),
        ({"validation_fraction": 1.5}, "validation_fraction"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"device": "tpu"}, "device"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_settings_fail_before_training_with_the_argument_named(params, name, data):
    X, y, *_ = data
    with pytest.raises(ValueError, match=name):
        model.LiquidHopfieldRegressor(**{**FAST, **params}).fit(X, y)


def test_save_and_load_round_trip_gives_identical_predictions(tmp_path: Path, data):
    X, y, _, _, X_test, _ = data
    pipeline = make_pipeline(StandardScaler(), model.LiquidHopfieldRegressor(max_epochs=2, **FAST))
    pipeline.fit(X, y)
    path = model.save_model(pipeline, tmp_path / "models" / "fold0_seed0.pt", metadata={"task": "synthetic"})
    assert path.is_file() and list(path.parent.iterdir()) == [path]  # one file
    loaded, metadata = model.load_model(path)
    assert metadata == {"task": "synthetic"}
    np.testing.assert_array_equal(loaded.predict(X_test), pipeline.predict(X_test))
    estimator = loaded[-1]
    assert estimator.target_mean_ == pipeline[-1].target_mean_ and estimator.history_ == pipeline[-1].history_
    assert all(parameter.device.type == "cpu" for parameter in estimator.network_.parameters())


def test_load_model_rejects_other_files(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        model.load_model(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="save_model"):
        model.load_model(tmp_path / "other.pt")
