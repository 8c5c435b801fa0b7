"""Small synthetic run directories with the contract's layout, for tests and for trying the reports.

Nothing here is a result: the numbers are drawn from a seeded generator so the analyses have
something of the right shape to read (results.parquet, trials.parquet, an Optuna journal written
with Optuna itself, predictions/). Saved models are not written (the landscape needs a real one).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.names import BASELINES

MEMORY_VARIANTS = ("ltc_mhn", "zero_beta", "fixed_beta")


def _distributions(variant: str):
    import optuna.distributions as d

    space = {
        "learning_rate": d.FloatDistribution(3e-4, 3e-2, log=True),
        "hidden_size": d.CategoricalDistribution([32, 64, 128]),
        "unfolds": d.IntDistribution(2, 8),
    }
    if variant in MEMORY_VARIANTS:
        space.update({
            "beta": d.FloatDistribution(1e-2, 1e1, log=True),
            "hopfield_size": d.CategoricalDistribution([4, 8, 16, 32, 64]),
            "alpha": d.FloatDistribution(0.25, 2.0),
            "delta": d.FloatDistribution(1e-2, 2.0, log=True),
        })
    if variant == "xgboost":
        space = {"learning_rate": d.FloatDistribution(1e-3, 0.3, log=True), "max_depth": d.IntDistribution(2, 12)}
    return space


def _sample(space, rng):
    import optuna.distributions as d

    params = {}
    for name, dist in space.items():
        if isinstance(dist, d.CategoricalDistribution):
            params[name] = dist.choices[rng.integers(len(dist.choices))]
        elif isinstance(dist, d.IntDistribution):
            params[name] = int(rng.integers(dist.low, dist.high + 1))
        elif dist.log:
            params[name] = float(np.exp(rng.uniform(np.log(dist.low), np.log(dist.high))))
        else:
            params[name] = float(rng.uniform(dist.low, dist.high))
    return params


def make_run(
    path: Path | str,
    tasks=("abalone", "kin8nm"),
    variants=("ltc_mhn", "ltc", "zero_beta", "fixed_beta", "matched_ltc", "xgboost", "ridge"),
    folds: int = 3,
    seeds=(0,),
    trials: int = 12,
    oat_values=(0.01, 0.1, 1.0, 10.0),
    journal: bool = True,
    predictions: bool = True,
    base_rmse: dict[str, float] | None = None,
    seed: int = 0,
) -> Path:
    """Write a synthetic run directory and return its path."""
    import optuna

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base_rmse = base_rmse or {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = None
    if journal:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(str(path / "optuna.journal")))
    result_rows, trial_rows = [], []
    variant_factor = {"ltc_mhn": 0.9, "ltc": 1.0, "zero_beta": 0.97, "fixed_beta": 0.93,
                      "matched_ltc": 0.98, "xgboost": 0.92, "random_forest": 0.95, "gam": 1.05,
                      "ridge": 1.2, "tree": 1.3}
    for task_index, task in enumerate(tasks):
        scale = base_rmse.get(task, 10.0 ** (task_index - 1) * 2.0)
        for variant in variants:
            for fold in range(folds):
                for run_seed in seeds:
                    space = _distributions(variant) if (variant not in BASELINES or variant == "xgboost") else {}
                    study = None
                    if storage is not None and space:
                        study = optuna.create_study(
                            study_name=f"{task}/{variant}/fold{fold}/seed{run_seed}",
                            storage=storage, direction="minimize")
                    best = np.inf
                    best_params: dict = {}
                    n_failed = 0
                    for number in range(trials if space else 0):
                        params = _sample(space, rng)
                        beta = params.get("beta", 0.25)
                        value = scale * variant_factor.get(variant, 1.0) * (
                            1 + 0.15 * (np.log10(beta) + 0.6) ** 2) * rng.lognormal(0, 0.05)
                        state = "COMPLETE"
                        if beta > 5 and rng.random() < 0.5:
                            state, value = "FAILED", np.nan
                            n_failed += 1
                        elif number > 3 and rng.random() < 0.2:
                            state = "PRUNED"
                            value *= 1.3
                        if np.isfinite(value) and state == "COMPLETE" and value < best:
                            best, best_params = value, params
                        curve = list(np.linspace(2 * value, value, 4)) if np.isfinite(value) else []
                        row = {"task": task, "variant": variant, "fold": fold, "seed": run_seed,
                               "trial_number": number, "state": state,
                               "error": "NonFiniteLossError: loss became nan" if state == "FAILED" else None,
                               "val_rmse": value, "val_rmse_curve": curve, "epochs": len(curve),
                               "seconds": float(rng.uniform(1, 3))}
                        row.update({f"param_{k}": float(v) for k, v in params.items()})
                        trial_rows.append(row)
                        if study is not None:
                            trial_state = {"COMPLETE": optuna.trial.TrialState.COMPLETE,
                                           "PRUNED": optuna.trial.TrialState.PRUNED,
                                           "FAILED": optuna.trial.TrialState.FAIL}[state]
                            study.add_trial(optuna.trial.create_trial(
                                params=params, distributions=space,
                                value=value if state == "COMPLETE" else None, state=trial_state))
                    rmse = scale * variant_factor.get(variant, 1.0) * rng.lognormal(0, 0.04)
                    result_rows.append(_result_row(task, task_index, variant, fold, run_seed, rmse, best,
                                                   best_params, trials if space else 0, n_failed))
                    if predictions:
                        _write_predictions(path, task, variant, fold, run_seed, scale, rmse, rng)
                if variant in MEMORY_VARIANTS and oat_values:
                    for value in oat_values:
                        rmse = scale * variant_factor[variant] * (1 + 0.1 * (np.log10(value) + 0.6) ** 2)
                        row = _result_row(task, task_index, variant, fold, seeds[0],
                                          rmse * rng.lognormal(0, 0.03), np.nan, {}, 0, 0)
                        row.update(study="one_at_a_time", oat_param="beta", oat_value=float(value))
                        result_rows.append(row)
    pd.DataFrame(result_rows).to_parquet(path / "results.parquet")
    if trial_rows:
        pd.DataFrame(trial_rows).to_parquet(path / "trials.parquet")
    (path / "spec.toml").write_text(
        "name = \"synthetic\"\n"
        f"tasks = {json.dumps(list(tasks))}\nvariants = {json.dumps(list(variants))}\n")
    (path / "provenance.json").write_text(json.dumps({"synthetic": True, "seeds": list(seeds)}))
    return path


def _result_row(task, task_index, variant, fold, seed, rmse, best, params, n_trials, n_failed) -> dict:
    return {"task": task, "task_id": 361000 + task_index, "variant": variant, "fold": fold, "repeat": 0,
            "seed": seed, "status": "ok", "error": None, "rmse": float(rmse), "mae": float(0.8 * rmse),
            "r2": float(1 - (rmse / (rmse * 2.5)) ** 2), "n_train": 900, "n_test": 100,
            "fit_seconds": 1.0, "best_val_rmse": float(best) if np.isfinite(best) else np.nan,
            "best_config": json.dumps(params), "n_trials": n_trials, "n_failed_trials": n_failed,
            "splits": "reconstructed", "study": "search", "oat_param": None, "oat_value": np.nan}


def _write_predictions(path, task, variant, fold, seed, scale, rmse, rng) -> None:
    y_true = rng.normal(5 * scale, 2 * scale, 60)
    y_pred = y_true + rng.normal(0, rmse, 60)
    folder = path / "predictions" / task / variant
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"row_id": np.arange(60) + 60 * fold, "y_true": y_true, "y_pred": y_pred}).to_parquet(
        folder / f"fold{fold}_seed{seed}.parquet")


def add_trained_models(
    path: Path | str,
    tasks=("QSAR_fish_toxicity",),
    variants=("ltc", "ltc_mhn"),
    fold: int = 0,
    seed: int = 0,
    max_epochs: int = 3,
    hidden_size: int = 16,
) -> Path:
    """Train small real models of ``variants`` on real folds and store them as the search would.

    Writes models/ (``model.save_model(Pipeline(preprocessor, estimator))``) and predictions/, and
    replaces the matching results.parquet rows with the models' real test metrics. Needs the data
    layer (``HPO_OPENML_MIRROR`` or a filled cache) and the ``model`` package.
    """
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
    from sklearn.pipeline import Pipeline

    from hpo.data import load_task, make_fold
    from model import LiquidHopfieldRegressor, save_model

    path = Path(path)
    results = pd.read_parquet(path / "results.parquet")
    for task in tasks:
        data = load_task(task)
        fold_data = make_fold(data, fold=fold, seed=seed)
        for variant in variants:
            estimator = LiquidHopfieldRegressor(variant=variant, hidden_size=hidden_size, unfolds=3,
                                                hopfield_size=8, heads=2, max_epochs=max_epochs,
                                                patience=max_epochs, random_state=seed, n_threads=1)
            estimator.fit(fold_data.X_train, fold_data.y_train, eval_set=(fold_data.X_val, fold_data.y_val))
            pipeline = Pipeline([("preprocess", fold_data.preprocessor), ("model", estimator)])
            save_model(pipeline, path / "models" / task / variant / f"fold{fold}_seed{seed}.pt",
                       metadata={"task": task, "variant": variant, "fold": fold, "seed": seed})
            y_pred = estimator.predict(fold_data.X_test)
            y_true = np.asarray(fold_data.y_test, dtype=float)
            folder = path / "predictions" / task / variant
            folder.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"row_id": np.asarray(fold_data.test_idx), "y_true": y_true, "y_pred": y_pred}).to_parquet(
                folder / f"fold{fold}_seed{seed}.parquet")
            match = ((results["task"] == task) & (results["variant"] == variant) & (results["fold"] == fold)
                     & (results["seed"] == seed) & (results["study"] == "search"))
            metrics = {"rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
                       "mae": float(mean_absolute_error(y_true, y_pred)), "r2": float(r2_score(y_true, y_pred))}
            if match.any():
                for name, value in metrics.items():
                    results.loc[match, name] = value
                results.loc[match, "status"] = "ok"
            else:
                row = _result_row(task, 0, variant, fold, seed, metrics["rmse"], np.nan, {}, 0, 0)
                row.update(metrics)
                results = pd.concat([results, pd.DataFrame([row])], ignore_index=True)
    results.to_parquet(path / "results.parquet")
    return path
