"""The CTR23 paper's five baselines as scikit-learn estimators (settings: PROTOCOL.md)."""

from __future__ import annotations

import functools
import operator

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

# The estimators' own libraries are imported where they are used, so `import model` stays light.

from ._util import check_int, check_positive

BASELINES = ("xgboost", "random_forest", "gam", "ridge", "tree")

# XGBoost's own defaults, written out so the first configuration a search evaluates is recorded.
XGBOOST_DEFAULTS: dict[str, object] = {
    "n_estimators": 100,
    "learning_rate": 0.3,  # eta
    "max_depth": 6,
    "subsample": 1.0,
    "colsample_bytree": 1.0,
    "reg_lambda": 1.0,  # lambda
    "reg_alpha": 0.0,  # alpha
    "min_child_weight": 1.0,
}
RIDGE_ALPHAS = tuple(np.logspace(-4, 4, 17))


class SplineGAMRegressor(RegressorMixin, BaseEstimator):
    """pygam LinearGAM with one spline term per feature that has ≥ ``min_distinct`` distinct values
    (``n_splines`` basis functions, ``few_rows_n_splines`` when rows/features < 10) and a linear
    term for every other feature (one-hot columns have two values, so they enter linearly).
    """

    def __init__(
        self,
        n_splines: int = 10,
        few_rows_n_splines: int = 5,
        min_distinct: int = 20,
        lam: float = 0.6,
        max_iter: int = 100,
    ) -> None:
        self.n_splines = n_splines
        self.few_rows_n_splines = few_rows_n_splines
        self.min_distinct = min_distinct
        self.lam = lam
        self.max_iter = max_iter

    def fit(self, X, y) -> "SplineGAMRegressor":
        from pygam import LinearGAM, l, s  # imported here: pygam is slow to import

        check_int("n_splines", self.n_splines, minimum=4)
        check_int("few_rows_n_splines", self.few_rows_n_splines, minimum=4)
        check_int("min_distinct", self.min_distinct, minimum=2)
        check_positive("lam", self.lam, allow_zero=True)
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        n_rows, n_features = X.shape
        self.n_splines_ = self.n_splines if n_rows / n_features >= 10 else self.few_rows_n_splines
        distinct = [len(np.unique(X[:, column])) for column in range(n_features)]
        self.spline_features_ = [c for c in range(n_features) if distinct[c] >= self.min_distinct]
        terms = [
            s(c, n_splines=self.n_splines_, lam=self.lam) if c in self.spline_features_ else l(c, lam=self.lam)
            for c in range(n_features)
        ]
        self.gam_ = LinearGAM(functools.reduce(operator.add, terms), max_iter=self.max_iter).fit(X, y)
        self.n_iter_ = max(1, len(self.gam_.logs_.get("diffs", [])))  # penalised IRLS iterations
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "gam_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return np.asarray(self.gam_.predict(X), dtype=np.float64)


class PrunedTreeRegressor(RegressorMixin, BaseEstimator):
    """DecisionTreeRegressor whose cost-complexity penalty ``ccp_alpha`` is chosen by ``cv``-fold CV.

    Candidates are the geometric means of consecutive penalties on the full tree's pruning path
    (the CART convention), thinned to at most ``max_candidates`` spread over the path, plus 0.
    """

    def __init__(self, cv: int = 10, max_candidates: int = 30, random_state: int | None = 0, n_jobs: int | None = 1):
        self.cv = cv
        self.max_candidates = max_candidates
        self.random_state = random_state
        self.n_jobs = n_jobs

    def candidate_alphas(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Penalties to try: geometric midpoints of the full tree's pruning path, plus 0."""
        from sklearn.tree import DecisionTreeRegressor

        path = DecisionTreeRegressor(random_state=self.random_state).cost_complexity_pruning_path(X, y)
        alphas = np.clip(path.ccp_alphas, 0.0, None)
        middles = np.sqrt(alphas[:-1] * alphas[1:])  # between consecutive subtrees
        candidates = np.unique(np.concatenate([[0.0], middles[middles > 0]]))
        if len(candidates) > self.max_candidates:
            picks = np.unique(np.round(np.linspace(0, len(candidates) - 1, self.max_candidates)).astype(int))
            candidates = candidates[picks]
        return candidates

    def fit(self, X, y) -> "PrunedTreeRegressor":
        from sklearn.model_selection import GridSearchCV, KFold
        from sklearn.tree import DecisionTreeRegressor

        check_int("cv", self.cv, minimum=2)
        check_int("max_candidates", self.max_candidates, minimum=1)
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        if len(y) < 2:
            raise ValueError(f"cross-validating the pruning penalty needs at least 2 rows, got n_samples={len(y)}")
        folds = min(self.cv, len(y))
        search = GridSearchCV(
            DecisionTreeRegressor(random_state=self.random_state),
            {"ccp_alpha": list(self.candidate_alphas(X, y))},
            cv=KFold(folds, shuffle=True, random_state=self.random_state),
            scoring="neg_mean_squared_error",
            n_jobs=self.n_jobs,
        )
        search.fit(X, y)
        self.ccp_alpha_ = float(search.best_params_["ccp_alpha"])
        self.cv_mse_ = float(-search.best_score_)
        self.tree_ = search.best_estimator_
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "tree_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.tree_.predict(X)


def _check_params(name: str, params: dict, accepted: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"{name} does not take {', '.join(unknown)}; accepted: {', '.join(accepted) or 'nothing'}"
        )


def make_xgboost(random_state: int | None = 0, n_jobs: int | None = 1, **params):
    """xgboost.XGBRegressor (hist trees) with :data:`XGBOOST_DEFAULTS` overridden by ``params``."""
    from xgboost import XGBRegressor

    _check_params("xgboost", params, tuple(XGBOOST_DEFAULTS))
    settings = {**XGBOOST_DEFAULTS, **params}
    return XGBRegressor(
        objective="reg:squarederror",
        tree_method="hist",
        random_state=0 if random_state is None else random_state,
        n_jobs=n_jobs,
        **settings,
    )


def make_random_forest(random_state: int | None = 0, n_jobs: int | None = 1, **params):
    """RandomForestRegressor with scikit-learn's defaults and 500 trees."""
    from sklearn.ensemble import RandomForestRegressor

    _check_params("random_forest", params, ("n_estimators",))
    return RandomForestRegressor(
        n_estimators=params.get("n_estimators", 500), random_state=random_state, n_jobs=n_jobs
    )


def make_gam(random_state: int | None = None, n_jobs: int | None = None, **params):
    """SplineGAMRegressor (random_state and n_jobs accepted for uniformity, not used)."""
    _check_params("gam", params, ("n_splines", "few_rows_n_splines", "min_distinct", "lam", "max_iter"))
    return SplineGAMRegressor(**params)


def make_ridge(random_state: int | None = None, n_jobs: int | None = None, **params):
    """RidgeCV over :data:`RIDGE_ALPHAS` (efficient leave-one-out CV; random_state, n_jobs unused)."""
    from sklearn.linear_model import RidgeCV

    _check_params("ridge", params, ("alphas",))
    return RidgeCV(alphas=params.get("alphas", RIDGE_ALPHAS))


def make_tree(random_state: int | None = 0, n_jobs: int | None = 1, **params):
    """PrunedTreeRegressor: ccp_alpha by 10-fold CV."""
    _check_params("tree", params, ("cv", "max_candidates"))
    return PrunedTreeRegressor(random_state=random_state, n_jobs=n_jobs, **params)


BASELINE_FACTORIES = {
    "xgboost": make_xgboost,
    "random_forest": make_random_forest,
    "gam": make_gam,
    "ridge": make_ridge,
    "tree": make_tree,
}

__all__ = [
    "BASELINES",
    "BASELINE_FACTORIES",
    "PrunedTreeRegressor",
    "RIDGE_ALPHAS",
    "SplineGAMRegressor",
    "XGBOOST_DEFAULTS",
]
