"""SD Studio: `python app.py --preset tiny` serves the studio on http://127.0.0.1:7860."""

from __future__ import annotations

import argparse
import logging
import sys

from studio.errors import PresetError
from studio.settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A Stable Diffusion studio in the browser.")
    parser.add_argument("--preset", help="model preset from presets/*.toml (default: sd15; 'tiny' works offline)")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, help="port (default 7860)")
    parser.add_argument("--outputs", dest="outputs_dir", help="folder for generated images (default ./outputs)")
    parser.add_argument("--models", dest="models_dir", help="folder for the tiny models and './' preset paths")
    parser.add_argument("--loras", dest="loras_dir", help="folder of .safetensors LoRAs (default ./loras)")
    parser.add_argument("--model-cache-mb", dest="model_cache_mb", type=int,
                        help="memory budget for inpaint/instruct/ControlNet models, LRU (default 0: no limit)")
    parser.add_argument("--device", help="auto (default), cuda, mps or cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    settings = Settings.from_env(**vars(args))
    # Imported here so `--help` and a bad preset answer without loading torch.
    from studio.core import Studio
    from studio.ui import CSS, build

    try:
        studio = Studio(settings)
    except PresetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    demo = build(studio)
    demo.queue(max_size=settings.queue_size)
    demo.launch(
        server_name=settings.host,
        server_port=settings.port,
        allowed_paths=[str(settings.outputs_dir)],
        css=CSS,
        theme=gr_theme(),
    )
    return 0


def gr_theme():
    import gradio as gr

    return gr.themes.Soft(primary_hue="orange")


if __name__ == "__main__":
    sys.exit(main())
