"""`python -m bench`: the model manager's figures, each against a baseline measured in the same run.

Prints one `name: value` line per figure (medians of several runs after a warm-up). Runs on the
tiny preset by default (offline, CPU); `--preset sd15 --device cuda` measures a real model when its
weights are cached. See bench/README.md for what each figure means and the last results.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def median_time(fn, runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_ratio(changed, plain, runs: int) -> float:
    """The median over `runs` pairs of changed()'s time ÷ plain()'s, each pair back to back in
    alternating order, so a slow spell of this shared machine hits both sides of a pair."""
    ratios = []
    for i in range(runs):
        timed = {}
        for side, fn in (("plain", plain), ("changed", changed))[:: 1 if i % 2 else -1]:
            timed[side] = median_time(fn, 1, warmup=0)
        ratios.append(timed["changed"] / timed["plain"])
    return statistics.median(ratios)


def psnr_db(a, b) -> float:
    """How far image `a` is from `b` (float arrays of 0-255): dB, inf for the same pixels."""
    import numpy as np

    mse = float(np.mean((a - b) ** 2))
    return 10 * np.log10(255**2 / mse) if mse else float("inf")


def copy_presets(folder: Path) -> None:
    """The shipped presets into `folder` (a benchmark adds or edits its own beside them)."""
    for path in (REPO / "presets").glob("*.toml"):
        (folder / path.name).write_text(path.read_text())


def rss_mb() -> float:
    """Resident memory of this process, after handing freed heap pages back to the OS."""
    import ctypes
    import gc

    import psutil

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return psutil.Process().memory_info().rss / 2**20


def report(name: str, value: float, unit: str = "") -> None:
    print(f"{name}: {value:.4g}{unit}", flush=True)


def make_studio(args, **overrides):
    from studio.core import Studio
    from studio.settings import Settings

    settings = Settings.from_env(preset=args.preset, device=args.device, outputs_dir=args.outputs, **overrides)
    return Studio(settings)


def bench_overhead(studio, args) -> None:
    """Studio end to end (request -> saved PNG with metadata) vs the raw diffusers call."""
    from studio.requests import Txt2ImgRequest

    manager = studio.manager()
    sampler = manager.preset.defaults.sampler
    request = Txt2ImgRequest(prompt="a lighthouse", steps=args.steps, width=args.size, height=args.size, seed=1,
                             sampler=sampler, guidance_scale=manager.preset.defaults.guidance_scale)
    raw_times, studio_times = [], []
    # The same text length as the studio's (FLUX.1's T5; the shaped preset reads 64 tokens).
    tokens = manager.preset.capabilities.prompt_tokens
    length = {"max_sequence_length": tokens} if tokens else {}
    with manager.pipeline("txt2img", sampler) as pipe:
        def raw():
            pipe(prompt=request.prompt, num_inference_steps=request.steps, guidance_scale=request.guidance_scale,
                 width=request.width, height=request.height, generator=manager.generator(1), **length)

        raw()  # warm-up
    studio.generate(request)

    def raw_run():
        with manager.pipeline("txt2img", sampler):
            raw_times.append(median_time(raw, 1, warmup=0))

    def studio_run():
        studio_times.append(median_time(lambda: studio.generate(request), 1, warmup=0))

    # Interleaved, so drift in the machine's speed hits both alike, and in alternating order, so
    # neither always runs right after the other (garbage, caches).
    for i in range(2 * args.runs):  # twice as many: a ratio near 1 needs more pairs to be read to 1%
        for measure in ((raw_run, studio_run) if i % 2 else (studio_run, raw_run)):
            measure()
    report("raw_diffusers_s", statistics.median(raw_times), " s")
    report("studio_end_to_end_s", statistics.median(studio_times), " s")
    # The median of each pair's ratio: a pair runs back to back, so a slow spell of this shared
    # machine hits both of its runs rather than one side of the comparison.
    report("overhead_ratio", statistics.median(s / r for s, r in zip(studio_times, raw_times)))


def bench_studio_added(args) -> None:
    """What the studio adds to a job after the pipeline returns (today the job's slot in the GPU
    queue is held until it is done): each image's PNG (encoding and the atomic write) and its
    history row, on a real photo (scikit-image's astronaut), at Pillow's default zlib level 6 and at
    the studio's `--png-compress` default."""

    from PIL import Image
    from skimage import data

    from studio.history import History
    from studio.outputs import OutputStore
    from studio.settings import Settings

    photo, default = Image.fromarray(data.astronaut()), Settings().png_compress
    with tempfile.TemporaryDirectory() as folder:
        history = History(Path(folder) / "history.sqlite3", shared=True)
        for side, batch in ((512, 1), (1024, 1), (1024, 4)):
            image = photo.resize((side, side), Image.Resampling.LANCZOS)
            label = f"{side}" + (f"x{batch}" if batch > 1 else "")
            figures = {}
            for level in (6, default):
                store = OutputStore(Path(folder) / f"level{level}", level)

                def job():
                    paths = [store.save(image, "a fox\nSteps: 20, Seed: 1", "txt2img", 1) for _ in range(batch)]
                    history.add_many("bench", "txt2img", [(path, 1, "a fox") for path in paths])

                figures[level] = median_time(job, args.runs) * 1000 / batch
                report(f"studio_added_ms_{label}_level{level}", figures[level], " ms a picture")
            report(f"studio_added_{label}_ratio", figures[default] / figures[6])
            sizes = [len(_png(image, level)) for level in (6, default)]
            report(f"png_size_{label}_ratio", sizes[1] / sizes[0])


def bench_save_beside(args) -> None:
    """8 jobs from two users at once (two threads of 4), each saving its PNG at Pillow's level 6 so
    the save weighs: the studio as it is (the GPU slot given up before the save) against every job
    holding the slot through its save (the studio before), jobs per second."""
    import threading

    from studio.requests import Txt2ImgRequest

    studio = make_studio(args, png_compress=6)
    preset = studio.default_preset
    request = Txt2ImgRequest(prompt="a lighthouse", steps=4, width=512, height=512, seed=1,
                             sampler=preset.defaults.sampler)
    studio.generate(request)  # warm-up
    whole_job = threading.Lock()

    def rounds(hold_through_save: bool) -> float:
        def user():
            for _ in range(4):
                if hold_through_save:
                    with whole_job:
                        studio.generate(request)
                else:
                    studio.generate(request)

        threads = [threading.Thread(target=user) for _ in range(2)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return 8 / (time.perf_counter() - start)

    beside, held = [], []
    for i in range(max(1, args.runs // 2)):
        for hold, rates in ((False, beside), (True, held))[:: 1 if i % 2 else -1]:
            rates.append(rounds(hold))
    report("jobs_per_s_save_beside", statistics.median(beside), " jobs/s")
    report("jobs_per_s_save_held", statistics.median(held), " jobs/s")
    report("save_beside_throughput_ratio", statistics.median(beside) / statistics.median(held))


def _png(image, level: int) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def bench_setting(args, label: str, **setting) -> None:
    """A server setting's Text to Image time with it ÷ without (interleaved pairs, after a warm-up
    that also pays a compile) and how far its image is from the one without (PSNR, dB; inf: the
    same pixels)."""
    import numpy as np

    from studio.requests import Txt2ImgRequest

    plain = make_studio(args)
    try:
        changed = make_studio(args, **setting)
    except Exception as exc:  # a kernel this machine lacks: said, not hidden
        print(f"# {label}: not on this machine ({str(exc).splitlines()[0][:120]})", flush=True)
        return
    if setting.get("channels_last") and not changed.manager().channels_last:
        print(f"# {label}: the {changed.default_preset.family_spec.title} family's denoiser has no convolutions",
              flush=True)
        return
    request = Txt2ImgRequest(prompt="a lighthouse", steps=args.steps, width=args.size, height=args.size, seed=1,
                             sampler=plain.default_preset.defaults.sampler)
    first = time.perf_counter()
    images = [np.asarray(studio.generate(request).images[0], dtype=np.float64) for studio in (changed, plain)]
    if setting.get("compile"):
        report(f"{label}_first_image_s", time.perf_counter() - first, " s (compiling)")
    report(f"{label}_time_ratio", paired_ratio(lambda: changed.generate(request), lambda: plain.generate(request),
                                               args.runs))
    report(f"{label}_psnr_db", psnr_db(*images), " dB")


def bench_speed_presets(args) -> None:
    """Each few-step speed preset of the preset ([speed.*]): Text to Image time with it ÷ the preset's
    defaults. (On the tiny twins the LoRAs are random, so the pictures say nothing of quality.) On
    a studio of its own, so the LoRA figures after it start cold."""
    from studio.requests import Txt2ImgRequest

    studio = make_studio(args)
    preset = studio.default_preset
    d = preset.defaults
    base = dict(prompt="a lighthouse", width=args.size, height=args.size, seed=1)
    default = Txt2ImgRequest(**base, steps=d.steps, sampler=d.sampler, guidance_scale=d.guidance_scale)
    for name, speed in preset.speed.items():
        fast = Txt2ImgRequest(**base, steps=speed.steps, sampler=speed.sampler, guidance_scale=speed.guidance_scale,
                              loras=((speed.lora, speed.weight),))
        studio.generate(fast)  # warm-up: the LoRA loads
        report(f"speed_preset_{name}_time_ratio",
               paired_ratio(lambda fast=fast: studio.generate(fast), lambda: studio.generate(default), args.runs))


def bench_gpu_held(args) -> None:
    """How long a job keeps its GPU slot after its pipeline returns (finishing, infotext: the PNG is
    saved after the slot is given up), and how long after the pipeline's return the user has the
    result (its PNG saved, with its history row), per image at 512², 1024² and a batch of 4 at
    1024². One step: the pipeline's own time does not count here."""
    import threading

    from studio.requests import Txt2ImgRequest

    with tempfile.TemporaryDirectory() as folder:
        presets = Path(folder)
        copy_presets(presets)
        edited = presets / f"{args.preset}.toml"  # room for the 1024² figures
        edited.write_text(edited.read_text().replace("max_width = 512", "max_width = 1024")
                          .replace("max_height = 512", "max_height = 1024"))
        studio = make_studio(args, presets_dir=presets)
        sampler = studio.default_preset.defaults.sampler
        studio.generate(Txt2ImgRequest(prompt="a lighthouse", steps=1, width=64, height=64, sampler=sampler))
        marks = threading.local()
        pipe_class = type(studio.manager()._task_pipes[("txt2img", None)])  # what Text to Image calls
        call = pipe_class.__call__

        def timed_call(self, *a, **k):
            output = call(self, *a, **k)
            marks.returned = time.perf_counter()
            return output

        slots, release = studio._gpu_slots, studio._gpu_slots.release

        def timed_release():
            marks.released = time.perf_counter()
            release()

        pipe_class.__call__, slots.release = timed_call, timed_release
        try:
            for side, batch in ((512, 1), (1024, 1), (1024, 4)):
                request = Txt2ImgRequest(prompt="a lighthouse", steps=1, width=side, height=side, seed=1,
                                         batch_size=batch, sampler=sampler)
                studio.generate(request)  # warm-up
                held, until = [], []
                for _ in range(args.runs):
                    studio.generate(request)
                    done = time.perf_counter()
                    held.append((marks.released - marks.returned) * 1000 / batch)
                    until.append((done - marks.returned) * 1000 / batch)
                label = f"{side}" + (f"x{batch}" if batch > 1 else "")
                report(f"gpu_held_after_pipeline_ms_{label}", statistics.median(held), " ms an image")
                report(f"until_result_after_pipeline_ms_{label}", statistics.median(until), " ms an image")
        finally:
            pipe_class.__call__, slots.release = call, release


def bench_step_cache(studio, args) -> None:
    """Each step cache of the family (DeepCache for UNets, diffusers' hooks for FLUX.1): Text to Image
    time with it ÷ without, and
    how far its image is from the exact one (PSNR, dB; inf: the same pixels)."""
    import numpy as np

    from studio.requests import Txt2ImgRequest

    preset = studio.manager().preset
    if not preset.capabilities.step_caches:
        print(f"# step caches: the {preset.family_spec.title} family has none", flush=True)
        return
    fields = dict(prompt="a lighthouse", steps=args.cache_steps, width=args.size, height=args.size, seed=1,
                  sampler=preset.defaults.sampler, guidance_scale=preset.defaults.guidance_scale)

    def image(cache: str) -> np.ndarray:
        return np.asarray(studio.generate(Txt2ImgRequest(**fields, step_cache=cache)).images[0], dtype=np.float64)

    exact = image("")  # also the warm-up
    for cache in preset.capabilities.step_caches:
        cached = image(cache)
        report(f"step_cache_{cache.replace('-', '_')}_time_ratio",
               paired_ratio(lambda cache=cache: image(cache), lambda: image(""), args.runs))
        report(f"step_cache_{cache.replace('-', '_')}_psnr_db", psnr_db(cached, exact), " dB")


def bench_task_switch(studio, args) -> None:
    """First Image to Image call right after Text to Image vs a warm Image to Image call."""
    from PIL import Image

    from studio.requests import Img2ImgRequest, Txt2ImgRequest

    size, manager = args.size, studio.manager()
    sampler = manager.preset.defaults.sampler
    txt = Txt2ImgRequest(prompt="a lighthouse", steps=args.steps, width=size, height=size, seed=1, sampler=sampler)
    img = Img2ImgRequest(prompt="a lighthouse", steps=args.steps, strength=1.0, seed=1, sampler=sampler,
                         image=Image.new("RGB", (size, size), (90, 120, 200)))
    studio.generate(img)  # warm-up
    firsts, warms, loaded = [], [], 0
    for _ in range(args.runs):
        studio.generate(txt)
        before = manager.bytes_loaded
        start = time.perf_counter()
        studio.generate(img)
        firsts.append(time.perf_counter() - start)
        loaded += manager.bytes_loaded - before
        start = time.perf_counter()
        studio.generate(img)
        warms.append(time.perf_counter() - start)
    report("task_switch_ratio", statistics.median(firsts) / statistics.median(warms))
    report("task_switch_weight_bytes_loaded", loaded)


def bench_lora_swaps(studio, args) -> None:
    """Switching LoRA sets in the manager vs reloading the base pipeline from disk."""
    import diffusers

    manager = studio.manager()
    sampler = manager.preset.defaults.sampler
    base_folder = manager.resolve("base")
    names = manager.loras.names()[:2]
    if not names:
        print("# LoRA figures skipped: this preset offers no LoRA; put .safetensors files in loras/", flush=True)
        return
    set_a, set_b = ((names[0], 0.8),), ((names[1], 0.6),) if len(names) > 1 else ((names[0], 0.3),)

    def activate(loras):
        with manager.pipeline("txt2img", sampler, loras=loras):
            pass

    activate(())  # the base is loaded and warm: only the LoRA counts below
    start = time.perf_counter()
    activate(set_a)  # cold: read from disk, converted, loaded into the UNet (and text encoder)
    cold_s = time.perf_counter() - start
    activate(set_b)
    count = {"swaps": 0}

    def swap():  # A, B, A, B, ...: every call changes the active set
        count["swaps"] += 1
        activate(set_a if count["swaps"] % 2 else set_b)

    base_class = getattr(diffusers, manager.family.pipeline_class("txt2img", variant_loaded=False))

    def reload():
        base_class.from_pretrained(base_folder, dtype=manager.dtype, **manager.family.base_load_kwargs)

    reload()  # warm-up: imports and the page cache
    swap_times, reload_times = [], []
    for _ in range(args.runs):  # interleaved, so the machine's changes of speed hit both alike
        swap_times.append(median_time(swap, 4, warmup=0))
        reload_times.append(median_time(reload, 1, warmup=0))
    report("lora_swap_cold_ms", cold_s * 1000, " ms")
    report("lora_swap_cached_ms", statistics.median(swap_times) * 1000, " ms")
    report("base_reload_ms", statistics.median(reload_times) * 1000, " ms")
    report("lora_swap_vs_reload", statistics.median(s / r for s, r in zip(swap_times, reload_times)))


def bench_lora_leak(args) -> None:
    """Resident memory growth over 100 swaps: between loaded sets, and with deletes and reloads."""
    studio = make_studio(args, max_loaded_loras=1)  # every swap deletes one adapter and loads another
    manager = studio.manager()
    names = manager.loras.names()[:2]
    if not names:
        return

    def swaps(count):
        for i in range(count):
            with manager.pipeline("txt2img", manager.preset.defaults.sampler, loras=((names[i % len(names)], 1.0),)):
                pass

    swaps(20)  # warm-up: allocator and caches settle
    before = rss_mb()
    swaps(100)
    report("lora_leak_mb_per_100_swaps", rss_mb() - before, " MB")
    report("lora_loads_in_100_swaps", manager.adapters.loads - 20)


def bench_memory(args) -> None:
    """Resident memory after using all five tabs vs five independently loaded pipelines, each
    measured in a fresh process (so one cannot borrow the other's pages). `studio` runs with the
    preset's model cache budget, `studio-no-budget` keeps every model it loads."""
    results = {}
    for mode in ("studio", "studio-no-budget", "naive"):
        env = dict(os.environ)
        env.pop("STUDIO_MODEL_CACHE_MB", None)
        if mode == "studio-no-budget":
            env["STUDIO_MODEL_CACHE_MB"] = "0"
        out = subprocess.run([sys.executable, "-m", "bench.memory", mode, args.preset, args.device],
                             cwd=REPO, capture_output=True, text=True, check=True, env=env).stdout
        results[mode] = {key: float(value) for key, value in (line.split(": ") for line in out.strip().splitlines())}
    for mode, figures in results.items():
        report(f"memory_{mode.replace('-', '_')}_rss_mb", figures["rss_mb"], " MB")
        report(f"memory_{mode.replace('-', '_')}_weights_mb", figures["weights_mb"], " MB")
    naive = results["naive"]["weights_mb"]
    report("memory_vs_naive", results["studio"]["weights_mb"] / naive)
    report("memory_vs_naive_no_budget", results["studio-no-budget"]["weights_mb"] / naive)
    report("memory_vs_naive_rss", results["studio"]["rss_mb"] / results["naive"]["rss_mb"])


def bench_lowvram(args) -> None:
    """Peak GPU memory and time of one Text to Image with --lowvram vs without (CUDA only)."""
    import torch

    from studio.model_cache import free_memory
    from studio.requests import Txt2ImgRequest

    if not args.device.startswith("cuda"):
        print("# lowvram figures need a CUDA GPU (--device cuda)", flush=True)
        return
    request = Txt2ImgRequest(prompt="a lighthouse", steps=args.steps, width=args.size, height=args.size, seed=1)

    def measure(lowvram: bool) -> tuple[float, float]:
        studio = make_studio(args, lowvram=lowvram)
        studio.generate(request)  # loads, and warms up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        seconds = median_time(lambda: studio.generate(request), args.runs, warmup=0)
        return torch.cuda.max_memory_allocated() / 2**20, seconds

    peak_mb, seconds = {}, {}
    for lowvram in (True, False):  # offloaded first: its weights rest in RAM, so nothing is left on the GPU
        peak_mb[lowvram], seconds[lowvram] = measure(lowvram)
        free_memory()
    report("peak_vram_mb", peak_mb[False], " MB")
    report("lowvram_peak_vram_mb", peak_mb[True], " MB")
    report("lowvram_vram_ratio", peak_mb[True] / peak_mb[False])
    report("lowvram_time_ratio", seconds[True] / seconds[False])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256, help="image side; 256 takes about 1 s on 2 CPU cores")
    parser.add_argument("--shape", choices=["sd15", "flux"],
                        help="sd15: only the checkpoint figures, on the SD 1.5 architecture with random weights (real "
                             "size); flux: studio vs raw FluxPipeline and the step caches on FLUX.1's real width")
    parser.add_argument("--cache-steps", type=int, default=12, help="steps of the step-cache figures")
    parser.add_argument("--shape-runs", type=int, default=3, help="load pairs for checkpoint_load_ratio")
    parser.add_argument("--workers", type=int,
                        help="only the Ray Serve figures: 8 mixed jobs on this many replicas vs on one, and routing")
    parser.add_argument("--scale-runs", type=int, default=3, help="timed rounds of the 8 jobs (the best is kept)")
    parser.add_argument("--tools", action="store_true",
                        help="only the daily tools' figures: a 3x3 X/Y/Z plot vs 9 requests, an upscaler tiled vs not")
    args = parser.parse_args()
    import platform

    import torch

    if args.shape == "flux":  # a step of the wide transformer takes seconds on a CPU
        args.size, args.steps, args.cache_steps, args.runs = 256, 8, 12, min(args.runs, 3)
    what = {"sd15": "SD-1.5-shaped models in bfloat16",
            "flux": f"FLUX.1-wide transformer (1+2 blocks) in bfloat16, {args.size}x{args.size}, {args.steps} steps",
            None: f"preset {args.preset}, {args.size}x{args.size}, {args.steps} steps"}[args.shape]
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, device {args.device}, {what}", flush=True)
    if args.shape == "flux":
        from bench import flux_shaped

        flux_shaped.run(args)
        return
    if args.shape:
        from bench import shaped

        shaped.run(args)
        return
    if args.workers:
        from bench import scale

        with tempfile.TemporaryDirectory() as outputs:
            args.outputs = outputs
            scale.run(args, report)
        return
    from bench import tools

    if args.tools:
        with tempfile.TemporaryDirectory() as outputs:
            args.outputs = outputs
            tools.bench_plot(make_studio(args), args, report, paired_ratio)
        tools.bench_upscaler(report)
        return
    with tempfile.TemporaryDirectory() as outputs:
        args.outputs = outputs
        studio = make_studio(args)
        bench_overhead(studio, args)
        tools.bench_plot(studio, args, report, paired_ratio)
        bench_step_cache(studio, args)
        bench_speed_presets(args)
        bench_setting(args, "channels_last", channels_last=True)
        for kernel in ("sdpa-math", "sdpa-flash", "sdpa-efficient"):
            bench_setting(args, f"attention_{kernel.replace('-', '_')}", attention=kernel)
        bench_setting(args, "compile", compile=True)
        bench_task_switch(studio, args)
        bench_lora_swaps(studio, args)
        del studio
        bench_lora_leak(args)
        bench_studio_added(args)
        bench_gpu_held(args)
        bench_save_beside(args)
        bench_memory(args)
        bench_lowvram(args)
        tools.bench_upscaler(report)


if __name__ == "__main__":
    main()
