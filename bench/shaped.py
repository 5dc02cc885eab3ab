"""`python -m bench --shape sd15`: checkpoint figures at real size, offline.

The SD 1.5 architecture (studio/configs/sd15) with random weights, built once into the models
folder in bfloat16 (a CPU run's memory halved, the same bytes as fp16 on a GPU): the base pipeline,
the inpaint and instruct UNets, a scribble ControlNet, and two single-file checkpoints in the LDM
layout civitai serves. A preset `sd15-shaped` (written to a temporary presets folder) points at
them with sd15's model cache budget. Each side of a figure runs in a fresh process.

    python -m bench.shaped load single|folder   seconds to load the base pipeline
    python -m bench.shaped switch               checkpoint A, then B, then A again: seconds and RSS
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.__main__ import REPO, copy_presets, report, rss_mb  # noqa: E402

SHAPED_VERSION = 1
PRESET = """title = "SD 1.5 shaped (random weights, benchmark)"
family = "sd"
model_cache_mb = 2900
checkpoint_config = "sd15"

[models]
base = "./sd15-shaped/base"
inpaint = "./sd15-shaped/inpaint"
instruct = "./sd15-shaped/instruct"

[models.control]
scribble = "./sd15-shaped/control-scribble"

[defaults]
steps = 2
width = 64
height = 64
sampler = "Euler a"
"""


def shaped_root(models_dir: Path) -> Path:
    return models_dir / "sd15-shaped"


def build(models_dir: Path) -> Path:
    """The SD-1.5-shaped models and two checkpoints, built once (about 2 minutes, 8 GB of disk)."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from studio.checkpoints import config_folder
    from studio.families.sd_export import export_checkpoint
    from studio.presets import CONFIGS_DIR

    root = shaped_root(models_dir)
    marker = root / "built.json"
    if marker.is_file() and json.loads(marker.read_text()).get("version") == SHAPED_VERSION:
        return root
    print("# building the SD-1.5-shaped models (once)", flush=True)
    config = config_folder(CONFIGS_DIR / "sd15", models_dir / "configs")
    torch.manual_seed(0)
    dtype = torch.bfloat16
    unet_config = UNet2DConditionModel.load_config(config / "unet")
    unet = UNet2DConditionModel.from_config(unet_config).to(dtype)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae")).to(dtype),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder")).to(dtype),
        tokenizer=CLIPTokenizer.from_pretrained(config / "tokenizer"),
        unet=unet, scheduler=PNDMScheduler.from_pretrained(config / "scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(root / "base")
    for name, channels in (("inpaint", 9), ("instruct", 8)):
        UNet2DConditionModel.from_config(unet_config, in_channels=channels).to(dtype).save_pretrained(
            root / name / "unet")
    ControlNetModel.from_unet(unet).to(dtype).save_pretrained(root / "control-scribble")
    checkpoints = root / "checkpoints"
    export_checkpoint(pipe, checkpoints / "shaped-a.safetensors")
    with torch.no_grad():
        unet.conv_in.weight.mul_(1.5)  # a second "fine-tune": every other weight shared with A
    export_checkpoint(pipe, checkpoints / "shaped-b.safetensors")
    marker.write_text(json.dumps({"version": SHAPED_VERSION}))
    return root


def write_preset(presets_dir: Path) -> None:
    copy_presets(presets_dir)
    (presets_dir / "sd15-shaped.toml").write_text(PRESET)


def make_studio():
    from studio.core import Studio
    from studio.settings import Settings

    return Studio(Settings.from_env())


def side_load(kind: str) -> None:
    """Seconds to load the base pipeline: from the checkpoint file, or from the diffusers folder."""
    studio = make_studio()
    name = "shaped-a.safetensors" if kind == "single" else "sd15-shaped"
    manager = studio.manager(name)
    start = time.perf_counter()
    manager.base_pipeline()
    print(f"seconds: {time.perf_counter() - start:.3f}")


def side_switch() -> None:
    from studio.requests import Txt2ImgRequest

    studio = make_studio()
    request = Txt2ImgRequest(prompt="a boat", steps=2, width=64, height=64, seed=1, sampler="Euler a")
    figures = {"rss_before": rss_mb()}
    for label, name in (("a", "shaped-a.safetensors"), ("b", "shaped-b.safetensors"), ("a2", "shaped-a.safetensors")):
        start = time.perf_counter()
        studio.manager(name).base_pipeline()  # the switch: the other checkpoint let go, this one loaded
        figures[f"load_{label}"] = time.perf_counter() - start
        start = time.perf_counter()
        studio.generate(request, preset=name)  # the first image also hashes the file (once, then cached)
        figures[f"generate_{label}"] = time.perf_counter() - start
        figures[f"rss_{label}"] = rss_mb()
        if label == "a":
            first_unet = weakref.ref(studio.manager(name).base_pipeline().unet)
        elif label == "b":  # nothing of A may be left once B is in use
            figures["old_unet_freed"] = float(first_unet() is None)
    for key, value in figures.items():
        print(f"{key}: {value:.3f}")


def _run_side(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "bench.shaped", *args], cwd=REPO, capture_output=True, text=True,
                         check=True, env=dict(os.environ)).stdout
    return {key: float(value) for key, value in (line.split(": ") for line in out.strip().splitlines())}


def run(args) -> None:
    """Every figure of `--shape sd15`; memory_vs_naive comes from bench_memory on this preset."""
    from bench.__main__ import bench_memory
    from studio.settings import Settings

    models_dir = Settings.from_env().models_dir
    root = build(models_dir)
    with tempfile.TemporaryDirectory() as presets, tempfile.TemporaryDirectory() as outputs:
        write_preset(Path(presets))
        os.environ.update(STUDIO_PRESETS_DIR=presets, STUDIO_PRESET="sd15-shaped", STUDIO_DTYPE="bfloat16",
                          STUDIO_CHECKPOINTS=str(root / "checkpoints"), STUDIO_OUTPUTS=outputs,
                          STUDIO_DEVICE=args.device)
        for path in [*root.rglob("*.safetensors")]:  # both sides start from a warm page cache
            path.read_bytes()
        single, folder = [], []
        for pair in range(args.shape_runs):
            order = [("single", single), ("folder", folder)]
            for kind, times in order if pair % 2 == 0 else reversed(order):
                times.append(_run_side("load", kind)["seconds"])
        report("checkpoint_load_s", statistics.median(single), " s")
        report("from_pretrained_s", statistics.median(folder), " s")
        report("checkpoint_load_ratio", statistics.median(s / f for s, f in zip(single, folder)))
        switch = _run_side("switch")
        report("checkpoint_switch_s", switch["load_b"], " s")
        report("checkpoint_switch_vs_load", switch["load_b"] / statistics.median(single))
        report("checkpoint_first_image_s", switch["generate_b"], " s")
        report("checkpoint_rss_a_mb", switch["rss_a"] - switch["rss_before"], " MB")
        report("checkpoint_rss_b_mb", switch["rss_b"] - switch["rss_before"], " MB")
        report("checkpoint_rss_back_to_a_mb", switch["rss_a2"] - switch["rss_before"], " MB")
        report("checkpoint_switch_rss_ratio", (switch["rss_b"] - switch["rss_before"])
               / (switch["rss_a"] - switch["rss_before"]))
        report("checkpoint_old_unet_freed", switch["old_unet_freed"])
        args.preset = "sd15-shaped"
        bench_memory(args)
        # The speed options at SD 1.5's size: 128x128, 6 steps (a step takes seconds on a CPU), in
        # float32 (this CPU's bfloat16 matmuls are many times slower). --compile is left to GPUs
        # here: inductor takes many minutes over this UNet on two cores.
        from bench.__main__ import bench_setting, bench_step_cache, make_studio

        if args.device == "cpu":
            os.environ["STUDIO_DTYPE"] = "float32"
        args.outputs, args.size, args.steps, args.cache_steps, args.runs = outputs, 128, 6, 9, min(args.runs, 2)
        bench_step_cache(make_studio(args), args)
        bench_setting(args, "channels_last", channels_last=True)
        for kernel in ("sdpa-math", "sdpa-flash"):
            bench_setting(args, f"attention_{kernel.replace('-', '_')}", attention=kernel)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "load":
        side_load(sys.argv[2])
    elif mode == "switch":
        side_switch()
