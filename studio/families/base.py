"""What a model family is to the studio: the one protocol every family module implements.

A family owns everything that differs between SD 1.x, SDXL and FLUX.1: its diffusers pipeline per
task, the name and class of its denoiser (a UNet or a transformer) and of its specialised models,
what a request may ask of it (its Capabilities), how prompts become embeddings, what its latents
look like, which LoRA files are its own, how a single file of it is recognised and loaded, and its
tiny offline twin. The model manager, the tasks, the UI and the A1111 API read these and name no
family.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterator

from studio.errors import RequestError


@dataclass(frozen=True)
class Capabilities:
    """What a request may ask of a family, read by validation, the page and the A1111 API."""

    negative_prompt: bool = True
    guidance: str = "cfg"  # "cfg": classifier-free; "distilled": a guidance input (FLUX.1-dev); "none"
    guidance_label: str = "CFG scale"  # the slider's and the infotext's name (A1111's / Forge's)
    guidance_range: tuple[float, float] = (0.0, 30.0)
    clip_skip: bool = True
    image_guidance: bool = True  # Instruct's "Image CFG scale" (InstructPix2Pix); Kontext has none
    samplers: tuple[str, ...] = ()
    prompt_tokens: int | None = None  # the most tokens read; None: any length (A1111's chunks)
    step_caches: tuple[str, ...] = ()  # diffusers' cache hooks the denoiser takes (Family.step_cache)


@dataclass
class Encoded:
    """Keyword arguments for a diffusers pipeline call, and what the user should know."""

    kwargs: dict
    notes: list[str] = field(default_factory=list)
    embeddings: list = field(default_factory=list)  # Embedding objects used, for the infotext's "TI hashes"


@dataclass(frozen=True)
class LatentFormat:
    """The latents a family's step callback hands over, and the cheap preview of them."""

    channels: int
    # Least-squares fit of RGB to the latent channels (A1111's / ComfyUI's "approximate" previews).
    rgb_factors: tuple[tuple[float, float, float], ...]
    rgb_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Detected:
    """What a single file of a family is: read from its keys and shapes, nothing loaded."""

    family: str  # the family's name (Family.name)
    architecture: str  # what the picker says: "SD 1.x", "SDXL", "FLUX.1-dev"
    kind: str  # the role it fills: base | inpaint | instruct
    fingerprint: tuple = ()  # what a preset's configs must match to load it (e.g. text width)
    transformer_only: bool = False  # the denoiser alone: the text encoders and VAE come from a preset


class Family:
    """The protocol. A family module defines a subclass and the registry (families/__init__.py)
    lists it; the defaults here are those of a UNet latent-diffusion model."""

    name: ClassVar[str]  # the preset's `family = "..."`
    title: ClassVar[str]  # for messages: "SD 1.x/2.x", "SDXL", "FLUX.1"
    capabilities: ClassVar[Capabilities]
    latent: ClassVar[LatentFormat]
    size_multiple: ClassVar[int] = 8
    pipelines: ClassVar[dict[str, str]]  # manager task -> diffusers pipeline class name
    # A task's pipeline when its specialised model is loaded (FLUX.1's Fill), where it differs.
    variant_pipelines: ClassVar[dict[str, str]] = {}
    denoiser: ClassVar[str]  # the pipeline component that denoises: "unet" or "transformer"
    denoiser_class: ClassVar[str]
    control_class: ClassVar[str]
    # Input channels of a specialised single-file denoiser, by role (SD's 9-channel inpaint UNet).
    variant_channels: ClassVar[dict[str, int]] = {}
    samplers: ClassVar[dict[str, tuple[str, dict]]]  # A1111 name -> (scheduler class, config overrides)
    base_load_kwargs: ClassVar[dict] = {}  # extra from_pretrained arguments of the base pipeline
    tiny_version: ClassVar[int] = 1  # bump when the tiny twin changes
    convolutional: ClassVar[bool] = False  # a UNet: the channels-last memory format applies
    half_dtype: ClassVar[str] = "float16"  # the precision on a GPU, unless --dtype says otherwise
    step_cost: ClassVar[float] = 1.0  # GPU time of a step at 512x512, relative to SD 1.5 (ZeroGPU's estimate)

    # --- tasks -------------------------------------------------------------------------------

    def pipeline_class(self, task: str, variant_loaded: bool) -> str:
        if variant_loaded and task in self.variant_pipelines:
            return self.variant_pipelines[task]
        return self.pipelines[task]

    def missing_task_message(self, task: str, preset: str) -> str:
        return f"{self.title} models ({preset}) have no {task} pipeline here. Pick a model of another family."

    def task_inputs(self, task: str, inputs: dict, pipe, control_mode: str | None) -> dict:
        """The task's pipeline keyword arguments as this family's pipeline (`pipe`) takes them."""
        return inputs

    def unpack_latents(self, pipe, latents, size: tuple[int, int]):
        """The step callback's latents of an image of `size` (pixels) as (B, channels, h, w)."""
        return latents[:, : self.latent.channels]

    def step_cache(self, name: str):
        """The diffusers cache config of a step cache named in Capabilities.step_caches."""
        raise NotImplementedError

    @contextmanager
    def step_cached(self, denoiser, name: str) -> Iterator:
        """Step cache `name` on `denoiser` inside the block (diffusers' cache hooks by default); off
        after it, which gives back the uncached outputs bit for bit (tested)."""
        denoiser.enable_cache(self.step_cache(name))
        try:
            yield
        finally:
            denoiser.disable_cache()

    def call_kwargs(self, request) -> dict:
        """Guidance and the like, for every pipeline call of `request` (they may override
        `num_images_per_prompt`, which is the batch size unless the family says otherwise)."""
        return {"guidance_scale": request.guidance_scale}

    # --- prompts, LoRAs, embeddings ------------------------------------------------------------

    def encode_prompts(self, pipe, request, embeddings, syntax: str, caps: Capabilities) -> Encoded:
        """`request`'s prompts as `pipe`'s keyword arguments (one row per image of a batch), with
        the embeddings library, the prompt syntax ("a1111" or "plain") and the preset's `caps`."""
        raise NotImplementedError

    def lora_base_model_matches(self, base_model: str) -> bool:
        """Whether kohya's `ss_base_model_version` (e.g. "sd_v1", "sdxl_base_v1-0", "flux1") is this family."""
        raise NotImplementedError

    def lora_keys_match(self, keys: list[str]) -> bool | None:
        """Whether a LoRA's keys are this family's: True, False, or None when they cannot tell."""
        return None

    def load_lora_into_denoiser(self, pipe, state: dict, adapter: str) -> None:
        """Load a LoRA into `pipe`'s own denoiser when its text encoder has it already."""
        raise NotImplementedError

    # --- single files ----------------------------------------------------------------------------

    def detect(self, keys: list[str], shape) -> Detected | None:
        """The file is this family's (`shape(key)` gives a tensor's shape), else None."""
        return None

    def config_fingerprint(self, folder: Path) -> tuple | None:
        """What single files a diffusers config folder fits (compared with Detected.fingerprint)."""
        return None

    def load_single_file(self, cls, role: str, path: Path, config: Path, dtype, **kwargs):
        """A pipeline (role "base") or a denoiser from one file, offline, with `config`'s files."""
        raise NotImplementedError

    # --- the tiny offline twin -------------------------------------------------------------------

    def build_tiny(self, root: Path) -> None:
        """Write this family's tiny random-weight models under `root` (the tiny folder)."""


@dataclass
class Registry:
    families: dict[str, Family] = field(default_factory=dict)

    def add(self, family: Family) -> None:
        self.families[family.name] = family

    def get(self, name: str) -> Family:
        if name not in self.families:
            raise RequestError(f"Unknown model family {name!r}. Known: {', '.join(self.families)}.")
        return self.families[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self.families)

    def __iter__(self):
        return iter(self.families.values())
