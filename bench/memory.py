"""One side of `memory_vs_naive`, run in a fresh process: `python -m bench.memory studio|naive PRESET DEVICE`.

studio: one Studio with the preset's settings, one generation in each of the five tabs
        (studio-no-budget: the same with STUDIO_MODEL_CACHE_MB=0, so every model stays).
naive:  five pipelines loaded independently with from_pretrained (what a script per task does),
        one generation each.
Prints the growth of resident memory and the bytes of distinct weight tensors held.
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bench.__main__ import rss_mb  # noqa: E402

SMALL = {"prompt": "a boat", "steps": 2, "seed": 1}


def distinct_weight_mb(modules) -> float:
    seen, total = set(), 0
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                total += tensor.numel() * tensor.element_size()
    return total / 2**20


def studio_side(preset: str, device: str, outputs: str):
    from studio.core import Studio
    from studio.requests import ControlRequest, Img2ImgRequest, InpaintRequest, InstructRequest, Txt2ImgRequest
    from studio.settings import Settings

    studio = Studio(Settings.from_env(preset=preset, device=device, outputs_dir=outputs))
    image, mask = Image.new("RGB", (64, 64), (100, 150, 200)), Image.new("L", (64, 64), 255)
    small = SMALL | {"sampler": studio.default_preset.defaults.sampler}
    for request in (
        Txt2ImgRequest(**small, width=64, height=64),
        Img2ImgRequest(**small, image=image, strength=1.0),
        InpaintRequest(**small, image=image, mask=mask),
        InstructRequest(**small, image=image),
        ControlRequest(**small, width=64, height=64, control_image=image,
                       control_mode=control_mode(studio.default_preset)),
    ):
        studio.generate(request)
    manager = studio.manager()
    base = manager.base_pipeline()
    modules = [m for m in base.components.values() if isinstance(m, torch.nn.Module)]
    return modules + manager.cached_models()


def naive_side(preset: str, device: str):
    import diffusers

    from studio.devices import pick_device
    from studio.models import ModelManager
    from studio.presets import load_preset
    from studio.settings import Settings

    settings = Settings.from_env(preset=preset, device=device)
    manager = ModelManager(load_preset(preset, settings.presets_dir), settings)  # only to resolve folders
    base, (dev, dtype) = manager.resolve("base"), pick_device(device, settings.dtype)
    family, mode = manager.family, control_mode(manager.preset)

    def pipeline(task: str):
        variant = task in ("inpaint", "instruct")
        return getattr(diffusers, family.pipeline_class(task, variant)).from_pretrained

    load = {"dtype": dtype, **family.base_load_kwargs}
    denoiser = getattr(diffusers, family.denoiser_class).from_pretrained

    def variant(role: str) -> dict:
        return {family.denoiser: denoiser(manager.resolve(role), subfolder=family.denoiser, dtype=dtype)}

    image, mask = Image.new("RGB", (64, 64), (100, 150, 200)), Image.new("L", (64, 64), 255)
    controlnet = getattr(diffusers, family.control_class).from_pretrained(manager.resolve(f"control.{mode}"),
                                                                          dtype=dtype)
    pipes = [
        ("txt2img", pipeline("txt2img")(base, **load), {"width": 64, "height": 64}),
        ("img2img", pipeline("img2img")(base, **load), {"image": image}),
        ("inpaint", pipeline("inpaint")(base, **variant("inpaint"), **load), {"image": image, "mask_image": mask}),
        ("instruct", pipeline("instruct")(base, **variant("instruct"), **load), {"image": image}),
        ("control", pipeline("control")(base, controlnet=controlnet, **load),
         {"image": image, "width": 64, "height": 64}),
    ]
    for task, pipe, inputs in pipes:
        pipe.to(dev).set_progress_bar_config(disable=True)
        pipe(prompt=SMALL["prompt"], num_inference_steps=SMALL["steps"], generator=torch.manual_seed(1),
             **family.task_inputs(task, inputs, pipe, mode))
    return [m for _, pipe, _ in pipes for m in pipe.components.values() if isinstance(m, torch.nn.Module)]


def control_mode(preset) -> str:
    """The first control mode the preset has a ControlNet for."""
    return next(role.removeprefix("control.") for role in preset.models if role.startswith("control."))


def main() -> None:
    mode, preset, device = sys.argv[1:4]
    import diffusers  # noqa: F401  (libraries count in neither side's figure)

    from studio import tiny
    from studio.settings import Settings

    if preset.startswith("tiny"):
        tiny.ensure_built(Settings.from_env().models_dir / "tiny")
    before = rss_mb()
    with tempfile.TemporaryDirectory() as outputs:
        modules = naive_side(preset, device) if mode == "naive" else studio_side(preset, device, outputs)
        print(f"rss_mb: {rss_mb() - before:.2f}")
        print(f"weights_mb: {distinct_weight_mb(modules):.2f}")


if __name__ == "__main__":
    main()
