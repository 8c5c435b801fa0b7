"""A fit interrupted after a checkpoint and resumed from it ends exactly where the uninterrupted
fit ends (the reference): same epoch records, same weights, same predictions. This is what lets a
trial whose worker died continue from its last checkpoint instead of starting over."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import model
from model.trainer import TRAINING_STATE_KEYS

SETTINGS = dict(hidden_size=32, hopfield_size=8, heads=2, learning_rate=1e-2, batch_size=64, n_threads=1, random_state=3)


def data(n_rows: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, 4)).astype(np.float32)
    y = X[:, 0] - 2 * X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=n_rows)
    return X[:240], y[:240], X[240:], y[240:]


class Interrupted(Exception):
    pass


def serialise(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def interrupted_fit(X, y, X_val, y_val, stop_after: int, **params) -> bytes:
    """Fit until epoch ``stop_after`` has been checkpointed, then die; return the checkpoint."""
    saved = {}

    def keep(state: dict) -> None:
        saved["bytes"] = serialise(state)  # what a trial writes to its checkpoint folder

    def die(record: dict) -> None:
        if record["epoch"] == stop_after:
            raise Interrupted

    with pytest.raises(Interrupted):
        model.LiquidHopfieldRegressor(**params).fit(X, y, eval_set=(X_val, y_val), epoch_callback=die, state_callback=keep)
    return saved["bytes"]


@pytest.mark.parametrize("variant", ["ltc_mhn", "ltc"])
def test_resumed_fit_equals_the_uninterrupted_fit(variant):
    X, y, X_val, y_val = data()
    params = dict(SETTINGS, variant=variant, max_epochs=6, patience=10)
    reference = model.LiquidHopfieldRegressor(**params).fit(X, y, eval_set=(X_val, y_val))

    checkpoint = interrupted_fit(X, y, X_val, y_val, stop_after=3, **params)
    state = torch.load(io.BytesIO(checkpoint), weights_only=True)
    assert set(state) == set(TRAINING_STATE_KEYS) and state["epoch"] == 3
    epochs = []
    resumed = model.LiquidHopfieldRegressor(**params).fit(
        X, y, eval_set=(X_val, y_val), epoch_callback=lambda r: epochs.append(r["epoch"]), resume_state=state
    )
    assert epochs == [4, 5, 6]  # only the missing epochs ran
    assert resumed.history_ == reference.history_
    assert resumed.best_epoch_ == reference.best_epoch_
    np.testing.assert_array_equal(resumed.predict(X_val), reference.predict(X_val))


def test_resuming_a_fit_that_had_stopped_early_trains_no_further():
    X, y, X_val, y_val = data()
    params = dict(SETTINGS, max_epochs=30, patience=1, learning_rate=0.3)  # stops early
    reference = model.LiquidHopfieldRegressor(**params).fit(X, y, eval_set=(X_val, y_val))
    assert reference.n_epochs_ < 30
    states = []
    model.LiquidHopfieldRegressor(**params).fit(X, y, eval_set=(X_val, y_val), state_callback=lambda s: states.append(serialise(s)))
    last = torch.load(io.BytesIO(states[-1]), weights_only=True)
    ran = []
    resumed = model.LiquidHopfieldRegressor(**params).fit(
        X, y, eval_set=(X_val, y_val), epoch_callback=ran.append, resume_state=last
    )
    assert ran == [] and resumed.history_ == reference.history_
    np.testing.assert_array_equal(resumed.predict(X_val), reference.predict(X_val))


def test_an_incomplete_state_is_refused():
    X, y, X_val, y_val = data()
    with pytest.raises(ValueError, match="resume_state lacks .*optimizer"):
        model.LiquidHopfieldRegressor(**SETTINGS, max_epochs=2).fit(
            X, y, eval_set=(X_val, y_val), resume_state={"epoch": 1, "network": {}}
        )
