"""The rows a saved model is analysed on: its network, preprocessed inputs and standardised targets.

This is the only place where analysis loads task data (through ``hpo.data``) and saved models
(through ``model.load_model``); tests of the landscape pass arrays directly instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROW_SETS = ("train", "test")


@dataclass
class NetworkRows:
    """A trained network and the rows to evaluate its loss on (targets standardised as in training)."""

    network: object
    inputs: np.ndarray
    targets: np.ndarray
    rows: str
    row_ids: np.ndarray
    prediction_gap: float
    """max |network output × scale + mean − pipeline.predict| on these rows: 0 up to float error."""


def load_network_rows(
    model_path: Path | str,
    task: str,
    fold: int,
    repeat: int = 0,
    rows: str = "train",
    max_rows: int = 1024,
    sample_seed: int = 0,
) -> NetworkRows:
    """Load a saved Pipeline(preprocessor, LiquidHopfieldRegressor) and rows of its outer fold.

    ``rows="train"`` takes the outer training part (the rows the model was fit on, its early-stopping
    holdout included) — the objective whose minimum the landscape examines; ``"test"`` the outer
    test part. At most ``max_rows`` rows, drawn without replacement with ``sample_seed`` (the same
    rows for every variant of a task and fold).
    """
    if rows not in ROW_SETS:
        raise ValueError(f"rows={rows!r}: expected one of {', '.join(ROW_SETS)}")
    if not isinstance(max_rows, int) or max_rows < 2:
        raise ValueError(f"max_rows={max_rows!r}: use an integer ≥ 2")
    from hpo.data import load_task
    from model import load_model

    pipeline, _ = load_model(model_path)
    steps = getattr(pipeline, "steps", None)
    if not steps:
        raise ValueError(f"{model_path} holds a bare estimator; expected Pipeline(preprocessor, estimator)")
    estimator = steps[-1][1]
    network = getattr(estimator, "network_", None)
    if network is None:
        raise ValueError(f"{model_path} holds no trained torch network (network_): not a neural variant")
    data = load_task(task)
    train_idx, test_idx = data.outer_split(fold, repeat)
    index = np.asarray(train_idx if rows == "train" else test_idx)
    if index.size > max_rows:
        index = np.sort(np.random.default_rng(sample_seed).choice(index, size=max_rows, replace=False))
    frame = data.X.iloc[index]
    transformed = pipeline[:-1].transform(frame)
    if hasattr(transformed, "toarray"):
        transformed = transformed.toarray()
    inputs = np.asarray(transformed, dtype=np.float32)
    y = data.y.iloc[index].to_numpy(dtype=np.float64)
    targets = (y - estimator.target_mean_) / estimator.target_scale_
    import torch

    network.eval()
    with torch.no_grad():
        raw = network(torch.as_tensor(inputs)).double().numpy().reshape(-1)
    gap = float(np.max(np.abs(raw * estimator.target_scale_ + estimator.target_mean_ - pipeline.predict(frame))))
    return NetworkRows(network, inputs, targets.astype(np.float32), rows, index, gap)
