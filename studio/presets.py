"""Model presets: `presets/<name>.toml` files naming the models, defaults and limits of a family.

A preset is data only. Unknown keys and wrong types are errors that name the file and the key,
so a typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path

from studio.control import CONTROL_MODES
from studio.errors import PresetError
from studio.families import FAMILIES, Capabilities, Family, family_of

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"  # diffusers configs for single-file checkpoints

GUIDANCE_KINDS = ("cfg", "distilled", "none")

# Roles a preset can fill; each tab needs one of them. "control.*" are the ControlNets.
ROLES = ("base", "inpaint", "instruct", *(f"control.{mode}" for mode in CONTROL_MODES), "pose_annotator",
         "preview_vae")

# A table whose keys are the user's own names and whose values are strings ([loras]).
NAMED_STRINGS = "named strings"

# One few-step speed preset ([speed.<name>]): a LoRA of [loras] with the sampler, steps and CFG it
# is made for, which the page sets with one pick.
_SPEED_SCHEMA: dict = {"title": str, "lora": str, "weight": float, "sampler": str, "steps": int,
                       "guidance_scale": float}

# The schema: key -> expected type, or a nested table. `float` also accepts integers.
_SCHEMA: dict = {
    "title": str,
    "description": str,
    "family": str,
    "guidance": str,  # overrides the family's guidance kind (FLUX.1-schnell: "none")
    "max_prompt_tokens": int,  # overrides the family's (FLUX.1-schnell's T5 reads 256)
    "licence": str,  # shown in the model picker's description (FLUX.1-dev: non-commercial)
    "build": str,
    "variant": str,
    "model_cache_mb": int,
    "checkpoint_config": str,
    "models": {
        "base": str,
        "inpaint": str,
        "instruct": str,
        "pose_annotator": str,
        "preview_vae": str,
        "control": {mode: str for mode in CONTROL_MODES},  # the modes studio/control.py makes maps for
    },
    "loras": NAMED_STRINGS,  # name -> hub id ("org/repo" or "org/repo/file.safetensors") or "./file"
    "speed": _SPEED_SCHEMA,  # [speed.<name>] tables, each of these keys
    "defaults": {
        "steps": int,
        "guidance_scale": float,
        "width": int,
        "height": int,
        "sampler": str,
        "negative_prompt": str,
    },
    "limits": {
        "max_width": int,
        "max_height": int,
        "max_steps": int,
        "max_batch_size": int,
        "max_batch_count": int,
    },
}
_REQUIRED = ("title", "family", "models.base")
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number"}
_BUILDERS = ("tiny",)


@dataclass(frozen=True)
class Defaults:
    steps: int = 25
    guidance_scale: float = 7.0
    width: int = 512
    height: int = 512
    sampler: str = "DPM++ 2M Karras"
    negative_prompt: str = ""


@dataclass(frozen=True)
class Limits:
    max_width: int = 1024
    max_height: int = 1024
    max_steps: int = 150
    max_batch_size: int = 8
    max_batch_count: int = 16
    size_multiple: int = 8  # the family's (not a preset key): sides are multiples of it


@dataclass(frozen=True)
class SpeedPreset:
    """A few-step LoRA (LCM, TCD, Hyper-SD) and the settings it is made for."""

    title: str
    lora: str
    sampler: str
    steps: int
    guidance_scale: float
    weight: float = 1.0


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    family: str
    models: dict[str, str]
    defaults: Defaults = field(default_factory=Defaults)
    limits: Limits = field(default_factory=Limits)
    description: str = ""
    loras: dict[str, str] = field(default_factory=dict)  # LoRAs the preset offers besides the folder
    build: str | None = None  # "tiny": the models are built from code on first use
    variant: str | None = None  # e.g. "fp16": which weight files to fetch in half precision
    # Room for specialised models beside the base (inpaint/instruct UNets, ControlNets, annotator),
    # least recently used evicted; 0 = no limit. --model-cache-mb overrides it.
    model_cache_mb: int = 0
    # The diffusers configs a single-file checkpoint of this family is loaded with: a folder name in
    # studio/configs, or "./x" under the models folder. None: checkpoints do not derive from it.
    checkpoint_config: str | None = None
    # The checkpoint file this preset was derived from (its base, inpaint or instruct model).
    checkpoint: str | None = None
    # Where a transformer-only checkpoint's text encoders, VAE and scheduler come from: the base
    # of the family preset it was derived from.
    components_from: str | None = None
    guidance: str | None = None  # None: the family's kind
    max_prompt_tokens: int | None = None  # None: the family's
    licence: str = ""
    speed: dict[str, SpeedPreset] = field(default_factory=dict)  # name -> a few-step speed preset

    @property
    def base_id(self) -> str:
        return self.models["base"]

    @property
    def family_spec(self) -> Family:
        return family_of(self.family)

    @property
    def capabilities(self) -> Capabilities:
        caps = self.family_spec.capabilities
        if self.guidance:
            caps = replace(caps, guidance=self.guidance)
        return replace(caps, prompt_tokens=self.max_prompt_tokens) if self.max_prompt_tokens else caps

    def model(self, role: str) -> str | None:
        """The hub id or folder for `role`, or None when this preset has no model for it."""
        return self.models.get(role)

    def missing_model_message(self, role: str) -> str:
        """What a tab that needs `role` says when this preset has no model for it."""
        return (f"The preset '{self.name}' has no {role} model, so this tab is not available with it. "
                f"Add '{role}' under [models] in presets/{self.name}.toml or pick another preset.")


def _check_types(table: dict, schema: dict, path: Path, prefix: str = "") -> None:
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            allowed = ", ".join(f"{prefix}{k}" for k in schema)
            raise PresetError(f"{path}: unknown key '{dotted}' (allowed here: {allowed})")
        expected = schema[key]
        if expected == NAMED_STRINGS:
            if not isinstance(value, dict):
                raise PresetError(f"{path}: '{dotted}' must be a table ([{dotted}]) of name = \"model id\"")
            for name, ref in value.items():
                if not isinstance(ref, str):
                    raise PresetError(f"{path}: '{dotted}.{name}' must be a string, got {type(ref).__name__}")
            continue
        if expected is _SPEED_SCHEMA:
            if not isinstance(value, dict) or not all(isinstance(table, dict) for table in value.values()):
                raise PresetError(f"{path}: '{dotted}' must hold tables ([{dotted}.<name>]) of "
                                  f"{', '.join(_SPEED_SCHEMA)}")
            for name, table in value.items():
                _check_types(table, _SPEED_SCHEMA, path, f"{dotted}.{name}.")
            continue
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                raise PresetError(f"{path}: '{dotted}' must be a table ([{dotted}])")
            _check_types(value, expected, path, f"{dotted}.")
            continue
        ok = isinstance(value, expected) and not isinstance(value, bool)
        if expected is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise PresetError(
                f"{path}: '{dotted}' must be {_TYPE_NAMES[expected]}, got {type(value).__name__} {value!r}"
            )


def _lookup(table: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(table, dict) or part not in table:
            return None
        table = table[part]
    return table


def _flatten_models(models: dict) -> dict[str, str]:
    flat = {k: v for k, v in models.items() if k != "control"}
    flat.update({f"control.{k}": v for k, v in models.get("control", {}).items()})
    return flat


def _check_positive(values: dict, path: Path, section: str) -> None:
    for key, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0 and key != "guidance_scale":
            raise PresetError(f"{path}: '{section}.{key}' must be greater than 0, got {value}")


def parse_preset(path: Path) -> Preset:
    """Read and validate one preset file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{path}: not valid TOML ({exc})") from None
    _check_types(data, _SCHEMA, path)
    for dotted in _REQUIRED:
        if _lookup(data, dotted) is None:
            raise PresetError(f"{path}: missing required key '{dotted}'")
    if data["family"] not in FAMILIES.names():
        raise PresetError(f"{path}: 'family' must be one of {', '.join(FAMILIES.names())}, got {data['family']!r}")
    if data.get("guidance") is not None and data["guidance"] not in GUIDANCE_KINDS:
        raise PresetError(f"{path}: 'guidance' must be one of {', '.join(GUIDANCE_KINDS)}, got {data['guidance']!r}")
    if data.get("build") is not None and data["build"] not in _BUILDERS:
        raise PresetError(f"{path}: 'build' must be one of {', '.join(_BUILDERS)}, got {data['build']!r}")
    defaults = data.get("defaults", {})
    limits = data.get("limits", {})
    _check_positive(defaults, path, "defaults")
    _check_positive(limits, path, "limits")
    if data.get("model_cache_mb", 0) < 0:
        raise PresetError(f"{path}: 'model_cache_mb' must be 0 (no limit) or more, got {data['model_cache_mb']}")
    preset = Preset(
        name=path.stem,
        title=data["title"],
        family=data["family"],
        models=_flatten_models(data["models"]),
        defaults=Defaults(**defaults),
        limits=Limits(**limits, size_multiple=family_of(data["family"]).size_multiple),
        description=data.get("description", ""),
        loras=data.get("loras", {}),
        build=data.get("build"),
        variant=data.get("variant"),
        model_cache_mb=data.get("model_cache_mb", 0),
        checkpoint_config=data.get("checkpoint_config"),
        guidance=data.get("guidance"),
        max_prompt_tokens=data.get("max_prompt_tokens"),
        licence=data.get("licence", ""),
        speed={name: _speed_preset(name, table, path) for name, table in data.get("speed", {}).items()},
    )
    _check_defaults_within_limits(preset, path)
    _check_speed_presets(preset, path)
    config = preset.checkpoint_config
    if config is not None and not config.startswith("./") and not (CONFIGS_DIR / config / "model_index.json").is_file():
        shipped = ", ".join(sorted(p.name for p in CONFIGS_DIR.iterdir() if p.is_dir()))
        raise PresetError(f"{path}: 'checkpoint_config' must name a folder of studio/configs ({shipped}) "
                          f"or a './' path under the models folder, got {config!r}")
    return preset


def _check_defaults_within_limits(preset: Preset, path: Path) -> None:
    d, lim = preset.defaults, preset.limits
    if d.steps > lim.max_steps:
        raise PresetError(f"{path}: 'defaults.steps' ({d.steps}) is above 'limits.max_steps' ({lim.max_steps})")
    for side in ("width", "height"):
        value, limit = getattr(d, side), getattr(lim, f"max_{side}")
        if value % lim.size_multiple or value > limit:
            raise PresetError(f"{path}: 'defaults.{side}' ({value}) must be a multiple of {lim.size_multiple} and at "
                              f"most 'limits.max_{side}' ({limit})")
    if d.sampler not in preset.capabilities.samplers:
        raise PresetError(f"{path}: 'defaults.sampler' ({d.sampler!r}) is not one of {preset.family_spec.title}'s "
                          f"samplers: {', '.join(preset.capabilities.samplers)}")


def _speed_preset(name: str, table: dict, path: Path) -> SpeedPreset:
    required = [f.name for f in fields(SpeedPreset) if f.default is MISSING]
    missing = [key for key in required if key not in table]
    if missing:
        raise PresetError(f"{path}: 'speed.{name}' is missing {', '.join(missing)}")
    return SpeedPreset(**table)


def _check_speed_presets(preset: Preset, path: Path) -> None:
    for name, speed in preset.speed.items():
        if speed.lora not in preset.loras:
            raise PresetError(f"{path}: 'speed.{name}.lora' ({speed.lora!r}) must name one of [loras]: "
                              f"{', '.join(preset.loras) or '(none)'}")
        if speed.sampler not in preset.capabilities.samplers:
            raise PresetError(f"{path}: 'speed.{name}.sampler' ({speed.sampler!r}) is not one of "
                              f"{', '.join(preset.capabilities.samplers)}")
        if not 0 < speed.steps <= preset.limits.max_steps:
            raise PresetError(f"{path}: 'speed.{name}.steps' must be from 1 to 'limits.max_steps' "
                              f"({preset.limits.max_steps}), got {speed.steps}")


def available_presets(presets_dir: Path) -> list[str]:
    return sorted(p.stem for p in presets_dir.glob("*.toml"))


def load_preset(name: str, presets_dir: Path) -> Preset:
    """Load a preset by name; the name can never reach outside `presets_dir`."""
    names = available_presets(presets_dir)
    if name not in names:
        raise PresetError(f"Unknown preset '{name}'. Available presets: {', '.join(names) or '(none)'}.")
    return parse_preset(presets_dir / f"{name}.toml")
