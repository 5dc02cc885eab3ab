"""The model manager: loads a preset's weights once and lends each request a pipeline built on them.

    with manager.pipeline("txt2img", sampler="Euler a") as pipe:
        images = pipe(...).images

Every task pipeline is derived from the one base pipeline with `from_pipe`, so the denoiser, VAE and
text encoders exist once in memory whatever tab asks. What differs between model families (the
pipeline classes, the denoiser's name, single files, prompt encoding) is the preset's family's
(studio/families/); this module names none. Each request gets its own scheduler (they keep
per-run state) and all GPU work runs under one lock (pipelines are not thread-safe).
"""

from __future__ import annotations

import copy
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from studio import attention, tiny
from studio.adapters import AdapterManager
from studio.checkpoints import CHECKPOINT_SUFFIXES, CheckpointFolder, config_folder
from studio.devices import DTYPES, pick_device
from studio.embeddings import EmbeddingLibrary
from studio.errors import ModelUnavailableError
from studio.families import Encoded
from studio.lora_slots import DenoiserSlots
from studio.loras import LoraLibrary
from studio.model_cache import ModelCache, module_bytes
from studio.pose_annotator import load_annotator
from studio.presets import CONFIGS_DIR, Preset
from studio.previews import PreviewPolicy
from studio.samplers import make_scheduler
from studio.settings import Settings
from studio.tasks import TASKS

log = logging.getLogger(__name__)
# from_pipe(dtype=...) calls .to(dtype) on shared modules, which logs a float32 warning on every
# request even when nothing is cast; it is noise here, the dtype never changes.
logging.getLogger("diffusers.models.modeling_utils").setLevel(logging.ERROR)

def _pipeline_class(name: str):
    import diffusers

    return getattr(diffusers, name)


def _derive(cls, base, overrides: dict):
    """A task pipeline of class `cls` on `base`'s modules, with `overrides` in place of some."""
    if not any(getattr(module, "is_quantized", False) for module in base.components.values()):
        # dtype= is needed: without it from_pipe upcasts the shared modules to fp32 (diffusers #12754).
        return cls.from_pipe(base, dtype=base.dtype, **overrides)
    # from_pipe casts every module to one dtype, which a quantized (GGUF) transformer refuses: the
    # same pipeline made directly from the modules and the base's settings.
    expected, optional = cls._get_signature_keys(cls)
    kwargs = {name: module for name, module in base.components.items() if name in expected}
    kwargs |= {name: base.config[name] for name in optional if name in base.config}
    return cls(**(kwargs | overrides))


def resolve_ref(preset: Preset, ref: str, models_dir: Path) -> str:
    """A preset's model reference as a hub id or a folder; `./x` means `<models_dir>/x`."""
    if ref.startswith("./"):
        if preset.build == "tiny":
            tiny.ensure_built(models_dir / "tiny")
        return str(models_dir / ref[2:])
    return ref


@dataclass(frozen=True)
class UserModels:
    """The user's own files beside the presets: checkpoints, VAEs, embeddings (one set per studio)."""

    checkpoints: CheckpointFolder
    vaes: CheckpointFolder
    embeddings: EmbeddingLibrary

    @classmethod
    def from_settings(cls, settings: Settings) -> "UserModels":
        hashes = settings.models_dir / "file-hashes.json"
        return cls(CheckpointFolder(settings.checkpoints_dir, hash_cache=hashes),
                   CheckpointFolder(settings.vaes_dir, "VAE", hash_cache=hashes),
                   EmbeddingLibrary(settings.embeddings_dir))


def checkpoint_config(preset: Preset, models_dir: Path) -> Path:
    """The assembled diffusers configs that single-file checkpoints of `preset`'s family load with."""
    name = preset.checkpoint_config
    if name is None:
        raise ModelUnavailableError(
            f"The preset '{preset.name}' names no checkpoint_config, so single files cannot be loaded with it.")
    source = Path(resolve_ref(preset, name, models_dir)) if name.startswith("./") else CONFIGS_DIR / name
    return config_folder(source, models_dir / "configs")


def lora_library(preset: Preset, settings: Settings) -> LoraLibrary:
    """The LoRAs a preset can use: the LoRA folder's and the preset's own `[loras]`."""
    extras = {name: resolve_ref(preset, ref, settings.models_dir) for name, ref in preset.loras.items()}
    return LoraLibrary(settings.loras_dir, extras, cache_bytes=settings.lora_cache_mb * 2**20)


class ModelManager:
    """Owns one preset's weights on one device, and the LoRAs applied to them."""

    def __init__(self, preset: Preset, settings: Settings, lock: threading.RLock | None = None,
                 library: LoraLibrary | None = None, user_models: UserModels | None = None):
        self.preset = preset
        self.family = preset.family_spec
        self.models_dir = settings.models_dir
        self.user_models = user_models or UserModels.from_settings(settings)
        self.prompt_syntax = settings.prompt_syntax
        self.device, self.dtype = pick_device(settings.device, settings.dtype, DTYPES[self.family.half_dtype])
        self.lowvram = settings.lowvram
        self.fp8 = settings.fp8
        self.channels_last = settings.channels_last and self.family.convolutional
        self.attention = settings.attention  # studio/attention.py
        self.compile = settings.compile
        self._attention_reaches: bool | None = None  # whether it reaches the denoisers (set as they load)
        # Where weights rest between requests: on the device, or in RAM under --lowvram.
        self.home = torch.device("cpu") if self.lowvram else self.device
        if self.lowvram and self.device.type == "cpu":
            log.warning("--lowvram saves GPU memory; on the CPU it only adds offload hooks that move nothing")
        # One lock around all GPU work; shared between managers when the studio holds several.
        self._lock = lock or threading.RLock()
        self._base = None
        # Task pipelines derived from the base with from_pipe: made once (that walks every module),
        # then lent one request at a time under the lock, each time with a new scheduler.
        self._task_pipes: dict[tuple[str, str | None], object] = {}
        self._schedulers: dict[str, object] = {}  # sampler -> an unused scheduler to copy
        self.previews = PreviewPolicy()
        budget_mb = preset.model_cache_mb if settings.model_cache_mb is None else settings.model_cache_mb
        # Specialised models (inpaint/instruct denoisers, ControlNets, the annotator); evicting one drops
        # the task pipelines, which may hold it.
        self.cache = ModelCache(budget_mb * 2**20, settings.vram_reserve_mb * 2**20,
                                lambda: self.free_device_bytes(), self._task_pipes.clear)
        self.bytes_loaded = 0  # weights read by from_pretrained so far, for the benchmarks
        library = library or lora_library(preset, settings)
        self.adapters = AdapterManager(library, self.family, settings.max_loaded_loras, self._lora_modules,
                                       slots=DenoiserSlots() if self.compile else None)

    @property
    def loras(self) -> LoraLibrary:
        return self.adapters.library

    @property
    def base_id(self) -> str:
        return self.preset.models["base"]

    @property
    def loaded(self) -> bool:
        return self._base is not None

    def resolve(self, role: str) -> str:
        """Hub id or local folder for `role`. `./x` in a preset means `<models_dir>/x`."""
        ref = self.preset.model(role)
        if ref is None:
            raise ModelUnavailableError(self.preset.missing_model_message(role))
        return self.resolve_ref(ref)

    def resolve_ref(self, ref: str) -> str:
        return resolve_ref(self.preset, ref, self.models_dir)

    def _load(self, cls, role: str, **kwargs):
        """`cls` for `role` from the preset's hub id or folder, or from a single-file checkpoint."""
        ref = self.resolve(role)
        if ref.endswith(CHECKPOINT_SUFFIXES):
            return self._from_single_file(cls, role, Path(ref), **kwargs)
        variant = self.preset.variant if self.dtype == torch.float16 else None
        loader = cls.from_pretrained
        try:
            try:
                model = loader(ref, dtype=self.dtype, variant=variant, **kwargs)
            except (OSError, ValueError):
                if variant is None:
                    raise
                # Not every repository ships the fp16 files: fall back to the full-precision ones.
                model = loader(ref, dtype=self.dtype, **kwargs)
            self.bytes_loaded += module_bytes(model)
            return model
        except (OSError, ValueError) as exc:  # not cached and not downloadable, or a broken folder
            log.warning("loading %s (%s) failed: %s", role, ref, exc)
            raise ModelUnavailableError(
                f"Could not load the {role} model '{ref}' of preset '{self.preset.name}': it is neither in the "
                "local cache nor downloadable right now. Connect to the internet once so it is downloaded "
                "and cached, or point the preset at a local folder (or set HF_HOME / --models to where the "
                "models are), or start with --preset tiny to work offline."
            ) from None

    def _from_single_file(self, cls, role: str, path: Path, **kwargs):
        """A model from one file, offline: the configs come from the preset's family (the family
        knows its files' layout); a VAE file loads as itself."""
        from diffusers.loaders.single_file_utils import SingleFileComponentError
        from safetensors import SafetensorError

        try:
            config = checkpoint_config(self.preset, self.models_dir)
            if role == "VAE":
                model = cls.from_single_file(str(path), config=str(config), local_files_only=True, dtype=self.dtype,
                                             **kwargs)
            else:
                if self.preset.components_from:  # a transformer-only file: the rest from the family preset
                    kwargs["components"] = self.resolve_ref(self.preset.components_from)
                model = self.family.load_single_file(cls, role, path, config, self.dtype, **kwargs)
        except torch.OutOfMemoryError:
            raise  # the model cache frees memory and retries
        except (OSError, ValueError, KeyError, RuntimeError, TypeError, SafetensorError,
                SingleFileComponentError) as exc:
            log.warning("loading %s from %s failed: %s", role, path, exc)
            raise ModelUnavailableError(
                f"The checkpoint '{path.name}' could not be loaded as the {role} model ({type(exc).__name__}: "
                f"{str(exc)[:200]}). The file may be damaged or of another family than it looks: download it again "
                "or pick another model."
            ) from None
        self.bytes_loaded += module_bytes(model)
        return model

    def vae_model(self, name: str):
        """A VAE from the VAE folder (A1111's sd_vae), in the model cache as `vae:<name>`."""
        from diffusers import AutoencoderKL

        path = self.user_models.vaes.path(name)  # an unknown or pickle name says so before anything loads
        return self._cached(f"vae:{name}",
                            lambda: self._from_single_file(AutoencoderKL, "VAE", path, subfolder="vae").to(self.home))

    def base_pipeline(self):
        """The base text-to-image pipeline, loaded on first use."""
        with self._lock:
            if self._base is None:
                cls = _pipeline_class(self.family.pipeline_class("txt2img", variant_loaded=False))
                pipe = self._load(cls, "base", **self.family.base_load_kwargs)
                self._prepare_denoiser(getattr(pipe, self.family.denoiser))
                pipe.to(self.home)
                pipe.set_progress_bar_config(disable=True)
                self._base = pipe
                log.info("loaded %s on %s (%s)", self.base_id, self.device, self.dtype)
            return self._base

    def component(self, role: str):
        """A specialised model (the inpaint/instruct denoiser, a ControlNet), loaded on first use.
        Control modes that name the same model (a Union ControlNet) share one copy."""
        family = self.family

        def load():
            if role.startswith("control."):
                return self._load(_pipeline_class(family.control_class), role)
            # inpaint / instruct: a full pipeline repository (or a single file), of which only the denoiser differs
            denoiser = self._load(_pipeline_class(family.denoiser_class), role, subfolder=family.denoiser)
            return self._prepare_denoiser(denoiser)

        return self._cached(self._cache_key(role), lambda: load().to(self.home))

    def _prepare_denoiser(self, denoiser):
        """--fp8: the denoiser's weights in float8, each layer cast to the compute dtype while it runs
        (a quantized GGUF transformer stays as it is). --channels-last: a UNet's convolutions in
        NHWC, which recent GPUs run faster."""
        if self.fp8 and not getattr(denoiser, "is_quantized", False):
            denoiser.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=self.dtype)
        if self.channels_last:
            denoiser.to(memory_format=torch.channels_last)
        self._attention_reaches = attention.prepare(denoiser, self.attention)
        if self.compile:  # compiled at its first step; LoRAs go into slots that swap without recompiling
            denoiser.compile()
        return denoiser

    def _cache_key(self, role: str) -> str:
        """The model cache's key of a role: the first control role naming the same model, or itself."""
        ref = self.preset.models.get(role)
        if role.startswith("control.") and ref is not None:
            return next(r for r, other in self.preset.models.items() if r.startswith("control.") and other == ref)
        return role

    def preview_decoder(self):
        """The preset's TAESD for live previews while the preview policy keeps it (previews.py)."""
        from diffusers import AutoencoderTiny

        if not self.preset.model("preview_vae"):
            return None
        with self._lock:
            return self.previews.decoder(lambda: self._load(AutoencoderTiny, "preview_vae").to(self.device))

    def note_preview_time(self, seconds: float) -> None:
        self.previews.note_time(seconds)

    def annotator(self):
        """The OpenPose detector of controlnet-aux, from the preset's folder or hub id."""
        return self._cached("pose_annotator", lambda: load_annotator(self.resolve("pose_annotator"), self.device))

    def _cached(self, role: str, load):
        with self._lock:
            return self.cache.get(role, load)

    def free_device_bytes(self) -> int | None:
        """Free memory where the cached models live; None where it cannot be read (CPU, MPS)."""
        if self.home.type != "cuda":
            return None
        free, _total = torch.cuda.mem_get_info(self.home)
        return free

    def cached_roles(self) -> list[str]:
        return self.cache.roles()

    def cached_models(self) -> list:
        return [model for _, model in self.cache.items()]

    def _lora_modules(self) -> list:
        """Every module that can hold LoRA adapters: the base denoiser and text encoders, and the
        inpaint / instruct denoisers."""
        modules = []
        if self._base is not None:
            modules += [getattr(self._base, n) for n in self._base._lora_loadable_modules
                        if getattr(self._base, n, None) is not None]
        modules += [m for r, m in self.cache.items() if r in ("inpaint", "instruct")]
        return modules

    def detect_poses(self, photo):
        """controlnet-aux PoseResults (body keypoints, normalised) of the people in a PIL photo."""
        import numpy as np

        detector = self.annotator()
        with self._lock:
            return detector.detect_poses(np.asarray(photo.convert("RGB")))

    @contextmanager
    def pipeline(self, task: str, sampler: str, control_mode: str | None = None,
                 loras: tuple[tuple[str, float], ...] = (), vae: str = "", step_cache: str = "") -> Iterator:
        """Lend a pipeline for `task` that shares the base weights, has its own scheduler and has
        exactly `loras` active (and the `step_cache` hooks, when named); none stays after the block.

        The task's spec (its module under studio/tasks/) names the models it adds to the base, and the
        preset's family the pipeline class: inpaint the preset's inpaint denoiser when it has one (else
        the base's, which diffusers runs too), instruct the instruct denoiser, control the ControlNet of
        `control_mode`."""
        spec = TASKS[task]
        if task not in self.family.pipelines:
            raise ModelUnavailableError(self.family.missing_task_message(task, self.preset.name))
        roles = spec.roles(self.preset, control_mode)
        for role in roles:
            self.resolve(role)  # a tab whose model the preset lacks says so before anything loads
        for name, _ in loras:
            self.loras.info(name)  # an unknown or refused LoRA says so before anything loads
        if vae:
            self.user_models.vaes.path(vae)
        with self._lock:
            base = self.base_pipeline()
            overrides = spec.overrides(roles, self.component, self.family.denoiser)
            key = (task, control_mode)
            if key not in self._task_pipes:
                variant = spec.variant_role is not None and spec.variant_role in roles
                cls = _pipeline_class(self.family.pipeline_class(task, variant))
                pipe = _derive(cls, base, overrides)
                pipe.set_progress_bar_config(disable=True)
                self._task_pipes[key] = pipe
            pipe = self._task_pipes[key]
            # A new scheduler for every request: schedulers keep per-run state (step_index). Copying a
            # pristine one is ten times faster than from_config, which inspects signatures.
            if sampler not in self._schedulers:
                self._schedulers[sampler] = make_scheduler(sampler, base.scheduler.config, self.family.samplers)
            pipe.scheduler = copy.deepcopy(self._schedulers[sampler])
            with self.adapters.applied(pipe, loras), self._vae_swapped(pipe, vae), self._offloaded(pipe), \
                    self._step_cached(pipe, step_cache), attention.kernels(self.attention):
                yield pipe

    @contextmanager
    def _step_cached(self, pipe, name: str) -> Iterator:
        """The family's step cache on the denoiser for this lend only."""
        if not name:
            yield
            return
        with self.family.step_cached(getattr(pipe, self.family.denoiser), name):
            yield

    @contextmanager
    def _vae_swapped(self, pipe, vae: str) -> Iterator:
        """The request's VAE in `pipe` for this lend only; the model's own comes back after."""
        if not vae:
            yield
            return
        own = pipe.vae
        pipe.vae = self.vae_model(vae)
        try:
            yield
        finally:
            pipe.vae = own

    def encode_prompts(self, pipe, request) -> Encoded:
        """`request`'s prompts as `pipe`'s keyword arguments, with the studio's prompt syntax."""
        return self.family.encode_prompts(pipe, request, self.user_models.embeddings, self.prompt_syntax,
                                          self.preset.capabilities)

    @contextmanager
    def _offloaded(self, pipe) -> Iterator:
        """Under --lowvram, each model of `pipe` moves to the device only while it runs (diffusers'
        model offload: text encoders, then the denoiser, then the VAE). The hooks go on at every lend and come
        off after it: the modules are shared with the other task pipelines, and hooks set for one
        pipeline's sequence would not suit another's. Between requests every weight rests in RAM,
        also after a Stop or an error in the middle of a run."""
        if not self.lowvram:
            yield
            return
        pipe.enable_model_cpu_offload(device=self.device)
        try:
            yield
        finally:
            pipe.remove_all_hooks()
            pipe.to("cpu")

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory(self) -> tuple[int, int] | None:
        """(peak bytes allocated since reset_peak_memory, the device's total bytes); CUDA only."""
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.device), torch.cuda.get_device_properties(self.device).total_memory

    def roles_needed(self, task: str, control_mode: str | None = None) -> list[str]:
        return TASKS[task].roles(self.preset, control_mode)

    def roles_to_load(self, task: str, control_mode: str | None = None) -> list[str]:
        """The models `task` needs that are not in memory now (loading them takes a while)."""
        loaded = (["base"] if self._base is not None else []) + self.cache.roles()
        return [role for role in self.roles_needed(task, control_mode) if self._cache_key(role) not in loaded]

    def _model_ref(self, task: str) -> str:
        """The model that makes a task's images: its specialised denoiser's, else the base."""
        variant = TASKS[task].variant_role
        return (self.preset.model(variant) if variant else None) or self.base_id

    def model_name(self, task: str, control_mode: str | None = None) -> str:
        """The model a task's images are made with, for their infotext: a hub id, or a checkpoint's
        file stem (as A1111 writes it)."""
        ref = self._model_ref(task)
        return Path(ref).stem if ref.endswith(CHECKPOINT_SUFFIXES) else ref

    def model_infotext(self, task: str, vae: str = "") -> dict:
        """A1111's "Model hash" of a checkpoint, "VAE hash" / "VAE" of a chosen VAE, and the
        settings that change the pixels (--fp8, --channels-last, --attention, --compile)."""
        extra = {"Diffusion in Low Bits": "float8-e4m3fn"} if self.fp8 else {}  # Forge's key for it
        if self.channels_last:  # other convolution kernels: a pixel may move by a level
            extra["Memory format"] = "channels last"
        if self._attention_reaches:
            extra["Attention"] = self.attention
        if self.compile:  # other fused kernels: on a GPU a pixel may move by a level
            extra["Compile"] = "inductor"
        ref = self._model_ref(task)
        if ref.endswith(CHECKPOINT_SUFFIXES):
            extra["Model hash"] = self.user_models.checkpoints.short_hash(Path(ref))
        if vae:
            extra["VAE hash"] = self.user_models.vaes.short_hash(self.user_models.vaes.path(vae))
            extra["VAE"] = vae
        return extra

    def generator(self, seed: int) -> torch.Generator:
        # Seeds are drawn on the CPU so the same seed gives the same noise on every device.
        return torch.Generator("cpu").manual_seed(seed)
