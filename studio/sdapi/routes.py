"""AUTOMATIC1111's HTTP API (`/sdapi/v1/*`, `/controlnet/*`) on the studio's own server and port,
so Open WebUI, SillyTavern, the Krita/Photoshop plugins and `webuiapi` use the studio unchanged.

Behind it, the studio's rules hold: each caller (a login, or an anonymous client address) has its
own options (model, VAE, Clip skip), its own job that only it can interrupt, and its own history;
generation waits for the same GPU lock as the page's jobs, so an API job and a browser job never
run at once; limits are the presets' and the server's, as for the page. Errors are A1111's JSON
(`{"error", "detail"}`) with a message that says what to change, never a traceback.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import threading
import time
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from studio.checkpoints import OWN_VAE
from studio.control import CONTROL_MODES, mode_of_a1111_module
from studio.errors import StudioError
from studio.extras import ExtrasRequest
from studio.imaging import resize_image
from studio.job_service import Job
from studio.logins import login_of
from studio.metadata import parse_infotext, read_png_infotext
from studio.requests import (
    INPAINT_AREAS,
    MAX_CLIP_SKIP,
    ControlRequest,
    Img2ImgRequest,
    InpaintRequest,
    InstructRequest,
    Txt2ImgRequest,
)
from studio.samplers import SAMPLER_NAMES
from studio.sdapi.payloads import (
    CONTROL_MODULES,
    RESIZE_MODES,
    SCHEDULERS,
    ApiError,
    ControlUnit,
    control_unit,
    decode_image,
    encode_png,
    get_field,
    info_json,
    mask_of,
    overrides_of,
    parse_json_object,
    shared_fields,
    vae_name,
)
from studio.sdapi.xyz_args import SCRIPT_TITLE, plot_of_script_args
from studio.xyz_plot import plot_job

log = logging.getLogger(__name__)


class SdApi:
    """The state behind the routes: each caller's options and running job."""

    def __init__(self, studio):
        self.studio = studio
        self.settings = studio.settings
        self.jobs = studio.jobs  # the page's job service: one Stop, progress and queue for both
        self._lock = threading.Lock()
        self._options: dict[str, dict] = {}
        self._waiting = threading.BoundedSemaphore(max(1, self.settings.queue_size))
        self.max_image_bytes = self.settings.max_upload_mb * 2**20  # each image, as the page's uploads

    # --- who is calling -----------------------------------------------------------------------

    def caller(self, request: Request) -> str:
        """The caller's identity: its login (HTTP Basic, as Open WebUI sends it, or the page's
        session cookie) when logins are on, else its address. Anonymous callers are refused then."""
        if not self.settings.auth:
            return f"api:{request.client.host if request.client else 'local'}"
        user = login_of(request.headers, self.settings.auth, request.app)
        if user is not None:
            return f"user:{user}"
        raise ApiError(401, "This studio asks for a login: send HTTP Basic auth with a user and password it knows "
                            "(in Open WebUI: 'user:password' in the AUTOMATIC1111 API auth field).")

    # --- options --------------------------------------------------------------------------------

    def options(self, owner: str) -> dict:
        with self._lock:
            if owner not in self._options:
                self._options[owner] = {
                    "sd_model_checkpoint": self.settings.preset, "sd_vae": OWN_VAE, "CLIP_stop_at_last_layers": 1,
                    "samples_format": "png", "sd_checkpoint_hash": None, "save_images": True,
                }
            return dict(self._options[owner])

    def set_options(self, owner: str, changes: dict) -> None:
        """Apply what the studio knows of A1111's options (checked first); other keys are kept as
        sent, so a client can POST back the whole dict it got."""
        options = self.options(owner)
        if "sd_model_checkpoint" in changes:
            model = get_field(changes, "sd_model_checkpoint", str, options["sd_model_checkpoint"])
            self.studio.preset(model)  # an unknown or refused model says so
        if "sd_vae" in changes:
            vae = get_field(changes, "sd_vae", str, OWN_VAE)
            if vae_name(vae):
                self.studio.user_models.vaes.path(vae_name(vae))
        if "CLIP_stop_at_last_layers" in changes:
            clip_skip = get_field(changes, "CLIP_stop_at_last_layers", int, 1)
            if not 1 <= clip_skip <= MAX_CLIP_SKIP:
                raise ApiError(422, f"CLIP_stop_at_last_layers must be between 1 and {MAX_CLIP_SKIP}, got {clip_skip}.")
        options.update(changes)
        with self._lock:
            self._options[owner] = options

    # --- generation -----------------------------------------------------------------------------

    def generate(self, owner: str, request, model: str, payload: dict) -> dict:
        """Run a request (or a Job of several) as `owner`'s job; A1111's answer."""
        if not self._waiting.acquire(blocking=False):
            raise ApiError(503, f"The studio is busy: {self.settings.queue_size} jobs are waiting. Try again in a "
                                "moment.")
        try:
            job = self._job(owner, request, model, payload)
            result = self.jobs.run(owner, job)
        finally:
            self._waiting.release()
        first = job.generations[0].request
        return {"images": [encode_png(path) for path in result.paths], "parameters": payload,
                "info": info_json(result, first, payload, model)}

    def _job(self, owner: str, request, model: str, payload: dict) -> Job:
        """The request's job: with its styles, as an X/Y/Z plot when the payload names that script."""
        styles = self._styles(payload)
        if not _names_script(payload):
            return self.jobs.job_for(request, model, styles, owner)
        mode = "txt2img" if request.task in ("txt2img", "control") else "img2img"
        axes, options = plot_of_script_args(payload.get("script_args", []), mode)
        return plot_job(self.studio, self.jobs.styled(request, styles, owner), model, axes, options, owner,
                        self.settings.max_plot_images)

    @staticmethod
    def _styles(payload: dict) -> list[str]:
        styles = payload.get("styles") or []
        if not isinstance(styles, list) or not all(isinstance(name, str) for name in styles):
            raise ApiError(422, "'styles' must be a list of style names (GET /sdapi/v1/prompt-styles lists them).")
        return styles

    def prompt_styles(self, owner: str) -> list[dict]:
        return [{"name": style.name, "prompt": style.prompt, "negative_prompt": style.negative_prompt}
                for style in self.studio.styles.styles(owner).values()]

    def progress(self, owner: str, with_image: bool) -> dict:
        job = self.jobs.progress(owner)
        if job is None:
            return {"progress": 0.0, "eta_relative": 0.0, "state": _state(None), "current_image": None,
                    "textinfo": None}
        fraction = job.fraction()
        elapsed = time.time() - job.started
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        image = _png_b64(job.preview) if with_image and job.preview is not None else None
        return {"progress": fraction, "eta_relative": eta, "state": _state(job), "current_image": image,
                "textinfo": job.text()}

    # --- requests from payloads -----------------------------------------------------------------

    def _model_and_shared(self, owner: str, payload: dict) -> tuple[str, dict]:
        script = payload.get("script_name")
        if script not in (None, "", "None") and not _names_script(payload):  # A1111: 422 for a script it lacks
            raise ApiError(422, f"Script {str(script)[:80]!r} not found: this studio runs the A1111 script "
                                f"{SCRIPT_TITLE!r} only. Leave 'script_name' out for a plain generation.")
        options, overrides = self.options(owner), overrides_of(payload)
        model = overrides.model or options["sd_model_checkpoint"]
        preset = self.studio.preset(model)
        shared = shared_fields(payload, preset)
        shared["vae"] = vae_name(overrides.vae if overrides.vae is not None else options["sd_vae"])
        shared["clip_skip"] = overrides.clip_skip or get_field(options, "CLIP_stop_at_last_layers", int, 1)
        return model, shared

    def txt2img(self, owner: str, payload: dict) -> dict:
        model, shared = self._model_and_shared(owner, payload)
        width, height = get_field(payload, "width", int, 512), get_field(payload, "height", int, 512)
        hires = {}
        if get_field(payload, "enable_hr", bool, False):
            scale = get_field(payload, "hr_scale", float, 2.0)
            resize_x, resize_y = get_field(payload, "hr_resize_x", int, 0), get_field(payload, "hr_resize_y", int, 0)
            if resize_x or resize_y:  # A1111's "resize to": the larger of the two ratios
                scale = max(resize_x / width, resize_y / height)
            hires = {"hires_fix": True, "hires_scale": scale, "hires_steps": get_field(payload, "hr_second_pass_steps",
                                                                                   int, 0),
                     "hires_denoising": get_field(payload, "denoising_strength", float, 0.7)}
        unit = control_unit(payload, self.max_image_bytes)
        if unit is None:
            request = Txt2ImgRequest(width=width, height=height, **hires, **shared)
        else:
            request = ControlRequest(width=width, height=height, control_image=self._control_map(unit, model),
                                     control_mode=unit.mode, conditioning_scale=unit.weight,
                                     guidance_start=unit.start, guidance_end=unit.end, **hires, **shared)
        return self.generate(owner, request, model, payload)

    def img2img(self, owner: str, payload: dict) -> dict:
        model, shared = self._model_and_shared(owner, payload)
        if control_unit(payload, self.max_image_bytes) is not None:
            raise ApiError(422, "ControlNet units work with txt2img here; send the unit to /sdapi/v1/txt2img.")
        images = get_field(payload, "init_images", list, [])
        if not images:
            raise ApiError(422, "'init_images' must hold one base64 image.")
        image = decode_image(images[0], "init_images[0]", self.max_image_bytes).convert("RGB")
        width, height = get_field(payload, "width", int, 512), get_field(payload, "height", int, 512)
        mode_index = get_field(payload, "resize_mode", int, 0)
        if not 0 <= mode_index < len(RESIZE_MODES):
            raise ApiError(422, f"'resize_mode' must be 0-3 ({', '.join(RESIZE_MODES[:3])}, latent), got {mode_index}.")
        mode = RESIZE_MODES[mode_index]
        strength = get_field(payload, "denoising_strength", float, 0.75)
        if payload.get("mask"):
            only_masked = get_field(payload, "inpaint_full_res", bool, True)  # A1111's API default
            resized = resize_image(image, mode, width, height)
            mask = mask_of(payload["mask"], self.max_image_bytes)
            mask = resize_image(mask.convert("RGB"), mode, width, height).convert("L")
            request = InpaintRequest(
                image=resized, mask=mask, invert_mask=get_field(payload, "inpainting_mask_invert", int, 0) == 1,
                mask_blur=get_field(payload, "mask_blur", int, 4), strength=strength,
                inpaint_area=INPAINT_AREAS[1] if only_masked else INPAINT_AREAS[0],
                padding=get_field(payload, "inpaint_full_res_padding", int, 32), **shared)
        elif self._is_instruct(model):  # A1111 runs an InstructPix2Pix checkpoint with image_cfg_scale
            request = InstructRequest(image=resize_image(image, mode, width, height),
                                      image_guidance_scale=get_field(payload, "image_cfg_scale", float, 1.5), **shared)
        else:
            request = Img2ImgRequest(image=image, strength=strength, resize_mode=mode, width=width, height=height,
                                     **shared)
        return self.generate(owner, request, model, payload)

    def _is_instruct(self, model: str) -> bool:
        checkpoint = self.studio.preset(model).checkpoint
        return bool(checkpoint) and self.studio.user_models.checkpoints.info(checkpoint).kind == "instruct"

    def _control_map(self, unit: ControlUnit, model: str):
        """The ControlNet map for a unit: the image itself (module none), else the map its mode's
        preprocessor makes (studio/control.py: a scribble, a detected pose's skeleton, canny edges)."""
        mode = mode_of_a1111_module(unit.module)
        if mode is None:  # "none"
            return unit.image.convert("RGB")
        return CONTROL_MODES[mode].preprocess(unit.image, lambda photo: self.studio.detect_pose(photo, model))

    # --- listings -------------------------------------------------------------------------------

    def sd_models(self) -> list[dict]:
        models = []
        for name in self.studio.preset_names():
            preset = self.studio.preset(name)
            models.append({"title": name, "model_name": name, "hash": None, "sha256": None,
                           "filename": preset.base_id, "config": None})
        for name in self.studio.user_models.checkpoints.names():
            path = self.studio.user_models.checkpoints.path(name)
            models.append({"title": name, "model_name": Path(name).stem, "hash": None, "sha256": None,
                           "filename": str(path), "config": None})
        return models

    def loras(self) -> list[dict]:
        """Every LoRA the caller can name; one that cannot be read says why in its metadata."""
        listed = []
        for name in self.studio.lora_names():
            try:
                entry = {"path": self.studio.lora_info(name).source, "metadata": {}}
            except StudioError as exc:
                entry = {"path": "", "metadata": {"error": str(exc)}}
            listed.append({"name": name, "alias": name, **entry})
        return listed

    def upscalers(self) -> list[dict]:
        library = self.studio.upscalers
        files = library.files()
        listed = []
        for name in library.names():
            file = files.get(name)
            listed.append({"name": name, "model_name": name if file else None,
                           "model_path": str(file.path) if file else None, "model_url": None,
                           "scale": library.model(name).scale if file else (1 if name == "None" else 4)})
        return listed

    def _extras_request(self, payload: dict, image) -> ExtrasRequest:
        by_size = get_field(payload, "resize_mode", int, 0) == 1
        return ExtrasRequest(
            image=image, scale=get_field(payload, "upscaling_resize", float, 2.0),
            width=get_field(payload, "upscaling_resize_w", int, 512) if by_size else 0,
            height=get_field(payload, "upscaling_resize_h", int, 512) if by_size else 0,
            upscaler=get_field(payload, "upscaler_1", str, "None"), upscaler_2=get_field(payload, "upscaler_2", str,
                                                                                            "None"),
            upscaler_2_visibility=get_field(payload, "extras_upscaler_2_visibility", float, 0.0))

    def extra_single_image(self, owner: str, payload: dict) -> dict:
        image = decode_image(payload.get("image"), "image", self.max_image_bytes)
        [result] = self.studio.extras([self._extras_request(payload, image)], owner)
        return {"html_info": result.infotexts[0], "image": encode_png(result.paths[0])}

    def extra_batch_images(self, owner: str, payload: dict) -> dict:
        items = get_field(payload, "imageList", list, [])
        if not items or not all(isinstance(item, dict) for item in items):
            raise ApiError(422, "'imageList' must hold images as {\"data\": base64, \"name\": ...}.")
        images = [decode_image(item.get("data"), f"imageList[{i}]", self.max_image_bytes)
                  for i, item in enumerate(items)]
        results = self.studio.extras([self._extras_request(payload, image) for image in images], owner)
        paths = [result.paths[0] for result in results]
        return {"html_info": "", "images": [encode_png(path) for path in paths]}

    def embeddings(self) -> dict:
        loaded, skipped = {}, {}
        library = self.studio.user_models.embeddings
        for trigger, path in library.by_trigger().items():
            try:
                embedding = library.get(trigger, path)
                loaded[trigger] = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                   "shape": embedding.width(), "vectors": embedding.tokens}
            except StudioError as exc:
                skipped[trigger] = {"error": str(exc)}
        return {"loaded": loaded, "skipped": skipped}


def _names_script(payload: dict) -> bool:
    """The payload asks for the X/Y/Z plot (A1111 matches script titles without case)."""
    script = payload.get("script_name")
    return isinstance(script, str) and script.strip().lower() == SCRIPT_TITLE


def json_safe(value):
    """`value` with NaN and infinities (which a client may send, and JSON cannot carry back) as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


def _state(job) -> dict:
    """A1111's `state` of a caller's job (None: no job)."""
    state = {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "", "job_count": 0,
             "job_timestamp": "", "job_no": 0, "sampling_step": 0, "sampling_steps": 0}
    if job is not None:
        state |= {"job": "1", "job_count": job.items, "job_no": max(0, job.item - 1), "sampling_step": job.done,
                  "sampling_steps": job.total}
    return state


def _png_b64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _error(status: int, message: str, kind: str = "HTTPException") -> JSONResponse:
    headers = {"WWW-Authenticate": 'Basic realm="SD Studio"'} if status == 401 else None
    return JSONResponse({"error": kind, "detail": message, "body": "", "errors": ""}, status_code=status,
                        headers=headers)


async def _answer(request: Request, api: SdApi, work, with_body: bool = False):
    """Run `work(owner[, body])` off the event loop; every failure becomes A1111's JSON error."""
    try:
        owner = api.caller(request)
        args = [owner]
        if with_body:
            args.append(await read_json_body(request, api.settings.max_body_bytes))
        return JSONResponse(json_safe(await run_in_threadpool(work, *args)))
    except ApiError as exc:
        return _error(exc.status, str(exc))
    except StudioError as exc:
        return _error(422, str(exc), type(exc).__name__)
    except Exception as exc:  # a bug or a library failure: the server keeps serving
        log.exception("A1111 API call failed")
        return _error(500, f"The request failed ({type(exc).__name__}: {exc}). The studio is still running.",
                      type(exc).__name__)


async def read_json_body(request: Request, limit: int) -> dict:
    """The body as a JSON object. Like A1111 (FastAPI), only `application/json` is read: a page of
    another site can send `text/plain` without asking first, JSON it cannot."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(422, f"Send the body as JSON with 'Content-Type: application/json' (got "
                            f"{media_type[:60] or 'none'!r}).")
    try:
        raw = await request.body()
    except ClientDisconnect:  # the guard ends a body without Content-Length once it passes the limit
        raise ApiError(413, f"The request body is over this studio's limit of {limit // 2**20} MB, or the client "
                            "went away while sending it.") from None
    return await run_in_threadpool(parse_json_object, raw)


def sdapi_routes(studio) -> list:
    """The routes of the studio's app (studio.ui.studio_app), behind the same guard as the page's."""
    api = SdApi(studio)
    router = APIRouter()

    def get(path: str, work):
        async def handler(request: Request):
            return await _answer(request, api, work)
        router.add_api_route(path, handler, methods=["GET"], include_in_schema=False)

    def post(path: str, work, with_body: bool = True):
        async def handler(request: Request):
            return await _answer(request, api, work, with_body)
        router.add_api_route(path, handler, methods=["POST"], include_in_schema=False)

    v1 = "/sdapi/v1"
    post(f"{v1}/txt2img", api.txt2img)
    post(f"{v1}/img2img", api.img2img)
    get(f"{v1}/options", api.options)
    post(f"{v1}/options", lambda owner, body: api.set_options(owner, body))
    get(f"{v1}/sd-models", lambda owner: api.sd_models())
    get(f"{v1}/sd-vae", lambda owner: [{"model_name": name, "filename": str(path)}
                                       for name, path in sorted(studio.user_models.vaes.files.files().items())])
    get(f"{v1}/samplers", lambda owner: [{"name": name, "aliases": [], "options": {}} for name in SAMPLER_NAMES])
    get(f"{v1}/schedulers", lambda owner: list(SCHEDULERS))
    get(f"{v1}/upscalers", lambda owner: api.upscalers())
    post(f"{v1}/extra-single-image", api.extra_single_image)
    post(f"{v1}/extra-batch-images", api.extra_batch_images)
    get(f"{v1}/latent-upscale-modes", lambda owner: [])
    get(f"{v1}/loras", lambda owner: api.loras())
    post(f"{v1}/refresh-loras", lambda owner: None, with_body=False)
    post(f"{v1}/refresh-checkpoints", lambda owner: None, with_body=False)
    post(f"{v1}/refresh-vae", lambda owner: None, with_body=False)
    get(f"{v1}/embeddings", lambda owner: api.embeddings())
    get(f"{v1}/prompt-styles", api.prompt_styles)
    get(f"{v1}/face-restorers", lambda owner: [])
    get(f"{v1}/hypernetworks", lambda owner: [])
    get(f"{v1}/realesrgan-models", lambda owner: [])
    get(f"{v1}/cmd-flags", lambda owner: {"api": True, "listen": studio.settings.host != "127.0.0.1"})
    get(f"{v1}/scripts", lambda owner: {"txt2img": [SCRIPT_TITLE, "controlnet"], "img2img": [SCRIPT_TITLE]})
    get(f"{v1}/memory", lambda owner: _memory())
    post(f"{v1}/interrupt", lambda owner: api.jobs.stop(owner) and None, with_body=False)
    # A1111's skip ends the current image and goes on with the batch; here it ends the job, keeping
    # the images that finished (the same as interrupt).
    post(f"{v1}/skip", lambda owner: api.jobs.stop(owner) and None, with_body=False)
    post(f"{v1}/png-info", lambda owner, body: _png_info(body, api.max_image_bytes))

    async def progress(request: Request):
        with_image = request.query_params.get("skip_current_image", "false").lower() != "true"
        return await _answer(request, api, lambda owner: api.progress(owner, with_image))
    router.add_api_route(f"{v1}/progress", progress, methods=["GET"], include_in_schema=False)

    get("/controlnet/version", lambda owner: {"version": 2})
    get("/controlnet/model_list", lambda owner: {"model_list": list(CONTROL_MODES)})
    get("/controlnet/module_list", lambda owner: {"module_list": list(CONTROL_MODULES)})
    return router.routes


def _png_info(body: dict, max_bytes: int) -> dict:
    image = decode_image(body.get("image"), "image", max_bytes)
    text = read_png_infotext(image) or ""
    prompt, negative, params = parse_infotext(text)
    parameters = {"Prompt": prompt, "Negative prompt": negative, **params} if text else {}
    return {"info": text, "items": {"parameters": text} if text else {}, "parameters": parameters}


def _memory() -> dict:
    import psutil
    import torch

    ram = psutil.virtual_memory()
    answer = {"ram": {"free": ram.available, "used": ram.total - ram.available, "total": ram.total}}
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        answer["cuda"] = {"system": {"free": free, "used": total - free, "total": total}}
    else:
        answer["cuda"] = {"error": "no CUDA GPU"}
    return answer
