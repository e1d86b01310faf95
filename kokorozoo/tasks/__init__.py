"""The core tasks. Each is registered under a short name in the ``kokorozoo.tasks`` entry points."""

from kokorozoo.tasks.base import Task
from kokorozoo.tasks.response import ResponseTask
from kokorozoo.tasks.score import ScoreHeadsTask, ScoreTask

__all__ = ["ResponseTask", "ScoreHeadsTask", "ScoreTask", "Task"]
