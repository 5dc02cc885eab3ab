import pytest

from studio.errors import RequestError
from studio.presets import Limits
from studio.requests import Txt2ImgRequest
from studio.samplers import SAMPLER_NAMES

LIMITS = Limits(max_width=512, max_height=512, max_steps=50, max_batch_size=4, max_batch_count=4)


def test_a_normal_request_passes():
    Txt2ImgRequest(prompt="a cat", width=512, height=256, steps=50, batch_size=4, batch_count=4).validate(LIMITS)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"width": 100}, "Width must be a multiple of 8, got 100: use 96 or 104"),
        ({"height": 4}, "Height must be a multiple of 8"),
        ({"width": 1024}, "Width must be between 64 and 512"),
        ({"steps": 0}, "Steps must be between 1 and 50"),
        ({"steps": 51}, "Steps must be between 1 and 50"),
        ({"steps": 2.5}, "Steps must be a whole number"),
        ({"batch_size": 5}, "Batch size must be between 1 and 4"),
        ({"batch_count": 0}, "Batch count must be between 1 and 4"),
        ({"guidance_scale": -1}, "CFG scale must be between 0 and 30"),
        ({"seed": -2}, "Use -1 for a random seed"),
        ({"seed": 2**32}, "Seed must be between 0 and"),
        ({"sampler": "Heun++"}, "Unknown sampler 'Heun++'. Choose one of: Euler"),
        ({"prompt": None}, "Prompt and negative prompt must be text"),
    ],
)
def test_bad_input_gets_a_message_that_says_what_to_change(change, message):
    fields = {"prompt": "a cat", **change}
    with pytest.raises(RequestError) as err:
        Txt2ImgRequest(**fields).validate(LIMITS)
    assert message in str(err.value)


def test_every_listed_sampler_is_accepted():
    for name in ("Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "UniPC", "LCM"):
        assert name in SAMPLER_NAMES
        Txt2ImgRequest(prompt="x", sampler=name).validate(LIMITS)
