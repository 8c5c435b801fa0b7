"""A sweep as a plan of work items: one per task × model × outer fold × seed (and per
one-at-a-time value). The driver runs them in order; each finished item is one results row.

Order: task, then fold, then seed, then model (variants before baselines), then that model's
one-at-a-time points — so a partial sweep holds whole tasks and the searches an item needs ran
before it. Nothing here imports Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hpo.space import is_searched
from hpo.spec import StudySpec

Kind = Literal["search", "fit", "one_at_a_time"]


@dataclass(frozen=True)
class WorkItem:
    """One unit of a sweep: a search (+ refit + test score), a baseline fit, or a one-at-a-time point."""

    task: str
    variant: str
    fold: int
    repeat: int
    seed: int
    kind: Kind
    oat_param: str | None = None
    oat_value: float | None = None

    @property
    def study(self) -> str:
        """The results table's ``study`` column: "search" or "one_at_a_time"."""
        return "one_at_a_time" if self.kind == "one_at_a_time" else "search"

    @property
    def study_name(self) -> str:
        """The Optuna study of this item's search, ``{task}/{variant}/fold{fold}/seed{seed}``."""
        return f"{self.task}/{self.variant}/fold{self.fold}/seed{self.seed}"

    @property
    def key(self) -> tuple:
        """Identity of the item in results.parquet."""
        return (self.task, self.variant, self.fold, self.seed, self.study, self.oat_param, _float_key(self.oat_value))

    @property
    def label(self) -> str:
        text = f"{self.task}/{self.variant}/fold{self.fold}/seed{self.seed}"
        if self.kind == "one_at_a_time":
            text += f" {self.oat_param}={self.oat_value:g}"
        return text

    @property
    def file_stem(self) -> str:
        """File name stem of its model and predictions, ``fold{f}_seed{s}`` (+ the OAT point)."""
        stem = f"fold{self.fold}_seed{self.seed}"
        if self.kind == "one_at_a_time":
            stem += f"_{self.oat_param}={self.oat_value:g}"
        return stem

    def base(self) -> WorkItem:
        """The search item whose best configuration a one-at-a-time item starts from."""
        return WorkItem(self.task, self.variant, self.fold, self.repeat, self.seed, "search")


def _float_key(value: float | None) -> float | None:
    return None if value is None else round(float(value), 12)


def build_plan(spec: StudySpec) -> list[WorkItem]:
    """Every work item of a spec, in the order the driver runs them."""
    study = spec.study
    oat = spec.one_at_a_time
    items: list[WorkItem] = []
    for task in study.tasks:
        for fold in study.folds:
            for seed in study.seeds:
                for model in study.models:
                    kind: Kind = "search" if is_searched(model) else "fit"
                    items.append(WorkItem(task, model, fold, study.repeat, seed, kind))
                for model in oat.variants if oat else ():
                    if oat.base_run == "" and model not in study.variants:
                        continue
                    for value in oat.values:
                        items.append(
                            WorkItem(task, model, fold, study.repeat, seed, "one_at_a_time", oat.param, value)
                        )
    return items


def trials_for(spec: StudySpec, item: WorkItem) -> int:
    """How many trials an item's search runs (0 for fits and one-at-a-time points)."""
    return spec.search.trials_for(item.variant) if item.kind == "search" else 0
