"""The cache of specialised models (inpaint / instruct UNets, ControlNets, the pose annotator).

Least recently used first, within a byte budget and, on CUDA, leaving a reserve of free device
memory for the generation itself. An evicted model is really freed: nothing else may keep a
reference to it (the manager drops the task pipelines that hold it through `on_evict`).
"""

from __future__ import annotations

import gc
import logging
from collections import OrderedDict
from typing import Callable

import torch

from studio.errors import RequestError

log = logging.getLogger(__name__)


def module_bytes(model) -> int:
    """Bytes of a model's parameters and buffers (a pipeline counts its modules, an annotator its
    three networks)."""
    if hasattr(model, "components"):  # a DiffusionPipeline
        return sum(module_bytes(m) for m in model.components.values() if isinstance(m, torch.nn.Module))
    if hasattr(model, "body_estimation"):  # controlnet-aux OpenposeDetector
        return sum(module_bytes(part.model) for part in
                   (model.body_estimation, model.hand_estimation, model.face_estimation) if part is not None)
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def free_memory() -> None:
    """Give memory back after dropping references (call outside any `except` block: a live
    exception keeps the frames, and so the tensors, alive)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class ModelCache:
    """Models by role; the caller serialises access (the manager's GPU lock)."""

    def __init__(self, budget_bytes: int, reserve_bytes: int, free_device_bytes: Callable[[], int | None],
                 on_evict: Callable[[], None]):
        self.budget_bytes = budget_bytes  # 0: no limit
        self.reserve_bytes = reserve_bytes  # device memory to leave free, where it can be read
        self._free_device_bytes = free_device_bytes  # None where it cannot be read (CPU, MPS)
        self._on_evict = on_evict
        self._models: OrderedDict[str, object] = OrderedDict()

    def roles(self) -> list[str]:
        return list(self._models)

    def items(self) -> list[tuple[str, object]]:
        return list(self._models.items())

    def get(self, role: str, load: Callable[[], object]):
        """The model for `role`, made by `load()` on first use; then whatever no longer fits goes."""
        if role in self._models:
            self._models.move_to_end(role)
            return self._models[role]
        model = self._load_making_room(role, load)
        self._models[role] = model
        log.info("loaded the %s model (%.0f MB)", role, module_bytes(model) / 2**20)
        self._evict_while(self._over_budget, keep=role)
        return model

    def _load_making_room(self, role: str, load):
        """`load()`; when the device runs out of memory, evict every cached model and try once more."""
        out_of_memory = False
        try:
            return load()
        except torch.OutOfMemoryError:
            out_of_memory = True
        if out_of_memory:  # handled outside the except block, which holds the failed load's tensors
            self._evict_while(lambda: bool(self._models))
            free_memory()  # the failed load's own tensors too
            try:
                return load()
            except torch.OutOfMemoryError:
                pass
            free_memory()
            raise RequestError(
                f"Not enough GPU memory to load the {role} model next to the base model. Whoever runs the "
                "studio can start it with --lowvram (models wait in RAM and take turns on the GPU)."
            )

    def _over_budget(self) -> bool:
        if self.budget_bytes and sum(map(module_bytes, self._models.values())) > self.budget_bytes:
            return True
        free = self._free_device_bytes()
        return free is not None and free < self.reserve_bytes

    def _evict_while(self, condition: Callable[[], bool], keep: str | None = None) -> None:
        """Evict the least recently used models (never `keep`) while `condition()` holds."""
        while condition():
            victim = next((r for r in self._models if r != keep), None)
            if victim is None:
                return
            log.info("evicting the %s model to make room", victim)
            del self._models[victim]
            self._on_evict()
            free_memory()  # so that the next free-memory reading sees it back
