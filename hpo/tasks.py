"""The OpenML-CTR23 task registry (OpenML suite 353), known without network access.

The 35 tasks are kept in the code, as the protocol asks: names are the OpenML dataset names, ids
and targets are OpenML's. :func:`fetch_suite_task_ids` compares them with OpenML when asked and
online; nothing else here touches the network.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

SUITE_ID = 353
SUITE_NAME = "ctr23"


@dataclass(frozen=True)
class Task:
    """One CTR23 regression task: OpenML ids, target and shape as OpenML reports them."""

    name: str
    task_id: int
    dataset_id: int
    target: str
    n_rows: int
    n_features: int
    repeats: int = 1
    folds: int = 10

    @property
    def cv_procedure(self) -> str:
        """The task's estimation procedure in words, e.g. ``10x10-fold CV``."""
        return f"{self.repeats}x{self.folds}-fold CV"


TASKS: tuple[Task, ...] = (
    Task('abalone', 361234, 44956, 'rings', 4177, 8, repeats=1, folds=10),
    Task('airfoil_self_noise', 361235, 44957, 'sound_pressure', 1503, 5, repeats=1, folds=10),
    Task('auction_verification', 361236, 44958, 'verification.time', 2043, 7, repeats=1, folds=10),
    Task('concrete_compressive_strength', 361237, 44959, 'strength', 1030, 8, repeats=1, folds=10),
    Task('physiochemical_protein', 361241, 44963, 'RMSD', 45730, 9, repeats=1, folds=10),
    Task('superconductivity', 361242, 44964, 'critical_temp', 21263, 81, repeats=1, folds=10),
    Task('geographical_origin_of_music', 361243, 44965, 'latitude', 1059, 116, repeats=1, folds=10),
    Task('solar_flare', 361244, 44966, 'c_class_flares', 1066, 10, repeats=1, folds=10),
    Task('naval_propulsion_plant', 361247, 44969, 'gt_compressor_decay_state_coefficient', 11934, 14, repeats=1, folds=10),
    Task('white_wine', 361249, 44971, 'quality', 4898, 11, repeats=1, folds=10),
    Task('red_wine', 361250, 44972, 'quality', 1599, 11, repeats=1, folds=10),
    Task('grid_stability', 361251, 44973, 'stab', 10000, 12, repeats=1, folds=10),
    Task('video_transcoding', 361252, 44974, 'utime', 68784, 18, repeats=1, folds=10),
    Task('wave_energy', 361253, 44975, 'energy_total', 72000, 48, repeats=1, folds=10),
    Task('sarcos', 361254, 44976, 'V22', 48933, 21, repeats=1, folds=10),
    Task('california_housing', 361255, 44977, 'medianHouseValue', 20640, 8, repeats=1, folds=10),
    Task('cpu_activity', 361256, 44978, 'usr', 8192, 21, repeats=1, folds=10),
    Task('diamonds', 361257, 44979, 'price', 53940, 9, repeats=1, folds=10),
    Task('kin8nm', 361258, 44980, 'y', 8192, 8, repeats=1, folds=10),
    Task('pumadyn32nh', 361259, 44981, 'thetadd6', 8192, 32, repeats=1, folds=10),
    Task('miami_housing', 361260, 44983, 'SALE_PRC', 13932, 15, repeats=1, folds=10),
    Task('cps88wages', 361261, 44984, 'wage', 28155, 6, repeats=1, folds=10),
    Task('socmob', 361264, 44987, 'counts_for_sons_current_occupation', 1156, 5, repeats=1, folds=10),
    Task('kings_county', 361266, 44989, 'price', 21613, 21, repeats=1, folds=10),
    Task('brazilian_houses', 361267, 44990, 'total', 10692, 9, repeats=1, folds=10),
    Task('fps_benchmark', 361268, 44992, 'FPS', 24624, 43, repeats=1, folds=10),
    Task('health_insurance', 361269, 44993, 'whrswk', 22272, 11, repeats=1, folds=10),
    Task('fifa', 361272, 45012, 'wage_eur', 19178, 28, repeats=1, folds=10),
    Task('Moneyball', 361616, 41021, 'RS', 1232, 14, repeats=1, folds=10),
    Task('energy_efficiency', 361617, 44960, 'heating_load', 768, 8, repeats=10, folds=10),
    Task('forest_fires', 361618, 44962, 'area', 517, 12, repeats=10, folds=10),
    Task('student_performance_por', 361619, 44967, 'G3', 649, 30, repeats=10, folds=10),
    Task('QSAR_fish_toxicity', 361621, 44970, 'LC50', 908, 6, repeats=10, folds=10),
    Task('cars', 361622, 44994, 'Price', 804, 17, repeats=10, folds=10),
    Task('space_ga', 361623, 45402, 'ln_votes_pop', 3107, 6, repeats=1, folds=10),
)

_BY_NAME = {task.name.lower(): task for task in TASKS}
_BY_ID = {task.task_id: task for task in TASKS}


class UnknownTaskError(ValueError):
    """Raised for a task name or id that is not in CTR23; the message lists the closest names."""


def get_task(key: str | int | Task) -> Task:
    """Look a task up by OpenML dataset name (case-insensitive) or OpenML task id."""
    if isinstance(key, Task):
        return key
    if isinstance(key, int) or (isinstance(key, str) and key.strip().isdecimal()):
        task = _BY_ID.get(int(key))
        if task is None:
            raise UnknownTaskError(
                f"unknown task id {key}: CTR23 task ids run from {min(_BY_ID)} to {max(_BY_ID)} "
                f"(see `python -m hpo data list`)"
            )
        return task
    if not isinstance(key, str):
        raise TypeError(f"task must be a name or an OpenML task id, got {type(key).__name__}")
    task = _BY_NAME.get(key.strip().lower())
    if task is None:
        close = difflib.get_close_matches(key.strip().lower(), list(_BY_NAME), n=3, cutoff=0.4)
        hint = (
            "closest: " + ", ".join(_BY_NAME[name].name for name in close)
            if close
            else "see `python -m hpo data list` for all 35"
        )
        raise UnknownTaskError(f"unknown task {key!r}; {hint}")
    return task


def resolve_tasks(keys: list[str | int] | str) -> list[Task]:
    """Tasks for a list of names/ids; ``"ctr23"`` or ``"all"`` (alone) means the whole suite."""
    if isinstance(keys, str):
        keys = [keys]
    if len(keys) == 1 and isinstance(keys[0], str) and keys[0].lower() in {SUITE_NAME, "all"}:
        return list(TASKS)
    tasks = [get_task(key) for key in keys]
    seen: set[int] = set()
    return [t for t in tasks if not (t.task_id in seen or seen.add(t.task_id))]


def fetch_suite_task_ids() -> set[int]:
    """The task ids OpenML lists for suite 353 right now (needs network)."""
    import openml

    return set(openml.study.get_suite(SUITE_ID).tasks)
