"""LoRAs for one request only: make a pipeline's active adapters exactly the request's set, and
leave no adapter active afterwards.

Adapters are loaded (unfused) into the modules the task really uses: the denoiser of its pipeline
(base, inpaint or instruct) and the text encoder(s) when the LoRA has weights for them. A LoRA of
another model family than the preset's is refused before anything loads, with both named. They stay
loaded, disabled, for the next request that names them, up to `max_loaded`; the least recently
used is then deleted. Disabled LoRA layers give bit-identical output to the bare model, so a
request without LoRAs is the same whatever ran before it.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable, Iterable

from studio.errors import RequestError
from studio.families import FAMILIES
from studio.lora_slots import DenoiserSlots
from studio.loras import LoraLibrary

log = logging.getLogger(__name__)
# Loading a LoRA into a text encoder that already holds another one makes transformers report the
# other adapter's weights as "MISSING ... newly initialized": they are neither (tests compare the
# images bit for bit). Real faults (shape mismatches) still raise.
logging.getLogger("transformers.integrations.peft").setLevel(logging.ERROR)


def adapter_id(name: str) -> str:
    """A PEFT-safe adapter name for a LoRA name (which may hold dots and slashes)."""
    return "lora_" + hashlib.sha1(name.encode()).hexdigest()[:12]


def _has_adapters(module) -> bool:
    return bool(getattr(module, "peft_config", None))


def _delete(module, adapter: str) -> None:
    from diffusers import ModelMixin
    from diffusers.utils.peft_utils import delete_adapter_layers

    if adapter not in (getattr(module, "peft_config", None) or {}):
        return
    if isinstance(module, ModelMixin):
        module.delete_adapters([adapter])
    else:
        delete_adapter_layers(module, adapter)


def _set_active(layer, adapters: list[str]) -> None:
    """Make `adapters` the layer's active ones. PEFT's `set_adapter` also walks the weights of
    every adapter the layer holds to set `requires_grad` (for training), which makes a swap cost
    grow with the number of loaded LoRAs (3x with 8 loaded); inference needs only the active list,
    which every PEFT layer reads through `active_adapters`. Where a PEFT keeps that list elsewhere,
    the check below sees it and the public, slower call does the work."""
    layer._active_adapter = adapters
    if layer.active_adapters != adapters:
        layer.set_adapter(adapters, inference_mode=True)


class AdapterManager:
    def __init__(self, library: LoraLibrary, family, max_loaded: int,
                 all_modules: Callable[[], Iterable] = lambda: (), slots: DenoiserSlots | None = None):
        """`slots`: under --compile, the denoiser's LoRAs go into fixed slots (lora_slots.py) so a swap
        does not recompile it; the text encoders keep theirs as below."""
        self.library = library
        self.family = family  # the preset's studio.families.Family
        self.max_loaded = max_loaded
        self.slots = slots
        self._names: dict[str, str] = {}  # adapter -> LoRA name
        self._all_modules = all_modules  # every module that may hold adapters, for eviction
        self._parts: dict[str, set[str]] = {}  # adapter -> pipeline components it has weights for
        self._recent: OrderedDict[str, None] = OrderedDict()  # loaded adapters, least recently used first
        self.loads = 0  # adapters loaded from a state dict, for the benchmarks
        # module -> its LoRA layers (walking a UNet is slow); weak, so an evicted model's entry goes
        # with it and a new model that happens to get its id never inherits its layers.
        self._layers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _lora_layers(self, module) -> list[tuple[object, frozenset[str]]]:
        """`module`'s LoRA layers, each with the adapters it holds."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        if not _has_adapters(module):
            return []
        if module not in self._layers:
            self._layers[module] = [
                (layer, frozenset(name for attr in layer.adapter_layer_names for name in getattr(layer, attr)))
                for layer in module.modules() if isinstance(layer, BaseTunerLayer)
            ]
        return self._layers[module]

    def _switch(self, module, adapters: list[str], weights: list[float]) -> None:
        """Make exactly `adapters` (at `weights`) the active ones on every LoRA layer of `module`;
        none leaves each layer computing exactly its bare base layer.

        This is what diffusers' set_adapters / disable_lora do, over a cached list of LoRA layers,
        in one pass instead of three, and touching only the layers whose active set changes (a
        layer is given the adapters it holds: the others would be skipped in its forward anyway)."""
        for layer, held in self._lora_layers(module):
            if layer.disable_adapters:  # loaded disabled somewhere else; ours stay enabled
                layer.enable_adapters(True)
            wanted = [adapter for adapter in adapters if adapter in held]
            if layer.active_adapters != wanted:
                _set_active(layer, wanted)
            for adapter, weight in zip(adapters, weights):
                if adapter in held:
                    layer.set_scale(adapter, weight)

    @staticmethod
    def _lora_components(pipe) -> list[str]:
        return [name for name in pipe._lora_loadable_modules if getattr(pipe, name, None) is not None]

    @contextmanager
    def applied(self, pipe, loras: tuple[tuple[str, float], ...]):
        """`pipe` with exactly `loras` active inside the block, and none active after it."""
        try:
            self.activate(pipe, loras)
            yield pipe
        finally:
            for name in self._lora_components(pipe):
                if self._slotted(name):
                    self.slots.clear(getattr(pipe, name))
                else:
                    self._switch(getattr(pipe, name), [], [])

    def _slotted(self, component: str) -> bool:
        return self.slots is not None and component == self.family.denoiser

    def activate(self, pipe, loras: tuple[tuple[str, float], ...]) -> None:
        adapters = [self._ensure(pipe, name) for name, _ in loras]
        weights = [float(weight) for _, weight in loras]
        for name in self._lora_components(pipe):
            if self._slotted(name):
                self.slots.apply(getattr(pipe, name), [(lora, weight) for (lora, _), weight in zip(loras, weights)])
            else:
                self._switch(getattr(pipe, name), adapters, weights)
        self._evict(keep=set(adapters))

    def _ensure(self, pipe, name: str) -> str:
        """Load LoRA `name` into every component of `pipe` it has weights for (once)."""
        adapter = adapter_id(name)
        self._check_family(name)
        present = {part for part, names in pipe.get_list_adapters().items() if adapter in names}
        denoiser = getattr(pipe, self.family.denoiser)
        if self.slots is not None and self.slots.has(denoiser, name):
            present.add(self.family.denoiser)  # in RAM, for its slot
        needed = self._parts.get(adapter)
        if needed is not None and needed <= present:
            self._recent.move_to_end(adapter)
            return adapter
        state = self.library.state_dict(name)
        if self.family.lora_keys_match(list(state)) is False:
            raise RequestError(
                f"LoRA '{name}' was made for {_titles_of(state, self.family)}, not {self.family.title}: its weights "
                f"name another model's layers. Pick a LoRA made for {self.family.title}, or switch model.")
        self._layers.clear()  # loading adds LoRA layers
        before = {part for part in self._lora_components(pipe) if _has_adapters(getattr(pipe, part))}
        try:
            if not present:
                pipe.load_lora_weights(state, adapter_name=adapter)
            else:  # the shared text encoder has it already; this task's own denoiser does not
                self.family.load_lora_into_denoiser(pipe, state, adapter)
        except Exception as exc:  # wrong family, corrupt or foreign keys: leave the model as it was
            log.warning("LoRA %s failed to load: %s", name, exc)
            for part in self._lora_components(pipe):
                _delete(getattr(pipe, part), adapter)
                if part not in before:
                    self._switch(getattr(pipe, part), [], [])
            raise RequestError(
                f"LoRA '{name}' does not fit this model ({self.family.title}): {str(exc).splitlines()[0][:200]} It "
                "is probably made for another model (SD 1.5 / SD 2 / SDXL / FLUX.1)."
            ) from None
        self.loads += 1
        loaded = {part for part, names in pipe.get_list_adapters().items() if adapter in names}
        if self.slots is not None and self.family.denoiser in loaded:
            self.slots.take(denoiser, adapter, name)
        self._parts[adapter] = (needed or set()) | loaded
        self._names[adapter] = name
        self._recent[adapter] = None
        self._recent.move_to_end(adapter)
        return adapter

    def _check_family(self, name: str) -> None:
        """A LoRA whose metadata (kohya's ss_base_model_version) names another family is refused."""
        info = self.library.info(name)
        if info.base_model and not self.family.lora_base_model_matches(info.base_model):
            theirs = next((f.title for f in FAMILIES if f.lora_base_model_matches(info.base_model)), "another model")
            raise RequestError(
                f"LoRA '{name}' was trained for {info.base_model} ({theirs}), but this model is {self.family.title}. "
                "Pick a LoRA made for this model family, or switch model.")

    def _evict(self, keep: set[str]) -> None:
        while len(self._recent) > self.max_loaded:
            victim = next((a for a in self._recent if a not in keep), None)
            if victim is None:
                return
            del self._recent[victim]
            self._parts.pop(victim, None)
            if self.slots is not None:
                self.slots.forget(self._names.pop(victim, ""))
            self._layers.clear()
            for module in self._all_modules():
                _delete(module, victim)


def _titles_of(state: dict, family) -> str:
    """The families a LoRA's keys may belong to, besides `family` (which refused them)."""
    keys = list(state)
    return " or ".join(other.title for other in FAMILIES
                       if other.name != family.name and other.lora_keys_match(keys) is not False)
