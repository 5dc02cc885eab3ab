"""One typed settings object, filled from command-line flags with STUDIO_* environment overrides."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
# A Hugging Face Space's persistent storage, when the Space has it: outputs and history survive restarts.
PERSISTENT_DIR = Path("/data")
PROMPT_SYNTAXES = ("a1111", "plain")


def _default_models_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "sd-studio" / "models"


def _default_outputs_dir() -> Path:
    if PERSISTENT_DIR.is_dir() and os.access(PERSISTENT_DIR, os.W_OK):
        return PERSISTENT_DIR / "outputs"
    return REPO_ROOT / "outputs"


def _is_origin(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.path in ("", "/") \
        and not parts.query and not parts.username


@dataclass(frozen=True)
class Settings:
    preset: str = "sd15"
    host: str = "127.0.0.1"  # loopback: this machine only, unless --listen
    port: int = 7860
    outputs_dir: Path = field(default_factory=_default_outputs_dir)
    # Where the tiny set is built and where "./..." model paths in presets are looked up.
    # Hub downloads go to the Hugging Face cache (HF_HOME) as usual.
    models_dir: Path = field(default_factory=_default_models_dir)
    presets_dir: Path = REPO_ROOT / "presets"
    loras_dir: Path = field(default_factory=lambda: REPO_ROOT / "loras")
    # Single-file checkpoints (civitai .safetensors), VAEs and textual-inversion embeddings.
    checkpoints_dir: Path = field(default_factory=lambda: REPO_ROOT / "models" / "checkpoints")
    vaes_dir: Path = field(default_factory=lambda: REPO_ROOT / "models" / "vae")
    embeddings_dir: Path = field(default_factory=lambda: REPO_ROOT / "models" / "embeddings")
    # Upscaler models (ESRGAN, SwinIR, DAT, ...: what spandrel reads), A1111's models/ESRGAN.
    upscalers_dir: Path = field(default_factory=lambda: REPO_ROOT / "models" / "upscalers")
    # A1111's prompt styles (name,prompt,negative_prompt) and Dynamic Prompts' wildcard files.
    styles_file: Path = field(default_factory=lambda: REPO_ROOT / "styles.csv")
    wildcards_dir: Path = field(default_factory=lambda: REPO_ROOT / "wildcards")
    # "a1111": weights, BREAK, any length, embeddings; "plain": diffusers' own encoding (75 tokens).
    prompt_syntax: str = "a1111"
    device: str = "auto"  # auto | cuda | mps | cpu (or cuda:1, ...)
    dtype: str = "auto"  # auto (fp16 on a GPU, fp32 on the CPU) | float32 | float16 | bfloat16
    # Keep weights in RAM and move each model to the GPU only while it runs (diffusers' model offload).
    lowvram: bool = False
    # The denoiser's weights stored in float8 (e4m3) and cast per layer to the compute precision as
    # each runs (diffusers' layerwise casting): half the memory of bf16, slightly other pixels.
    fp8: bool = False
    # UNets (SD 1.x, SDXL) in the channels-last memory format: faster convolutions on recent GPUs;
    # other kernels, so pixels may move by a level (written to the infotext).
    channels_last: bool = False
    # The attention kernels (studio/attention.py): sdpa lets PyTorch pick; sdpa-math/-flash/
    # -efficient/-cudnn hold it to one; flash-attn, sage, xformers are packages (diffusers' dispatcher).
    attention: str = "sdpa"
    # torch.compile of the denoiser (a minute or more at its first image; LoRAs swap without
    # recompiling: studio/lora_slots.py).
    compile: bool = False
    # zlib level of the saved PNGs (0-9). 1: a 1024x1024 photo in 73 ms and 1.39 MB, against 339 ms
    # and 1.23 MB at Pillow's default 6 (measured on this machine's CPU); lossless either way.
    png_compress: int = 1
    max_plot_images: int = 100  # the cells of one X/Y/Z plot (STUDIO_MAX_PLOT_IMAGES)
    queue_size: int = 32  # requests waiting for the GPU; more are turned away
    # Generation on Ray Serve replicas (studio/backends/ray_serve.py): `workers` > 0 starts a local
    # Ray cluster with that many; `ray_address` joins an existing cluster instead. 0 and "": this process.
    workers: int = 0
    ray_address: str = ""
    lora_cache_mb: int = 1024  # LoRA state dicts kept in RAM (LRU)
    max_loaded_loras: int = 8  # adapters kept in each model before the least recently used is deleted
    # Specialised models (inpaint/instruct UNets, ControlNets, annotator) kept; 0 = no limit,
    # None = the preset's own model_cache_mb.
    model_cache_mb: int | None = None
    # On CUDA, GPU memory kept free for a generation's activations: cached models are evicted for it.
    vram_reserve_mb: int = 2048
    auth: tuple[tuple[str, str], ...] = ()  # (user, password) pairs; empty = no login
    share: bool = False  # a public Gradio share link
    api: bool = True  # AUTOMATIC1111's HTTP API (/sdapi/v1) on the same server; --api off removes it
    max_upload_mb: int = 20  # one uploaded file, or one image of an API call (decoded)
    # Origins (scheme://host[:port]) whose pages may call the studio from the browser (CORS), as
    # A1111's --cors-allow-origins; every other site is refused. STUDIO_CORS_ALLOW: comma-separated.
    cors_allow: tuple[str, ...] = ()
    history: str = "auto"  # shared | private | auto (shared on a loopback install without logins)
    # Server-wide caps on top of every preset's own limits (0 = the preset's limit).
    cap_width: int = 0
    cap_height: int = 0
    cap_steps: int = 0
    cap_batch_size: int = 0

    def __post_init__(self):
        for key in ("outputs_dir", "models_dir", "presets_dir", "loras_dir", "checkpoints_dir", "vaes_dir",
                    "embeddings_dir", "styles_file", "wildcards_dir", "upscalers_dir"):
            object.__setattr__(self, key, Path(getattr(self, key)).expanduser().resolve())
        if self.history not in ("auto", "shared", "private"):
            raise ValueError(f"history must be auto, shared or private, got {self.history!r}")
        if self.dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32, float16 or bfloat16, got {self.dtype!r}")
        from studio.attention import CHOICES as attention_choices

        if self.attention not in attention_choices:
            raise ValueError(f"attention must be one of {', '.join(attention_choices)}, got {self.attention!r}")
        if not 0 <= self.png_compress <= 9:
            raise ValueError(f"png_compress must be a zlib level from 0 (none) to 9, got {self.png_compress}")
        if self.workers < 0:
            raise ValueError(f"workers must be 0 (this process) or more, got {self.workers}")
        for origin in self.cors_allow:
            if not _is_origin(origin):
                raise ValueError(f"--cors-allow takes an origin like https://example.com or http://host:8080, "
                                 f"got {origin!r}")
        if self.prompt_syntax not in PROMPT_SYNTAXES:
            raise ValueError(f"prompt syntax must be one of {', '.join(PROMPT_SYNTAXES)}, got {self.prompt_syntax!r}")

    @property
    def max_body_bytes(self) -> int:
        """The largest request body: an API call's images (base64 grows them by 4/3) with room for
        an init image, a mask and a ControlNet image, and its JSON."""
        return 4 * self.max_upload_mb * 2**20 + 2**20

    @property
    def shared_history(self) -> bool:
        if self.history == "auto":
            return self.host in ("127.0.0.1", "localhost", "::1") and not self.auth
        return self.history == "shared"

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        """Settings from STUDIO_<NAME> variables (e.g. STUDIO_MAX_UPLOAD_MB, STUDIO_CAP_WIDTH), then
        explicit `overrides` (flags) on top."""
        values = {}
        for spec in fields(cls):
            raw = os.environ.get(f"STUDIO_{spec.name.upper()}")
            if raw is not None and spec.name != "auth":
                values[spec.name] = tuple(v.strip() for v in raw.split(",") if v.strip()) \
                    if spec.name == "cors_allow" else raw
        for old, new in (("OUTPUTS", "outputs_dir"), ("MODELS", "models_dir"), ("LORAS", "loras_dir"),
                         ("CHECKPOINTS", "checkpoints_dir"), ("VAES", "vaes_dir"), ("EMBEDDINGS", "embeddings_dir")):
            if f"STUDIO_{old}" in os.environ:
                values[new] = os.environ[f"STUDIO_{old}"]
        if os.environ.get("SPACE_ID") and "host" not in values:
            values["host"] = "0.0.0.0"  # on a Hugging Face Space the proxy in front is what users reach
        values.update({k: v for k, v in overrides.items() if v is not None})
        for spec in fields(cls):
            if spec.name in values and spec.type in ("int", int, "int | None"):
                values[spec.name] = int(values[spec.name])
            elif spec.name in values and spec.type in ("bool", bool) and isinstance(values[spec.name], str):
                values[spec.name] = values[spec.name].lower() in ("1", "true", "yes", "on")
        return cls(**values)
