"""The model managers of one GPU: one per preset, made on first use, one lock around all their
GPU work. Whatever runs generation holds one pool: the studio's own process (LocalBackend,
ZeroGPUBackend) or each Ray replica (RayBackend)."""

from __future__ import annotations

import threading
from collections import OrderedDict

from studio.loras import LoraLibrary
from studio.model_cache import free_memory
from studio.models import ModelManager, UserModels, lora_library
from studio.presets import Preset
from studio.settings import Settings


class ModelPool:
    def __init__(self, settings: Settings, max_loaded_presets: int = 1):
        self.settings = settings
        self.user_models = UserModels.from_settings(settings)
        self.lock = threading.RLock()
        self._managers: OrderedDict[str, ModelManager] = OrderedDict()
        # One LoRA library per preset, shared by its manager and the picker's descriptions, so a
        # file is read, hashed and cached once however often the picker asks about it.
        self._libraries: dict[str, LoraLibrary] = {}
        self._libraries_lock = threading.Lock()  # not the GPU lock: the picker must not wait for a job
        self._max_loaded = max_loaded_presets

    def manager(self, preset: Preset) -> ModelManager:
        """The manager of a preset, made on first use. Only `max_loaded_presets` stay loaded:
        switching to another preset lets the least recently used one go, so two model families
        never sit in GPU memory at once by accident."""
        with self.lock:
            if preset.name in self._managers:
                self._managers.move_to_end(preset.name)
                return self._managers[preset.name]
            while len(self._managers) >= self._max_loaded:
                self._managers.popitem(last=False)
                free_memory()
            manager = ModelManager(preset, self.settings, lock=self.lock, library=self.lora_library(preset),
                                   user_models=self.user_models)
            self._managers[preset.name] = manager
            return manager

    def lora_library(self, preset: Preset) -> LoraLibrary:
        with self._libraries_lock:
            if preset.name not in self._libraries:
                self._libraries[preset.name] = lora_library(preset, self.settings)
            return self._libraries[preset.name]
