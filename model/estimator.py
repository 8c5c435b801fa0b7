"""scikit-learn estimator around the liquid–memory networks: fit / predict / score on numeric arrays."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ._util import check_int, check_positive
from .network import VARIANTS, LiquidHopfieldNetwork, build_network, resolve_hyperparameters
from .trainer import (
    EpochCallback,
    StateCallback,
    compile_from_environment,
    predict_tensor,
    resolve_device,
    torch_threads,
    train_network,
)

_NETWORK_PARAMS = ("hidden_size", "unfolds", "hopfield_size", "heads", "beta", "alpha", "delta", "feedback")


class LiquidHopfieldRegressor(RegressorMixin, BaseEstimator):
    """Regressor for one liquid–memory ``variant`` (see :data:`model.VARIANTS`).

    Inputs are numeric and already preprocessed (join a preprocessor with a scikit-learn
    Pipeline); targets are standardised internally on the training part and predictions are in
    original units. Early stopping uses ``eval_set`` when given, else a seeded
    ``validation_fraction`` holdout of the rows passed to :meth:`fit`.

    Training runs eagerly through the fused solver kernel; setting the environment variable
    ``LIQUID_MEMORY_COMPILE`` (see :data:`model.trainer.COMPILE_ENVIRONMENT_VARIABLE`) trains
    through ``torch.compile`` instead, without changing any estimator parameter.

    Fitted attributes: ``network_`` (on CPU after unpickling), ``history_`` (one record per epoch:
    epoch, train_loss, val_loss, val_rmse), ``best_epoch_``, ``n_epochs_``, ``target_mean_``,
    ``target_scale_``, ``n_features_in_``.
    """

    def __init__(
        self,
        variant: str = "ltc_mhn",
        hidden_size: int = 64,
        unfolds: int = 6,
        hopfield_size: int = 16,
        heads: int = 4,
        beta: float = 0.25,
        alpha: float = 1.0,
        delta: float = 0.5,
        feedback: bool = True,
        learning_rate: float = 1e-3,
        batch_size: int = 256,
        max_epochs: int = 100,
        patience: int | None = 10,
        validation_fraction: float = 0.1,
        grad_clip: float | None = None,
        weight_decay: float = 0.0,
        device: str = "auto",
        n_threads: int | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.variant = variant
        self.hidden_size = hidden_size
        self.unfolds = unfolds
        self.hopfield_size = hopfield_size
        self.heads = heads
        self.beta = beta
        self.alpha = alpha
        self.delta = delta
        self.feedback = feedback
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.grad_clip = grad_clip
        self.weight_decay = weight_decay
        self.device = device
        self.n_threads = n_threads
        self.random_state = random_state

    # -- fitting -----------------------------------------------------------------------------
    def network_hyperparameters(self) -> dict:
        """The settings passed to :func:`model.build_network`."""
        return {name: getattr(self, name) for name in _NETWORK_PARAMS}

    def _check_settings(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}; got {self.variant!r}")
        resolve_hyperparameters(self.variant, self.network_hyperparameters())
        check_positive("learning_rate", self.learning_rate)
        check_int("batch_size", self.batch_size)
        check_int("max_epochs", self.max_epochs)
        if self.patience is not None:
            check_int("patience", self.patience)
        if self.grad_clip is not None:
            check_positive("grad_clip", self.grad_clip)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        if self.n_threads is not None:
            check_int("n_threads", self.n_threads)
        fraction = self.validation_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ValueError(f"validation_fraction must be a number in (0, 1), got {fraction!r}")

    def _seed(self) -> int:
        if self.random_state is None:
            return int(np.random.default_rng().integers(2**31 - 1))
        if isinstance(self.random_state, (bool, np.bool_)) or not isinstance(self.random_state, (int, np.integer)):
            raise ValueError(f"random_state must be an int or None, got {self.random_state!r}")
        return int(self.random_state)

    def fit(
        self,
        X,
        y,
        eval_set=None,
        epoch_callback: EpochCallback | None = None,
        state_callback: StateCallback | None = None,
        resume_state: dict | None = None,
    ) -> "LiquidHopfieldRegressor":
        """Train a fresh network on (X, y); ``eval_set=(X_val, y_val)`` is used for early stopping.

        ``state_callback`` / ``resume_state`` checkpoint and continue an interrupted fit of the same
        data and settings (see :func:`model.trainer.train_network`).
        """
        self._check_settings()
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        seed = self._seed()
        if eval_set is not None:
            if not (isinstance(eval_set, (tuple, list)) and len(eval_set) == 2):
                raise ValueError("eval_set must be a pair (X_val, y_val)")
            X_val = validate_data(self, eval_set[0], reset=False, dtype=np.float64)
            y_val = np.asarray(eval_set[1], dtype=np.float64).reshape(-1)
            if len(y_val) != len(X_val):
                raise ValueError(f"eval_set has {len(X_val)} rows in X_val but {len(y_val)} in y_val")
            X_train, y_train = X, y
        else:
            X_train, y_train, X_val, y_val = _holdout(X, y, self.validation_fraction, seed)

        self.target_mean_ = float(np.mean(y_train))
        scale = float(np.std(y_train))
        self.target_scale_ = scale if scale > 0 and math.isfinite(scale) else 1.0
        device = resolve_device(self.device)
        compile_mode = compile_from_environment()  # checked before any work

        with torch_threads(self.n_threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = build_network(self.variant, X.shape[1], **self.network_hyperparameters()).to(device)

            def tensor(values: np.ndarray) -> torch.Tensor:
                return torch.as_tensor(np.asarray(values, dtype=np.float32), device=device)

            result = train_network(
                network,
                tensor(X_train),
                tensor(self._standardise(y_train)),
                tensor(X_val),
                tensor(self._standardise(y_val)),
                learning_rate=self.learning_rate,
                batch_size=self.batch_size,
                max_epochs=self.max_epochs,
                patience=self.patience,
                grad_clip=self.grad_clip,
                weight_decay=self.weight_decay,
                seed=seed,
                epoch_callback=epoch_callback,
                target_scale=self.target_scale_,
                compile=compile_mode,
                state_callback=state_callback,
                resume_state=resume_state,
            )
        self.network_ = network
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.n_epochs_ = result.n_epochs
        return self

    def _standardise(self, y: np.ndarray) -> np.ndarray:
        return (y - self.target_mean_) / self.target_scale_

    # -- prediction --------------------------------------------------------------------------
    def predict(self, X) -> np.ndarray:
        """Predictions in original target units (float64, one per row)."""
        check_is_fitted(self, "network_")
        X = validate_data(self, X, reset=False, dtype=np.float32)
        device = next(self.network_.parameters()).device
        with torch_threads(self.n_threads):
            outputs = predict_tensor(self.network_, torch.as_tensor(X, device=device))
        return outputs.double().cpu().numpy() * self.target_scale_ + self.target_mean_

    # -- pickling: always store CPU tensors so a model saved on a GPU reloads anywhere ---------
    def __getstate__(self) -> dict:
        state = super().__getstate__()
        network = state.get("network_")
        if isinstance(network, LiquidHopfieldNetwork) and next(network.parameters()).device.type != "cpu":
            state = dict(state)
            state["network_"] = copy.deepcopy(network).to("cpu")
        return state


def _holdout(X: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """Seeded split into (X_train, y_train, X_val, y_val) with ``fraction`` of rows for validation."""
    n_rows = len(y)
    if n_rows < 2:
        raise ValueError(f"need at least 2 rows to hold out a validation part, got n_samples={n_rows}")
    n_val = min(n_rows - 1, max(1, round(fraction * n_rows)))
    order = np.random.default_rng(seed).permutation(n_rows)
    val, train = order[:n_val], order[n_val:]
    return X[train], y[train], X[val], y[val]


__all__ = ["LiquidHopfieldRegressor"]
