"""Hyperparameter searches of liquid-memory models on OpenML-CTR23.

Importing ``hpo`` is cheap and never imports Ray: the task registry and the data layer live in
:mod:`hpo.tasks` and :mod:`hpo.data`; the searches start Ray only when run.
"""

from hpo.tasks import TASKS, Task, UnknownTaskError, get_task, resolve_tasks

__all__ = ["TASKS", "Task", "UnknownTaskError", "get_task", "resolve_tasks"]
