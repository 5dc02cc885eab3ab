"""One typed settings object, filled from command-line flags with STUDIO_* environment overrides."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_models_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "sd-studio" / "models"


@dataclass(frozen=True)
class Settings:
    preset: str = "sd15"
    host: str = "127.0.0.1"
    port: int = 7860
    outputs_dir: Path = field(default_factory=lambda: REPO_ROOT / "outputs")
    # Where the tiny set is built and where "./..." model paths in presets are looked up.
    # Hub downloads go to the Hugging Face cache (HF_HOME) as usual.
    models_dir: Path = field(default_factory=_default_models_dir)
    presets_dir: Path = REPO_ROOT / "presets"
    loras_dir: Path = field(default_factory=lambda: REPO_ROOT / "loras")
    device: str = "auto"  # auto | cuda | mps | cpu (or cuda:1, ...)
    queue_size: int = 32
    lora_cache_mb: int = 1024  # LoRA state dicts kept in RAM (LRU)
    max_loaded_loras: int = 8  # adapters kept in each model before the least recently used is deleted
    model_cache_mb: int = 0  # specialised models (inpaint/instruct UNets, ControlNets, annotator); 0 = no limit

    def __post_init__(self):
        for key in ("outputs_dir", "models_dir", "presets_dir", "loras_dir"):
            object.__setattr__(self, key, Path(getattr(self, key)).expanduser().resolve())

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        """Settings from STUDIO_* variables, then explicit `overrides` (flags) on top."""
        env = {
            "preset": os.environ.get("STUDIO_PRESET"),
            "host": os.environ.get("STUDIO_HOST"),
            "port": os.environ.get("STUDIO_PORT"),
            "outputs_dir": os.environ.get("STUDIO_OUTPUTS"),
            "models_dir": os.environ.get("STUDIO_MODELS"),
            "device": os.environ.get("STUDIO_DEVICE"),
            "queue_size": os.environ.get("STUDIO_QUEUE_SIZE"),
            "loras_dir": os.environ.get("STUDIO_LORAS"),
            "lora_cache_mb": os.environ.get("STUDIO_LORA_CACHE_MB"),
            "model_cache_mb": os.environ.get("STUDIO_MODEL_CACHE_MB"),
        }
        values = {k: v for k, v in env.items() if v is not None}
        values.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("port", "queue_size", "lora_cache_mb", "model_cache_mb"):
            if key in values:
                values[key] = int(values[key])
        return cls(**values)
