"""AUTOMATIC1111's API payloads: JSON in, the studio's requests out, and A1111's response shapes.

Field names and defaults are A1111's (its request models take every field as optional; unknown
fields are ignored, as pydantic does there). A value of the wrong type gets a message naming the
field; ranges are checked by the studio's own request validation, as for the page.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass

from PIL import Image

from studio.checkpoints import OWN_VAE
from studio.control import CONTROL_MODES
from studio.errors import RequestError
from studio.imaging import open_image
from studio.samplers import SAMPLER_NAMES

# A1111's sampler names and the k-diffusion aliases its API accepts -> ours.
SAMPLER_ALIASES = {
    "euler": "Euler", "k_euler": "Euler", "euler a": "Euler a", "euler_a": "Euler a", "k_euler_a": "Euler a",
    "k_euler_ancestral": "Euler a", "dpm++ 2m": "DPM++ 2M", "k_dpmpp_2m": "DPM++ 2M",
    "dpm++ 2m karras": "DPM++ 2M Karras", "k_dpmpp_2m_ka": "DPM++ 2M Karras", "ddim": "DDIM", "unipc": "UniPC",
    "lcm": "LCM",
}
SCHEDULERS = ({"name": "automatic", "label": "Automatic"}, {"name": "karras", "label": "Karras"},
              {"name": "beta", "label": "Beta"})  # Beta: Forge's, for FLUX.1 (Euler Beta)
RESIZE_MODES = ("Just resize", "Resize and crop", "Resize and pad", "Just resize")  # A1111's 0-3 (3: latent)
# "none": the image is the map itself; the others make a mode's map (studio/control.py).
CONTROL_MODULES = ("none", *(module for mode in CONTROL_MODES.values() for module in mode.a1111_modules))


class ApiError(Exception):
    """An error for an A1111 API client: an HTTP status and a message that says what to change."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


MAX_JSON_DEPTH = 32  # A1111's deepest payloads (ControlNet units in alwayson_scripts) nest 5 levels


def parse_json_object(raw: bytes) -> dict:
    """A request body as a JSON object, nested at most MAX_JSON_DEPTH levels."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ApiError(422, f"The JSON body nests too deeply; the studio reads at most {MAX_JSON_DEPTH} levels.") \
            from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "The request body must be JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(422, "The request body must be a JSON object.")
    _check_depth(body)
    return body


def _check_depth(value) -> None:
    """Without recursion: a walk over (value, depth) pairs."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise ApiError(422, f"The JSON body nests {depth} levels deep; the studio reads at most {MAX_JSON_DEPTH}.")
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def get_field(payload: dict, name: str, kind: type, default):
    """`payload[name]` as `kind` (int, float, bool, str), or `default` when absent or null."""
    value = payload.get(name)
    if value is None:
        return default
    if kind is bool:
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
    elif kind is int:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                and int(value) == value:
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif isinstance(value, kind):
        return value
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "text", dict: "an object",
             list: "a list"}
    raise ApiError(422, f"'{name}' must be {names[kind]}, got {json.dumps(value)[:80]}.")


def decode_image(data, name: str, max_bytes: int) -> Image.Image:
    """A base64 image, with or without a `data:image/...;base64,` prefix, through the studio's
    checked decoder (size, format and pixels before decoding; EXIF orientation; 16-bit grey)."""
    if isinstance(data, dict):  # ControlNet's newer {"image": ..., "mask": ...}
        data = data.get("image")
    if not isinstance(data, str) or not data:
        raise ApiError(422, f"'{name}' must be a base64-encoded image.")
    if data.startswith("data:") and "," in data:
        data = data.split(",", 1)[1]
    if len(data) * 3 // 4 > max_bytes + 3:  # known from the text's length, before decoding it
        raise ApiError(413, f"'{name}' is {len(data) * 3 / 4 / 2**20:.1f} MB; the studio takes images up to "
                            f"{max_bytes / 2**20:.0f} MB (--max-upload-mb).")
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        raise ApiError(422, f"'{name}' is not valid base64. Send a base64 PNG, JPEG or WebP.") from None
    try:
        return open_image(raw, f"'{name}'", max_bytes)
    except RequestError as exc:
        raise ApiError(422, str(exc)) from None


def encode_png(path) -> str:
    """A saved PNG as raw base64 (A1111 sends no `data:` prefix); its `parameters` chunk included."""
    with open(path, "rb") as handle:
        return base64.b64encode(handle.read()).decode("ascii")


def sampler_of(payload: dict, default: str, names: tuple[str, ...] = SAMPLER_NAMES) -> str:
    """Our sampler for A1111's `sampler_name` (or `sampler_index`) and `scheduler` (A1111's Karras,
    Forge's Beta), among the model family's `names`."""
    name = payload.get("sampler_name") or payload.get("sampler_index") or default
    if not isinstance(name, str):
        raise ApiError(422, "'sampler_name' must be text.")
    sampler = name if name in names else SAMPLER_ALIASES.get(name.strip().lower())
    if sampler not in names:
        raise ApiError(422, f"Unknown sampler '{name}'. Choose one of: {', '.join(names)}.")
    scheduler = payload.get("scheduler")
    if isinstance(scheduler, str) and f"{sampler} {scheduler.title()}" in names:
        sampler = f"{sampler} {scheduler.title()}"
    return sampler


@dataclass
class Overrides:
    """A1111's per-request `override_settings` that the studio knows; the rest is ignored."""

    model: str | None = None
    vae: str | None = None
    clip_skip: int | None = None


def overrides_of(payload: dict) -> Overrides:
    settings = get_field(payload, "override_settings", dict, {})
    return Overrides(model=get_field(settings, "sd_model_checkpoint", str, None),
                     vae=get_field(settings, "sd_vae", str, None),
                     clip_skip=get_field(settings, "CLIP_stop_at_last_layers", int, None))


def vae_name(value: str | None) -> str:
    """A1111's "Automatic" / "None" mean the model's own VAE."""
    return "" if value in (None, "", OWN_VAE, "None", "auto") else value


def guidance_of(payload: dict, preset) -> float:
    """The guidance a model takes: A1111's `cfg_scale`, Forge's `distilled_cfg_scale` for a
    distilled model (FLUX.1-dev; its `cfg_scale` is 1 there), the preset's for one without."""
    kind, default = preset.capabilities.guidance, preset.defaults.guidance_scale
    if kind == "distilled":
        return get_field(payload, "distilled_cfg_scale", float, default)
    return get_field(payload, "cfg_scale", float, 7.0) if kind == "cfg" else default


def shared_fields(payload: dict, preset) -> dict:
    """The fields every task takes, as the studio's request keyword arguments."""
    prompt = get_field(payload, "prompt", str, "")
    negative = get_field(payload, "negative_prompt", str, "")
    return dict(
        prompt=prompt, negative_prompt=negative,
        steps=get_field(payload, "steps", int, 50),  # A1111's API default
        guidance_scale=guidance_of(payload, preset),
        seed=get_field(payload, "seed", int, -1),
        sampler=sampler_of(payload, preset.defaults.sampler, preset.capabilities.samplers),
        batch_size=get_field(payload, "batch_size", int, 1),
        batch_count=get_field(payload, "n_iter", int, 1),
    )


@dataclass
class ControlUnit:
    image: Image.Image
    module: str
    mode: str  # scribble | openpose
    weight: float
    start: float
    end: float


def control_unit(payload: dict, max_bytes: int) -> ControlUnit | None:
    """The first enabled ControlNet unit of `alwayson_scripts` (any capitalisation of
    "controlnet"); entries of other scripts, and empty or disabled units, are ignored, as clients
    send them (`ADetailer: {args: [false]}`)."""
    scripts = get_field(payload, "alwayson_scripts", dict, {})
    units = []
    for name, script in scripts.items():
        if isinstance(name, str) and name.lower() == "controlnet" and isinstance(script, dict):
            units = [u for u in script.get("args") or [] if isinstance(u, dict)]
    units = [u for u in units if u.get("enabled", False) and (u.get("image") or u.get("input_image"))]
    if not units:
        return None
    if len(units) > 1:
        raise ApiError(422, "Only one ControlNet unit at a time is supported; send one enabled unit.")
    unit = units[0]
    module = get_field(unit, "module", str, "none").lower()
    model = get_field(unit, "model", str, "None").lower()
    modes = list(CONTROL_MODES)
    mode = next((m for m in modes if m in model), None) or next((m for m in modes if m in module), None)
    if mode is None:
        raise ApiError(422, f"Unknown ControlNet model '{unit.get('model')}'. Choose one of: {', '.join(modes)} "
                            "(GET /controlnet/model_list).")
    if module not in CONTROL_MODULES:
        raise ApiError(422, f"Unknown ControlNet module '{module}'. Choose one of: {', '.join(CONTROL_MODULES)}.")
    return ControlUnit(image=decode_image(unit.get("image") or unit.get("input_image"), "ControlNet image",
                                           max_bytes),
                       module=module, mode=mode, weight=get_field(unit, "weight", float, 1.0),
                       start=get_field(unit, "guidance_start", float, 0.0),
                       end=get_field(unit, "guidance_end", float, 1.0))


def mask_of(data, max_bytes: int, name: str = "mask") -> Image.Image:
    """A1111's mask: an RGBA image's alpha, else its grey levels (white = repaint)."""
    image = decode_image(data, name, max_bytes)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").getchannel("A")
    return image.convert("L")


def info_json(result, request, payload: dict, model_title: str) -> str:
    """A1111's `info`: a JSON *string* describing the whole job."""
    from studio.metadata import parse_infotext

    parsed = [parse_infotext(text) for text in result.infotexts]
    params = parsed[0][2] if parsed else {}
    width, height = result.images[0].size if result.images else (request_size(request))
    info = {  # each image's own prompts (wildcards and styles resolved) from its parameters
        "prompt": parsed[0][0] if parsed else request.prompt, "all_prompts": [text[0] for text in parsed],
        "negative_prompt": parsed[0][1] if parsed else request.negative_prompt,
        "all_negative_prompts": [text[1] for text in parsed],
        "seed": result.seeds[0] if result.seeds else request.seed, "all_seeds": result.seeds,
        "subseed": -1, "all_subseeds": [-1] * len(result.seeds), "subseed_strength": 0,
        "width": width, "height": height, "sampler_name": request.sampler, "cfg_scale": request.guidance_scale,
        "steps": request.steps, "batch_size": request.batch_size, "restore_faces": False,
        "face_restoration_model": None, "sd_model_name": params.get("Model", model_title),
        "sd_model_hash": params.get("Model hash"), "sd_vae_name": params.get("VAE"),
        "sd_vae_hash": params.get("VAE hash"), "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": getattr(request, "strength", getattr(request, "hires_denoising", None)),
        "extra_generation_params": {}, "index_of_first_image": 0, "infotexts": result.infotexts,
        "styles": payload.get("styles") or [],
        "job_timestamp": "", "clip_skip": request.clip_skip, "is_using_inpainting_conditioning": False,
        "notes": result.notes, "interrupted": result.stopped,
    }
    if "Distilled CFG Scale" in params:  # as Forge reports FLUX.1-dev's: no real CFG, the distilled value
        info |= {"cfg_scale": 1.0, "distilled_cfg_scale": float(params["Distilled CFG Scale"])}
    return json.dumps(info)


def request_size(request) -> tuple[int, int]:
    return getattr(request, "width", 0), getattr(request, "height", 0)
