"""The trial function in-process, with Ray Tune's session replaced by a recorder: a trial's own
error ends it with one error report (never an exception, so Ray does not retry it), checkpoints
carry the whole training state and a retried trial continues from the last one, and a node that
cannot store checkpoints trains on without them."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from ray import tune

from hpo import trainable
from hpo.estimators import FitSettings
from hpo.space import NEURAL_SPACE, TRIAL_NUMBER_KEY, default_point


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    y = X[:, 0] - X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=200)
    return {"X_train": X[:160], "y_train": y[:160], "X_val": X[160:], "y_val": y[160:]}


CONFIG = {**default_point(NEURAL_SPACE), "hidden_size": 32, "hopfield_size": 8, "heads": 2}


class Session:
    """Stands in for Ray Tune's session: keeps reports and persisted checkpoints."""

    def __init__(self, keep: Path, restore_from: Path | None = None, refuse_checkpoints: bool = False) -> None:
        self.reports: list[dict] = []
        self.checkpoints: list[Path] = []
        self.restore_from = restore_from
        self.refuse_checkpoints = refuse_checkpoints
        self.keep = keep  # where "persisted" checkpoints go

    def report(self, metrics: dict, *, checkpoint=None) -> None:
        if checkpoint is not None:
            if self.refuse_checkpoints:
                raise RuntimeError("Unable to set up cluster storage with the following settings: ...")
            target = self.keep / f"checkpoint_{len(self.checkpoints):06d}"
            shutil.copytree(checkpoint.path, target)
            self.checkpoints.append(target)
        self.reports.append(dict(metrics))

    def get_checkpoint(self):
        return None if self.restore_from is None else tune.Checkpoint.from_directory(str(self.restore_from))

    def run(self, settings: FitSettings, trial_number: int = 0, config: dict | None = None) -> list[dict]:
        context = mock.Mock()
        context.get_node_id.return_value = "node-x"
        with mock.patch.object(tune, "report", self.report), mock.patch.object(tune, "get_checkpoint", self.get_checkpoint), \
                mock.patch("ray.get_runtime_context", return_value=context), mock.patch.object(trainable, "_trial_dir", return_value=None):
            trainable.train_model({**(config or CONFIG), TRIAL_NUMBER_KEY: trial_number}, arrays(), settings)
        return self.reports


def settings(**changes) -> FitSettings:
    base = dict(variant="ltc_mhn", max_epochs=4, patience=4, batch_size=64, seed=1, n_threads=1, checkpoint=True)
    return FitSettings(**{**base, **changes})


def test_a_trial_that_raises_ends_with_one_error_report(tmp_path):
    reports = Session(tmp_path).run(settings(fail_trials=(3,)), trial_number=3)
    (last,) = reports
    assert last[trainable.TRIAL_ERROR_KEY].startswith("InjectedFailure: testing.fail_trials includes trial 3")
    assert math.isnan(last["val_rmse"]) and math.isnan(last["best_val_rmse"])


def test_a_diverging_trial_ends_with_the_non_finite_loss_error(tmp_path):
    reports = Session(tmp_path).run(settings(diverge_trials=(0,)))
    assert "NonFiniteLossError" in reports[-1][trainable.TRIAL_ERROR_KEY]
    assert all(math.isnan(r["val_rmse"]) for r in reports)  # no finite epoch was ever reported


def test_checkpoints_let_a_retried_trial_continue_where_it_stopped(tmp_path):
    first = Session(tmp_path / "first")
    reference = first.run(settings())
    assert [r["epoch"] for r in reference] == [1, 2, 3, 4] and len(first.checkpoints) == 4
    # the worker died after epoch 2 was checkpointed: the retry restores it
    retry = Session(tmp_path / "retry", restore_from=first.checkpoints[1])
    resumed = retry.run(settings())
    assert [r["epoch"] for r in resumed] == [3, 4]
    for got, want in zip(resumed, reference[2:]):
        assert got["val_rmse"] == pytest.approx(want["val_rmse"], rel=1e-9)
        assert got["best_val_rmse"] == pytest.approx(want["best_val_rmse"], rel=1e-9)


def test_an_unreadable_checkpoint_makes_the_trial_start_over(tmp_path, capsys):
    broken = tmp_path / "checkpoint"
    broken.mkdir()
    (broken / trainable.STATE_FILE).write_bytes(b"not a torch file")
    reports = Session(tmp_path / "keep", restore_from=broken).run(settings())
    assert [r["epoch"] for r in reports] == [1, 2, 3, 4]
    assert "cannot read its checkpoint" in capsys.readouterr().out


def test_a_node_that_cannot_store_checkpoints_trains_on_without_them(tmp_path, capsys):
    session = Session(tmp_path, refuse_checkpoints=True)
    reports = session.run(settings())
    assert [r["epoch"] for r in reports] == [1, 2, 3, 4] and not session.checkpoints
    assert not any(trainable.TRIAL_ERROR_KEY in r for r in reports)
    assert capsys.readouterr().out.count("keeps no checkpoints") == 1


def test_without_retries_no_checkpoint_is_written(tmp_path):
    session = Session(tmp_path)
    session.run(settings(checkpoint=False))
    assert not session.checkpoints and len(session.reports) == 4
