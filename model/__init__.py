"""Liquid time-constant networks with modern Hopfield memory for tabular regression.

Knows nothing of Ray, Optuna or the ``hpo`` package: building blocks, a fast trainer, a
scikit-learn estimator, the five CTR23 baselines, a name → factory registry and persistence.
"""

from .baselines import BASELINES, PrunedTreeRegressor, SplineGAMRegressor
from .coupling import AdditiveCoupling
from .estimator import LiquidHopfieldRegressor
from .hopfield import BETA_MODES, HopfieldMemory
from .ltc import LTCCell
from .network import (
    NETWORK_DEFAULTS,
    VARIANTS,
    LiquidHopfieldNetwork,
    RegressionHead,
    build_network,
    ltc_mhn_parameter_count,
    ltc_parameter_count,
    matched_hidden_size,
)
from .persistence import load_model, save_model
from .registry import MODEL_NAMES, is_neural, make_model
from .trainer import NonFiniteLossError, TrainingResult, train_network

__all__ = [
    "AdditiveCoupling",
    "BASELINES",
    "BETA_MODES",
    "HopfieldMemory",
    "LTCCell",
    "LiquidHopfieldNetwork",
    "LiquidHopfieldRegressor",
    "MODEL_NAMES",
    "NETWORK_DEFAULTS",
    "NonFiniteLossError",
    "PrunedTreeRegressor",
    "RegressionHead",
    "SplineGAMRegressor",
    "TrainingResult",
    "VARIANTS",
    "build_network",
    "is_neural",
    "load_model",
    "ltc_mhn_parameter_count",
    "ltc_parameter_count",
    "make_model",
    "matched_hidden_size",
    "save_model",
    "train_network",
]
