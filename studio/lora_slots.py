"""--compile: a compiled denoiser's LoRAs in fixed slots, swapped by copying weights into them.

torch.compile specialises its graph on the LoRA layers a module holds, the adapters active in
them and their scales: loading, activating or re-weighting a LoRA the usual way recompiles (a
minute on a UNet). Here the denoiser holds adapters "slot0", "slot1", ... (one per position in a
request's LoRA list), always active; a LoRA's weights are copied into its slot, zero-padded to the
slot's rank with its alpha/rank folded into B, and its weight set in a scale tensor in place
(peft's hotswap does the same for one adapter: `enable_lora_hotswap`). A slot with a scale of 0
adds exactly nothing. Only a LoRA that reaches layers its slot lacks, or has a higher rank,
re-makes that slot (one recompile); the slot then covers both, so that happens once per new kind
of LoRA. Text encoders are not compiled and keep their adapters the usual way (adapters.py).
"""

from __future__ import annotations

import warnings
import weakref

import torch

from studio.errors import RequestError

SLOT = "slot{}"
# What peft says of what is meant here: several adapters in one model (the slots), and a LoRA's
# own adapter deleted once its weights are in RAM.
warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted", category=UserWarning)


class LoraWeights(dict):
    """module name -> (A, B with the LoRA's alpha/rank folded in), on the CPU."""

    @property
    def rank(self) -> int:
        return max((a.shape[0] for a, _ in self.values()), default=0)


class DenoiserSlots:
    def __init__(self) -> None:
        self.remade = 0  # slots made or re-made (each one recompile), for tests and the benchmarks
        # denoiser -> [LoRA name held by slot i]; weak, so an evicted model's entry goes with it
        self._held: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._taken: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # denoiser -> {name: LoraWeights}
        self._layers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # denoiser -> its slot layers

    def has(self, denoiser, name: str) -> bool:
        return name in self._taken.get(denoiser, {})

    def forget(self, name: str) -> None:
        for taken in self._taken.values():
            taken.pop(name, None)

    def take(self, denoiser, adapter: str, name: str) -> None:
        """Move LoRA `name`, just loaded into `denoiser` as `adapter`, out of the model into RAM."""
        from peft.tuners.lora import LoraLayer

        weights = LoraWeights()
        for module_name, layer in denoiser.named_modules():
            if not isinstance(layer, LoraLayer) or adapter not in layer.scaling:
                continue
            if adapter not in layer.lora_A or layer.use_dora.get(adapter):
                denoiser.delete_adapters([adapter])
                raise RequestError(f"LoRA '{name}' has layers a compiled model cannot swap (DoRA or embeddings). "
                                   "Start the studio without --compile to use it.")
            scale = float(layer.scaling[adapter])
            weights[module_name] = (layer.lora_A[adapter].weight.detach().to("cpu", copy=True),
                                    (layer.lora_B[adapter].weight.detach() * scale).to("cpu"))
        denoiser.delete_adapters([adapter])
        self._taken.setdefault(denoiser, {})[name] = weights

    def apply(self, denoiser, loras: list[tuple[str, float]]) -> None:
        """Slot i holds the i-th LoRA at its weight; the other slots add nothing."""
        taken = self._taken.get(denoiser, {})
        held = self._held.setdefault(denoiser, [])
        for index, (name, _) in enumerate(loras):
            if index < len(held) and held[index] == name:
                continue
            self._place(denoiser, index, taken.get(name, LoraWeights()))  # none: text encoders only
            held.extend([None] * (index + 1 - len(held)))
            held[index] = name
        scales = [weight for _, weight in loras] + [0.0] * (len(held) - len(loras))
        for layer, slots in self._slot_layers(denoiser):
            for slot in slots:
                layer.scaling[slot].fill_(scales[int(slot.removeprefix("slot"))])

    def clear(self, denoiser) -> None:
        """Every slot's scale 0: the bare model's output (the LoRAs stay in their slots for next time)."""
        if self._held.get(denoiser):
            self.apply(denoiser, [])

    def _slot_layers(self, denoiser) -> list[tuple[object, list[str]]]:
        """`denoiser`'s LoRA layers with the slots each holds (walked once per slot made: a UNet is big)."""
        from peft.tuners.lora import LoraLayer

        if denoiser not in self._layers:
            self._layers[denoiser] = [(layer, sorted(s for s in layer.scaling if s.startswith("slot")))
                                      for layer in denoiser.modules() if isinstance(layer, LoraLayer)]
        return self._layers[denoiser]

    def _place(self, denoiser, index: int, weights: LoraWeights) -> None:
        from peft.tuners.lora import LoraLayer

        slot = SLOT.format(index)
        layers = {name: layer for name, layer in denoiser.named_modules()
                  if isinstance(layer, LoraLayer) and slot in layer.lora_A}
        rank = max((layer.r[slot] for layer in layers.values()), default=0)
        if not weights and not layers:
            return  # a LoRA of the text encoders only, and no slot here yet: nothing to clear
        if not layers or not set(weights) <= set(layers) or weights.rank > rank:
            layers = self._make_slot(denoiser, slot, weights, layers, max(rank, weights.rank))
        for name, layer in layers.items():
            a, b = layer.lora_A[slot].weight, layer.lora_B[slot].weight
            with torch.no_grad():
                b.zero_()
                if name in weights:
                    new_a, new_b = weights[name]
                    a.zero_()
                    a[: new_a.shape[0]].copy_(new_a)
                    b[:, : new_b.shape[1]].copy_(new_b)

    def _make_slot(self, denoiser, slot: str, weights: LoraWeights, old: dict, rank: int) -> dict:
        """(Re)make `slot` at `rank` on the layers it had and those `weights` reach (zeros)."""
        from peft.tuners.lora import LoraLayer

        shapes = {name: (layer.lora_A[slot].weight.shape, layer.lora_B[slot].weight.shape)
                  for name, layer in old.items()}
        shapes.update({name: (a.shape, b.shape) for name, (a, b) in weights.items()})
        if old:
            denoiser.delete_adapters([slot])
        state = {}
        for name, (a_shape, b_shape) in shapes.items():
            state[f"{name}.lora_A.weight"] = torch.zeros(rank, *a_shape[1:])
            state[f"{name}.lora_B.weight"] = torch.zeros(b_shape[0], rank, *b_shape[2:])
        denoiser.load_lora_adapter(state, prefix=None, adapter_name=slot)
        self.remade += 1
        self._layers.pop(denoiser, None)
        layers = {}
        for name, layer in denoiser.named_modules():
            if not isinstance(layer, LoraLayer):
                continue
            if slot in layer.lora_A:
                layer.scaling[slot] = torch.tensor(0.0, device=layer.lora_A[slot].weight.device)  # set in place later
                layers[name] = layer
            # Loading made the new slot the only active adapter; every slot stays active, always.
            layer.enable_adapters(True)
            layer._active_adapter = sorted(s for s in layer.scaling if s.startswith("slot"))
        return layers
