"""SD Studio: `python app.py --preset tiny` serves the studio on http://127.0.0.1:7860.

On a Hugging Face Space this file is the entry point as it is (see README, Deploy).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys

from studio import zerogpu  # noqa: F401  (imports `spaces` before anything touches CUDA, when present)
from studio.attention import CHOICES as ATTENTION_CHOICES
from studio.errors import BackendError, PresetError
from studio.settings import Settings

log = logging.getLogger("studio")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A Stable Diffusion studio in the browser.")
    parser.add_argument("--preset", help="model preset from presets/*.toml (default: sd15; 'tiny' works offline)")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--listen", action="store_true", help="serve the LAN too (binds 0.0.0.0); use with --auth")
    parser.add_argument("--port", type=int, help="port (default 7860)")
    parser.add_argument("--auth", action="append", metavar="USER:PASS", help="require this login (repeatable)")
    parser.add_argument("--auth-file", help="file with one user:pass per line")
    parser.add_argument("--cors-allow", dest="cors_allow", action="append", metavar="ORIGIN",
                        help="let pages at this origin (https://host[:port]) call the studio from the browser; "
                             "every other site is refused (repeatable)")
    parser.add_argument("--share", action="store_true", help="make a public gradio.live link (off by default)")
    parser.add_argument("--outputs", dest="outputs_dir", help="folder for generated images and history")
    parser.add_argument("--models", dest="models_dir", help="folder for the tiny models and './' preset paths")
    parser.add_argument("--loras", dest="loras_dir", help="folder of .safetensors LoRAs (default ./loras)")
    parser.add_argument("--checkpoints", dest="checkpoints_dir",
                        help="folder of single-file .safetensors checkpoints, offered in the model picker "
                             "(default ./models/checkpoints)")
    parser.add_argument("--vaes", dest="vaes_dir", help="folder of .safetensors VAEs (default ./models/vae)")
    parser.add_argument("--embeddings", dest="embeddings_dir",
                        help="folder of textual-inversion .safetensors embeddings (default ./models/embeddings)")
    parser.add_argument("--upscalers", dest="upscalers_dir",
                        help="folder of upscaler models (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT...): .safetensors, "
                             "or .pth read without running code (default ./models/upscalers)")
    parser.add_argument("--styles", dest="styles_file",
                        help="A1111's styles.csv (name,prompt,negative_prompt; default ./styles.csv)")
    parser.add_argument("--wildcards", dest="wildcards_dir",
                        help="folder of wildcard files: __name__ in a prompt is a line of name.txt "
                             "(default ./wildcards)")
    parser.add_argument("--prompt-syntax", dest="prompt_syntax", choices=["a1111", "plain"],
                        help="a1111 (default): (word:1.3), [word], BREAK, any length, embeddings; "
                             "plain: diffusers' own encoding, 75 tokens")
    parser.add_argument("--model-cache-mb", dest="model_cache_mb", type=int,
                        help="memory for inpaint/instruct/ControlNet models beside the base, LRU "
                             "(default: the preset's model_cache_mb; 0: no limit)")
    parser.add_argument("--history", choices=["auto", "shared", "private"],
                        help="whose generations the History tab shows (auto: shared on a loopback install "
                             "without logins, else each user's own)")
    parser.add_argument("--device", help="auto (default), cuda, mps or cpu")
    parser.add_argument("--png-compress", dest="png_compress", type=int, choices=range(10), metavar="0-9",
                        help="zlib level of the saved PNGs (default 1: about 5x faster than Pillow's 6, files about "
                             "13%% larger; the images are lossless either way)")
    parser.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"],
                        help="weights' precision (auto: float16 on a GPU, float32 on the CPU; bfloat16 halves a "
                             "CPU run's memory)")
    parser.add_argument("--api", choices=["on", "off"],
                        help="AUTOMATIC1111's HTTP API under /sdapi/v1, for Open WebUI, SillyTavern, webuiapi "
                             "(default on; it obeys --auth)")
    parser.add_argument("--workers", type=int,
                        help="render on N Ray Serve replicas (one GPU each, CPU replicas where there is none) "
                             "started on this machine; needs `pip install \"ray[serve]\"` (see README, Scale out)")
    parser.add_argument("--ray-address", dest="ray_address",
                        help="render on an existing Ray cluster (ray start --head, KubeRay) at this address, "
                             "e.g. ray://head:10001 or auto")
    parser.add_argument("--lowvram", action="store_true",
                        help="keep weights in RAM, each model on the GPU only while it runs (slower, for 4-6 GB GPUs)")
    parser.add_argument("--channels-last", dest="channels_last", action="store_true",
                        help="UNets (SD 1.x, SDXL) in the channels-last memory format: faster convolutions on "
                             "recent NVIDIA GPUs, pixels may move by a level (written to the image's parameters)")
    parser.add_argument("--attention", choices=ATTENTION_CHOICES,
                        help="attention kernels: sdpa (PyTorch picks, the default), sdpa-math/-flash/-efficient/-cudnn "
                             "(PyTorch's, held to one), flash-attn, sage or xformers (those packages, when installed; "
                             "FLUX.1, and xformers on UNets too); written to the image's parameters when not sdpa")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the denoiser: faster steps on a GPU after a minute or more of compiling "
                             "at the first image; LoRAs swap without recompiling (written to the image's parameters)")
    parser.add_argument("--fp8", action="store_true",
                        help="store the denoiser (UNet or FLUX.1's transformer) in float8, cast per layer as it runs: "
                             "half its memory, slightly different images (written to their parameters)"),
    return parser.parse_args(argv)


def read_auth(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    lines = list(args.auth or [])
    # STUDIO_AUTH="ann:pw1,bob:pw2": how a Space passes logins (as a secret), or any launcher.
    lines += [pair.strip() for pair in os.environ.get("STUDIO_AUTH", "").split(",") if pair.strip()]
    if args.auth_file:
        with open(args.auth_file, encoding="utf-8") as handle:
            lines += [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    pairs = []
    for line in lines:
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise SystemExit(f"error: a login must look like user:password, got {line.split(':')[0]!r}...")
        pairs.append((user, password))
    return tuple(pairs)


def lan_address() -> str:
    """This machine's address on the LAN (the one a route to the outside would use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the interface
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Flags over STUDIO_* variables over defaults; a switch left off leaves its variable in charge."""
    switches = ("listen", "auth", "auth_file", "share", "lowvram", "fp8", "channels_last", "compile", "api")
    flags = {k: v for k, v in vars(args).items() if k not in switches}
    flags["cors_allow"] = tuple(args.cors_allow) if args.cors_allow else None
    if args.listen:
        flags["host"] = "0.0.0.0"
    api = None if args.api is None else args.api == "on"
    return Settings.from_env(**flags, auth=read_auth(args) or None, share=args.share or None,
                             lowvram=args.lowvram or None, fp8=args.fp8 or None,
                             channels_last=args.channels_last or None, compile=args.compile or None, api=api)


def main(argv: list[str] | None = None) -> int:
    # A stop from a service manager (SIGTERM) ends the server as Ctrl-C does, so the saves finish.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_from_args(parse_args(argv))
    except ValueError as exc:  # a flag's value the settings refuse, said as the flag's error
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from studio.install_check import startup_warning

    if warning := startup_warning():  # before the first generation fails on it
        print(warning, file=sys.stderr, flush=True)
    # Imported here so `--help` and a bad preset answer without loading torch.
    from studio.core import Studio
    from studio.ui import CSS, THEME, build, launch_options

    try:
        studio = Studio(settings)
    except (PresetError, BackendError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get("SPACE_ID"):
        print(f"Serving the LAN: http://{lan_address()}:{settings.port}/", flush=True)
        if not settings.auth:
            print("WARNING: the studio is reachable from other machines and asks for no login. "
                  "Anyone on this network can use your GPU and see what it makes. "
                  "Add --auth user:password (or --auth-file).", file=sys.stderr, flush=True)
    demo = build(studio)
    demo.queue(max_size=settings.queue_size)
    launch = dict(server_name=settings.host, server_port=settings.port, css=CSS, theme=THEME,
                  **launch_options(studio))
    if settings.share:
        try:
            demo.launch(share=True, prevent_thread_lock=True, **launch)
        except Exception as exc:  # offline, or the share binary cannot be fetched
            print(f"The share link could not be made ({type(exc).__name__}: {exc}). "
                  f"The studio keeps running locally.", file=sys.stderr, flush=True)
        demo.block_thread()
    else:
        demo.launch(**launch)
    if not studio.close(timeout=60):  # the server has closed: images being saved are written whole
        print("Some images were still being saved after 60 s and may be missing.", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
