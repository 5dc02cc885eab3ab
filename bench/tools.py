"""The daily tools' figures: an X/Y/Z plot against the same requests one by one, and an upscaler's
megapixels a second tiled against untiled."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path


def bench_plot(studio, args, report, paired_ratio) -> None:
    """A 3x3 plot (one job, its grid drawn and saved) ÷ the 9 same requests run alone: the plot's
    own cost is the grid (target <= 1.05)."""
    from studio.requests import Txt2ImgRequest
    from studio.xyz_plot import Axis, PlotOptions, plot_job

    base = Txt2ImgRequest(prompt="a lighthouse", steps=args.steps, width=args.size, height=args.size, seed=1)
    axes = (Axis("Seed", "1, 2, 3"), Axis("CFG Scale", "4, 7, 10"), Axis())
    alone = [replace(base, seed=seed, guidance_scale=cfg) for cfg in (4.0, 7.0, 10.0) for seed in (1, 2, 3)]

    def plot():
        studio.jobs.run("bench", plot_job(studio, base, None, axes, PlotOptions(), "bench", 100))

    def nine():
        for request in alone:
            studio.generate(request)

    plot()  # warm-up
    report("plot_3x3_vs_9_requests_ratio", paired_ratio(plot, nine, max(3, args.runs // 2)))


def bench_upscaler(report) -> None:
    """Megapixels of output a second from the tiny Real-ESRGAN Compact (2x) on a 512x512 photo,
    whole and in 128-pixel tiles (each with its 32-pixel overlap recomputed)."""
    import numpy as np
    from PIL import Image
    from skimage import data

    from studio.upscalers import UpscalerLibrary, build_tiny_upscaler, run_model

    with tempfile.TemporaryDirectory() as folder:
        build_tiny_upscaler(Path(folder) / "tiny-x2.safetensors")
        model = UpscalerLibrary(Path(folder)).model("tiny-x2")
        photo = Image.fromarray(data.astronaut())
        out_mp = (photo.width * 2) * (photo.height * 2) / 1e6
        timings = {}
        for name, tile in (("untiled", 0), ("tiled_128", 128)):
            run_model(model, photo, tile)  # warm-up
            start = time.perf_counter()
            for _ in range(3):
                image = run_model(model, photo, tile)
            timings[name] = (time.perf_counter() - start) / 3
            report(f"upscaler_mp_per_s_{name}", out_mp / timings[name], " MP/s")
            timings[f"{name}_pixels"] = np.asarray(image, dtype=np.int16)
        report("upscaler_tiled_vs_untiled_time_ratio", timings["tiled_128"] / timings["untiled"])
        report("upscaler_tiled_max_pixel_difference",
               float(np.abs(timings["tiled_128_pixels"] - timings["untiled_pixels"]).max()))
