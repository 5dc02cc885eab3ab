"""The Studio: the one object app.py makes and every tab calls. Its only per-user state is its
job service (`jobs`: each user's running job, progress and Stop), which the page and the A1111 API
share.

It is the front end's half of generation: it resolves the preset a request names (so two users
of one server can use different models), validates the request, hands it to its Backend (this
process, a ZeroGPU worker or Ray replicas: studio/backends/) and saves what comes back, with its
history row. The managers of the local pool share one lock, so this process's GPU work is
serialised.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import fields, replace
from pathlib import Path

from studio import attention
from studio.backends import choose_backend
from studio.checkpoints import CheckpointInfo, fits_config, strip_a1111_title
from studio.control import CONTROL_MODES, poses_from_detection
from studio.devices import pick_device
from studio.errors import BackendError, PresetError, RequestError, StudioError
from studio.extras import ExtrasRequest, run_extras
from studio.history import History
from studio.imaging import check_image
from studio.job_service import JobService
from studio.jobs import InFlight
from studio.loras import LoraInfo, LoraLibrary
from studio.model_pool import ModelPool
from studio.models import ModelManager, checkpoint_config
from studio.outputs import OutputStore
from studio.presets import Preset, available_presets, load_preset
from studio.requests import GenerationRequest
from studio.results import JobEvents, PreviewCallback, Rendered, Result, StatusCallback, StepCallback
from studio.settings import Settings
from studio.styles import StyleLibrary
from studio.tasks import TASKS
from studio.upscalers import UpscalerLibrary
from studio.wildcards import Wildcards


class Studio:
    def __init__(self, settings: Settings, max_loaded_presets: int = 1, backend=None):
        """`backend`: where generation runs; by default the one the settings ask for
        (studio.backends.choose_backend: this process unless --workers/--ray-address or ZeroGPU)."""
        self.settings = settings
        if settings.attention != attention.DEFAULT:  # a kernel this machine lacks: said at start
            try:
                attention.check(settings.attention, pick_device(settings.device)[0])
            except ValueError as exc:
                raise BackendError(str(exc)) from None
        # This process's models: what LocalBackend and ZeroGPUBackend render with, and the pose
        # annotator and LoRA descriptions use whatever the backend.
        self.pool = ModelPool(settings, max_loaded_presets)
        self.user_models = self.pool.user_models
        self.default_preset = self.preset(settings.preset)  # fails fast on a bad name
        self.outputs = OutputStore(settings.outputs_dir, settings.png_compress)
        self.outputs.remove_partial_files()  # left by a process killed while saving
        self.history = History(settings.outputs_dir / "history.sqlite3", shared=settings.shared_history)
        self.history.remove_missing()  # rows of files a killed save never renamed into place
        self.backend = backend or choose_backend(settings, self.pool)
        # The GPU's slots: a job holds one while it renders and gives it up before it saves its
        # PNGs, so the next job renders beside the save. (A backend that queues its own jobs, Ray's,
        # holds them back itself.)
        self._gpu_slots = threading.BoundedSemaphore(self.backend.concurrency)
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._saves = InFlight()  # saves under way, which close() waits for
        self.jobs = JobService(self)
        self.styles = StyleLibrary(settings.styles_file, settings.outputs_dir / "styles", per_user=bool(settings.auth))
        self.wildcards = Wildcards(settings.wildcards_dir)
        self.upscalers = UpscalerLibrary(settings.upscalers_dir, pick_device(settings.device)[0])

    def preset_names(self) -> list[str]:
        return available_presets(self.settings.presets_dir)

    def model_names(self) -> list[str]:
        """What the model picker offers: the presets, then the checkpoints folder's files."""
        return self.preset_names() + self.user_models.checkpoints.names()

    def model_choices(self) -> list[tuple[str, str]]:
        """The model picker's (label, value) pairs: a preset with a licence of its own says it
        (FLUX.1 [dev]'s weights are non-commercial)."""
        def label(name: str) -> str:
            licence = load_preset(name, self.settings.presets_dir).licence
            return f"{name} · {licence}" if licence else name

        return [(label(name), name) for name in self.preset_names()] + \
            [(name, name) for name in self.user_models.checkpoints.names()]

    def preset(self, name: str | None = None) -> Preset:
        """A preset, or the preset derived from a checkpoint of the checkpoints folder, with the
        server's caps (STUDIO_CAP_*) applied on top of its own limits."""
        if not name:
            name = self.settings.preset
        if isinstance(name, str):
            name = strip_a1111_title(name)
        if isinstance(name, str) and name in self.user_models.checkpoints.names():
            preset = self.checkpoint_preset(name)
        else:
            try:
                preset = load_preset(name, self.settings.presets_dir)
            except PresetError as exc:
                refused = self.user_models.checkpoints.refused()
                if isinstance(name, str) and Path(name).name in refused:
                    self.user_models.checkpoints.path(name)  # says why a pickle is refused
                checkpoints = ", ".join(self.user_models.checkpoints.names())
                raise PresetError(f"{exc}" + (f" Checkpoints: {checkpoints}." if checkpoints else "")) from None
        caps = {"max_width": self.settings.cap_width, "max_height": self.settings.cap_height,
                "max_steps": self.settings.cap_steps, "max_batch_size": self.settings.cap_batch_size}
        limits = {key: min(getattr(preset.limits, key), cap) for key, cap in caps.items() if cap > 0}
        return replace(preset, limits=replace(preset.limits, **limits)) if limits else preset

    def model_of_infotext(self, params: dict[str, str]) -> tuple[str | None, str | None]:
        """(the model picker's value for an image's "Model:", or None, and a message when the model
        is not here). A checkpoint is found by its file stem, as A1111 writes it; a hub id by the
        preset whose base it is."""
        model = params.get("Model")
        if not model:
            return None, None
        for name in self.user_models.checkpoints.names():
            if Path(name).stem == model:
                return name, None
        for name in self.preset_names():
            if model in (name, self.preset(name).base_id):
                return name, None
        hash_note = f" (hash {params['Model hash']})" if params.get("Model hash") else ""
        return None, (f"This image was made with the model '{model}'{hash_note}, which is not in your checkpoints "
                      f"folder ({self.user_models.checkpoints.files.folder}) nor a preset: the current model is kept.")

    def checkpoint_preset(self, name: str) -> Preset:
        """A checkpoint as a preset: the preset of its family (whose configs fit its weights) gives
        the other tabs' models, limits and defaults; the checkpoint replaces the model of its kind.
        A plain checkpoint also takes the inpainting / instruct checkpoint named after it
        (`<name>-inpainting.safetensors`, as civitai names them), when the folder has one."""
        checkpoints = self.user_models.checkpoints
        info = checkpoints.info(name)
        family = self._family_preset(info)
        models = dict(family.models)
        models[info.kind] = str(info.path)
        if info.kind == "base":
            for sibling in self._siblings(info):
                models[sibling.kind] = str(sibling.path)
        # A transformer alone: the text encoders, VAE and scheduler are the family preset's.
        components = family.models["base"] if info.detected.transformer_only and info.kind == "base" else None
        return replace(family, name=name, title=f"{info.stem} ({info.describe()} checkpoint)", models=models,
                       checkpoint=name, description=f"{info.describe()} checkpoint {name}, with {family.title}",
                       components_from=components)

    def _siblings(self, info: CheckpointInfo) -> list[CheckpointInfo]:
        """The inpainting / instruct checkpoints named after `info` and of its family (the first of
        each kind); an unreadable file is passed over here, and says why when picked itself."""
        found: dict[str, CheckpointInfo] = {}
        for other in self.user_models.checkpoints.names():
            if not _is_sibling(info.stem, other):
                continue
            try:
                sibling = self.user_models.checkpoints.info(other)
            except StudioError:
                continue
            if sibling.kind != "base" and sibling.family == info.family and \
                    sibling.detected.fingerprint == info.detected.fingerprint:
                found.setdefault(sibling.kind, sibling)
        return list(found.values())

    def _family_preset(self, info: CheckpointInfo) -> Preset:
        presets = [load_preset(name, self.settings.presets_dir) for name in self.preset_names()]
        # The server's preset first, then those with shipped configs, then built ones (tiny: its
        # configs are built on first use).
        presets.sort(key=lambda p: (p.name != self.settings.preset, (p.checkpoint_config or "./").startswith("./")))
        for preset in presets:
            if preset.checkpoint_config is None:
                continue
            if fits_config(info, preset.family_spec, checkpoint_config(preset, self.settings.models_dir)):
                return preset
        raise RequestError(
            f"No preset fits the {info.describe()} checkpoint '{info.name}' ({info.detected.fingerprint}): the "
            "studio loads the checkpoints of its presets' families, with configs that match. Pick another model."
        )

    def task_note(self, task: str, preset_name: str | None = None) -> str:
        """Why a tab cannot run with a model, or which of its modes it can, before Generate is
        pressed; "" when it runs as it is."""
        preset = self.preset(preset_name)
        family, spec = preset.family_spec, TASKS["inpaint" if task == "outpaint" else task]
        if spec.name not in family.pipelines:
            return family.missing_task_message(spec.name, preset.name)
        if spec.variant_required and not preset.model(spec.variant_role):
            return preset.missing_model_message(spec.variant_role)  # what Generate would say
        if spec.controlnet:
            modes = [mode for mode in CONTROL_MODES if preset.model(f"control.{mode}")]
            if not modes:
                return f"{preset.title} has no ControlNet, so this tab is not available with it. Pick another model."
            if len(modes) < len(CONTROL_MODES):
                return f"With {preset.title} the control modes are: {', '.join(modes)}."
        return ""

    def manager(self, preset_name: str | None = None) -> ModelManager:
        """This process's manager of a preset (loaded on first use; see ModelPool)."""
        return self.pool.manager(self.preset(preset_name))

    def generate(
        self,
        request: GenerationRequest,
        preset: str | None = None,
        on_step: StepCallback | None = None,
        stop: threading.Event | None = None,
        owner: str = "local",
        on_preview: PreviewCallback | None = None,
        on_status: StatusCallback | None = None,
    ) -> Result:
        """Run any task's request with the preset it names (the server's default when None) on the
        backend, save its images and record them in `owner`'s history."""
        started = time.perf_counter()
        resolved = self.preset(preset)
        request = request.with_prompt_loras()
        request.validate(resolved.limits, resolved.capabilities)
        rendered = self._render(request, resolved, JobEvents(on_step, on_preview, on_status, stop))
        paths = self.save(rendered, request.task, owner)
        result = Result(**{f.name: getattr(rendered, f.name) for f in fields(Rendered)}, paths=paths)
        result.seconds = time.perf_counter() - started
        return result

    def save(self, rendered: Rendered, task: str, owner: str) -> list[Path]:
        """Each image's PNG and its history row (after the GPU slot is given up; the row goes in just
        before its file appears). A save that fails (a full disk, a folder it may not write) says so;
        the images saved before it keep their rows."""
        paths: list[Path] = []
        recorded: list[Path] = []
        with self._saves:
            try:
                for image, infotext, seed in zip(rendered.images, rendered.infotexts, rendered.seeds):
                    def record(path: Path, seed=seed, infotext=infotext) -> None:
                        self.history.add_many(owner, task, [(path, seed, infotext)])
                        recorded.append(path)
                    paths.append(self.outputs.save(image, infotext, task, seed, record))
            except OSError as exc:
                self.history.remove_missing(recorded)  # a row whose file did not appear
                total = len(rendered.images)
                raise StudioError(
                    f"Image {len(paths) + 1} of {total} could not be saved in {self.settings.outputs_dir} "
                    f"({exc.strerror or exc}). Free some disk space or let the studio write there, then generate "
                    f"again{f'; the {len(paths)} before it are in your history' if paths else ''}.") from None
        return paths

    def extras(self, requests: list[ExtrasRequest], owner: str = "local") -> list[Result]:
        """Upscale images (the Extras tab, /sdapi/v1/extra-*), each in one of the GPU's slots and saved
        with its parameters in `owner`'s history. Every request is checked before the first runs."""
        names = self.upscalers.names()
        for request in requests:  # bad input is said before the queue, and before any file is written
            request.validate(names)
        results = []
        for request in requests:
            started = time.perf_counter()
            with self._gpu_slots:
                image, text = run_extras(self.upscalers, request)
            rendered = Rendered(images=[image], infotexts=[text], seeds=[0])
            result = Result(images=[image], infotexts=[text], seeds=[0], paths=self.save(rendered, "extras", owner))
            result.seconds = time.perf_counter() - started
            results.append(result)
        return results

    def close(self, timeout: float = 60.0) -> bool:
        """At shutdown: wait (up to `timeout` s) for the saves under way to finish. False if some did not."""
        return self._saves.wait_idle(timeout)

    def _render(self, request: GenerationRequest, preset: Preset, events: JobEvents) -> Rendered:
        """The backend's render, in one of the GPU's slots: waiting for one says its place, and a
        Stop while waiting ends the job with nothing made."""
        if self.backend.queues_jobs:
            return self.backend.submit(request, preset, events)
        if not self._gpu_slots.acquire(blocking=False):
            with self._waiting_lock:
                self._waiting += 1
                place = self._waiting
            try:
                if events.on_status is not None:
                    events.on_status(f"Waiting for the GPU: number {place} in the queue")
                while not self._gpu_slots.acquire(timeout=0.05):
                    if events.stop is not None and events.stop.is_set():
                        return Rendered(stopped=True)
            finally:
                with self._waiting_lock:
                    self._waiting -= 1
        try:
            return self.backend.submit(request, preset, events)
        finally:
            self._gpu_slots.release()

    def lora_names(self, preset: str | None = None) -> list[str]:
        """LoRAs a request with this preset can name: the LoRA folder's and the preset's own."""
        return sorted(set(LoraLibrary(self.settings.loras_dir).names()) | set(self.preset(preset).loras))

    def refused_loras(self) -> list[str]:
        return LoraLibrary(self.settings.loras_dir).refused()

    def lora_info(self, name: str, preset: str | None = None) -> LoraInfo:
        return self.pool.lora_library(self.preset(preset)).info(name)

    def detect_pose(self, photo, preset: str | None = None) -> dict:
        """OpenPose keypoints of the people in a photo, as editable pose JSON."""
        photo = check_image(photo, "Photo")
        results = self.manager(preset).detect_poses(photo)
        if not results:
            raise RequestError("No person was found in the photo. Try one where the whole body is visible.")
        return poses_from_detection(results, photo.width, photo.height)


def _is_sibling(stem: str, other: str) -> bool:
    """`other` (a checkpoint name) is `stem`'s inpainting (FLUX.1: Fill) or instruct companion by its name."""
    other_stem = Path(other).stem.lower()
    rest = other_stem.removeprefix(stem.lower())
    return rest != other_stem and re.fullmatch(r"[-_. ]?(inpainting|inpaint|fill|instruct|pix2pix)", rest) is not None
