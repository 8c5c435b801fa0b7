"""Save a fitted model (estimator or preprocessing Pipeline) to one file and load it back."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import sklearn
import torch

FORMAT = "liquid-memory-hpo/model"
FORMAT_VERSION = 1


def save_model(obj, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``obj`` (a fitted estimator or Pipeline, with its weights, hyperparameters,
    preprocessing state and target scaler) and ``metadata`` to the single file ``path``.

    Neural estimators pickle their network as CPU tensors, so the file reloads without a GPU.
    """
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "object": obj,
        "metadata": dict(metadata or {}),
        "versions": {
            "torch": torch.__version__,
            "scikit-learn": sklearn.__version__,
            "python": platform.python_version(),
        },
    }
    temporary = path.with_name(path.name + ".partial")
    torch.save(payload, temporary)
    os.replace(temporary, path)  # never leave a half-written model under the final name
    return path


def load_model(path: str | os.PathLike):
    """Return ``(obj, metadata)`` from a file written by :func:`save_model` (tensors on CPU).

    The file is a pickle: load only files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved model at {path}")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} was not written by model.save_model")
    return payload["object"], payload["metadata"]


__all__ = ["load_model", "save_model"]
