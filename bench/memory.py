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
    for request in (
        Txt2ImgRequest(**SMALL, width=64, height=64),
        Img2ImgRequest(**SMALL, image=image, strength=1.0),
        InpaintRequest(**SMALL, image=image, mask=mask),
        InstructRequest(**SMALL, image=image),
        ControlRequest(**SMALL, width=64, height=64, control_image=image),
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
    family = manager.preset.family
    from studio.tasks import TASKS

    pipeline = {task: getattr(diffusers, spec.pipelines[family]).from_pretrained for task, spec in TASKS.items()}
    load = {"dtype": dtype, **({"safety_checker": None, "requires_safety_checker": False} if family == "sd" else {})}
    unet = diffusers.UNet2DConditionModel.from_pretrained
    image, mask = Image.new("RGB", (64, 64), (100, 150, 200)), Image.new("L", (64, 64), 255)
    pipes = [
        (pipeline["txt2img"](base, **load), {"width": 64, "height": 64}),
        (pipeline["img2img"](base, **load), {"image": image}),
        (pipeline["inpaint"](base, unet=unet(manager.resolve("inpaint"), subfolder="unet", dtype=dtype), **load),
         {"image": image, "mask_image": mask}),
        (pipeline["instruct"](base, unet=unet(manager.resolve("instruct"), subfolder="unet", dtype=dtype), **load),
         {"image": image}),
        (pipeline["control"](base, controlnet=diffusers.ControlNetModel.from_pretrained(
            manager.resolve("control.scribble"), dtype=dtype), **load), {"image": image, "width": 64, "height": 64}),
    ]
    for pipe, inputs in pipes:
        pipe.to(dev).set_progress_bar_config(disable=True)
        pipe(prompt=SMALL["prompt"], num_inference_steps=SMALL["steps"], generator=torch.manual_seed(1), **inputs)
    return [m for pipe, _ in pipes for m in pipe.components.values() if isinstance(m, torch.nn.Module)]


def main() -> None:
    mode, preset, device = sys.argv[1:4]
    import diffusers  # noqa: F401  (libraries count in neither side's figure)

    from studio import tiny
    from studio.settings import Settings

    if preset == "tiny":
        tiny.ensure_built(Settings.from_env().models_dir / "tiny")
    before = rss_mb()
    with tempfile.TemporaryDirectory() as outputs:
        modules = naive_side(preset, device) if mode == "naive" else studio_side(preset, device, outputs)
        print(f"rss_mb: {rss_mb() - before:.2f}")
        print(f"weights_mb: {distinct_weight_mb(modules):.2f}")


if __name__ == "__main__":
    main()
