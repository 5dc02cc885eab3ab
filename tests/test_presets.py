from pathlib import Path

import pytest

from studio.errors import ModelUnavailableError, PresetError
from studio.presets import available_presets, load_preset, parse_preset
from studio.settings import REPO_ROOT, Settings

PRESETS = REPO_ROOT / "presets"


def write(tmp_path: Path, text: str, name: str = "custom") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


MINIMAL = 'title = "Mine"\nfamily = "sd"\n[models]\nbase = "org/model"\n'


def test_shipped_presets_all_parse():
    assert {"sd15", "sdxl", "sd-turbo", "tiny"} <= set(available_presets(PRESETS))
    for name in available_presets(PRESETS):
        preset = load_preset(name, PRESETS)
        assert preset.model("base")
    assert load_preset("sd15", PRESETS).model("control.openpose") == "lllyasviel/control_v11p_sd15_openpose"
    turbo = load_preset("sd-turbo", PRESETS)
    assert turbo.defaults.guidance_scale == 0 and turbo.defaults.steps <= 4


def test_minimal_preset_gets_defaults(tmp_path):
    preset = parse_preset(write(tmp_path, MINIMAL))
    assert preset.name == "custom" and preset.defaults.width == 512 and preset.limits.max_steps == 150
    assert preset.model("inpaint") is None


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, MINIMAL + "[defaults]\nstepz = 20\n")
    with pytest.raises(PresetError) as err:
        parse_preset(path)
    assert str(path) in str(err.value) and "defaults.stepz" in str(err.value)


def test_unknown_top_level_and_model_role(tmp_path):
    with pytest.raises(PresetError, match="unknown key 'colour'"):
        parse_preset(write(tmp_path, 'colour = "red"\n' + MINIMAL))
    with pytest.raises(PresetError, match="models.control.depth"):  # a mode the studio cannot draw a map for
        parse_preset(write(tmp_path, MINIMAL + '[models.control]\ndepth = "x/y"\n'))


@pytest.mark.parametrize(
    "extra, key",
    [
        ('[defaults]\nsteps = "twenty"\n', "defaults.steps"),
        ("[defaults]\nwidth = 512.5\n", "defaults.width"),
        ("[limits]\nmax_batch_size = true\n", "limits.max_batch_size"),
        ("[defaults]\nsampler = 3\n", "defaults.sampler"),
    ],
)
def test_wrong_type_names_file_and_key(tmp_path, extra, key):
    path = write(tmp_path, MINIMAL + extra)
    with pytest.raises(PresetError) as err:
        parse_preset(path)
    assert str(path) in str(err.value) and f"'{key}' must be" in str(err.value)


def test_float_accepts_integer(tmp_path):
    assert parse_preset(write(tmp_path, MINIMAL + "[defaults]\nguidance_scale = 5\n")).defaults.guidance_scale == 5


def test_missing_base_bad_family_and_bad_toml(tmp_path):
    with pytest.raises(PresetError, match="missing required key 'models.base'"):
        parse_preset(write(tmp_path, 'title = "x"\nfamily = "sd"\n[models]\ninpaint = "a/b"\n'))
    with pytest.raises(PresetError, match="'family' must be one of"):
        parse_preset(write(tmp_path, MINIMAL.replace('"sd"', '"sd3"')))
    with pytest.raises(PresetError, match="not valid TOML"):
        parse_preset(write(tmp_path, "title = \n"))


def test_defaults_must_fit_limits(tmp_path):
    with pytest.raises(PresetError, match="defaults.steps"):
        parse_preset(write(tmp_path, MINIMAL + "[defaults]\nsteps = 80\n[limits]\nmax_steps = 50\n"))
    with pytest.raises(PresetError, match="multiple of 8"):
        parse_preset(write(tmp_path, MINIMAL + "[defaults]\nwidth = 500\n"))


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(PresetError) as err:
        load_preset("nope", PRESETS)
    assert "Unknown preset 'nope'" in str(err.value) and "sd15" in str(err.value)


@pytest.mark.parametrize("name", ["../presets/sd15", "/etc/passwd", "sd15.toml", ""])
def test_preset_names_cannot_escape_the_folder(name):
    with pytest.raises(PresetError, match="Unknown preset"):
        load_preset(name, PRESETS)


def test_missing_role_says_which_tab_and_preset(tmp_path):
    from studio.models import ModelManager

    manager = ModelManager(load_preset("sd-turbo", PRESETS), Settings(models_dir=tmp_path, device="cpu"))
    with pytest.raises(ModelUnavailableError) as err:
        manager.resolve("inpaint")
    message = str(err.value)
    assert "sd-turbo" in message and "inpaint" in message and "this tab is not available" in message


def test_model_cache_budget_is_read_and_checked(tmp_path):
    assert parse_preset(write(tmp_path, MINIMAL)).model_cache_mb == 0  # no limit unless the preset says
    assert load_preset("sd15", PRESETS).model_cache_mb == 2900
    with pytest.raises(PresetError, match="'model_cache_mb' must be 0 \\(no limit\\) or more, got -5"):
        parse_preset(write(tmp_path, "model_cache_mb = -5\n" + MINIMAL))


SPEED = MINIMAL + '[loras]\nlcm = "latent-consistency/lcm-lora-sdv1-5"\n[speed.lcm]\ntitle = "LCM · 6 steps"\n'


def test_speed_presets_are_read_and_checked(tmp_path):
    """A few-step LoRA preset names a LoRA of [loras], a sampler of the family and steps within the limits."""
    sd15 = load_preset("sd15", PRESETS)
    assert {s.sampler for s in sd15.speed.values()} == {"LCM", "TCD", "DDIM Trailing"}
    assert all(speed.lora in sd15.loras for speed in sd15.speed.values())
    assert load_preset("flux-dev", PRESETS).speed["hyper"].weight == 0.125  # Hyper-FLUX's makers' weight
    ok = SPEED + 'lora = "lcm"\nsampler = "LCM"\nsteps = 6\nguidance_scale = 1.5\n'
    assert parse_preset(write(tmp_path, ok)).speed["lcm"].steps == 6
    for body, message in [
        ('lora = "lcm"\nsampler = "LCM"\nsteps = 6\n', "'speed.lcm' is missing guidance_scale"),
        ('lora = "fast"\nsampler = "LCM"\nsteps = 6\nguidance_scale = 1\n',
         r"'speed.lcm.lora' \('fast'\) must name one of \[loras\]: lcm"),
        ('lora = "lcm"\nsampler = "Turbo"\nsteps = 6\nguidance_scale = 1\n',
         r"'speed.lcm.sampler' \('Turbo'\) is not one of Euler"),
        ('lora = "lcm"\nsampler = "LCM"\nsteps = 900\nguidance_scale = 1\n',
         r"'speed.lcm.steps' must be from 1 to 'limits.max_steps' \(150\)"),
        ('lora = "lcm"\nsampler = "LCM"\nsteps = 6\nguidance_scale = 1\nshift = 3\n', "unknown key 'speed.lcm.shift'"),
    ]:
        with pytest.raises(PresetError, match=message):
            parse_preset(write(tmp_path, SPEED + body))
