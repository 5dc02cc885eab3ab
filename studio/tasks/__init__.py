"""The task registry. Each task is one module here holding its request (validated settings, the
infotext it writes), its plan (what it asks of its pipeline, studio/tasks/base.py's Plan) and its
spec (pipeline class per family, the models it adds to the base). A new task is a new module and
one line below; the renderer (rendering.py) and the model manager (models.py) know no task by name.
"""

from __future__ import annotations

from typing import Callable

from studio.presets import Limits
from studio.tasks import control, img2img, inpaint, instruct, txt2img
from studio.tasks.base import GenerationRequest, HiresPass, Plan, TaskSpec, steps_and_strength

_MODULES = (txt2img, img2img, inpaint, instruct, control)

# Manager task (Plan.task) -> its pipeline's spec.
TASKS: dict[str, TaskSpec] = {module.SPEC.name: module.SPEC for module in _MODULES}
# Request task (GenerationRequest.task: the tab, e.g. outpaint) -> the function making its plan.
PLANNERS: dict[str, Callable[[GenerationRequest, Limits], Plan]] = {
    task: planner for module in _MODULES for task, planner in module.PLANNERS.items()
}

__all__ = ["PLANNERS", "TASKS", "GenerationRequest", "HiresPass", "Plan", "TaskSpec", "steps_and_strength"]
