"""AUTOMATIC1111's HTTP API on the studio's server, called through real HTTP: the `webuiapi` client
from PyPI, an Open-WebUI-shaped sequence with Basic auth, and plain `requests` for what clients
send beyond it."""

import base64
import dataclasses
import io
import json
import threading
import time

import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image, ImageDraw

from studio.styles import read_styles
from studio.ui import close_server
from tests.test_shared import launch

FAST = {"prompt": "a lighthouse", "steps": 3, "width": 64, "height": 64, "seed": 21, "cfg_scale": 7,
        "sampler_name": "Euler a"}


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decoded(text: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    image.load()
    return image


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def api_url(server):
    return server.rstrip("/")


@pytest.fixture(scope="module")
def client(api_url):
    host, port = api_url.removeprefix("http://").split(":")
    return webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler a", steps=3)


@pytest.fixture(scope="module")
def private_api(settings, tmp_path_factory):
    """A server with two logins: the API asks for them too."""
    from studio.core import Studio
    studio = Studio(dataclasses.replace(settings, outputs_dir=tmp_path_factory.mktemp("private-api"),
                                        auth=(("ann", "pw-ann"), ("bob", "pw-bob"))))
    demo, url = launch(studio)
    yield url.rstrip("/")
    close_server(demo)


def test_webuiapi_txt2img_returns_pngs_with_their_parameters_and_a1111s_info(client):
    result = client.txt2img(prompt="a lighthouse", width=64, height=64, seed=21, batch_size=2)
    assert [image.size for image in result.images] == [(64, 64), (64, 64)]
    assert result.images[0].info["parameters"] == result.info["infotexts"][0]  # the chunk travels with it
    info = result.info
    assert info["all_seeds"] == [21, 22] and info["seed"] == 21 and (info["width"], info["height"]) == (64, 64)
    assert info["sampler_name"] == "Euler a" and info["steps"] == 3 and info["cfg_scale"] == 7
    assert info["sd_model_name"] == "./tiny/base" and "Seed: 22" in info["infotexts"][1]
    assert result.parameters["prompt"] == "a lighthouse"  # A1111 echoes the request


def test_same_seed_same_pixels_through_sdapi_and_the_gradio_api(api_url, server):
    from gradio_client import Client

    ours = requests.post(f"{api_url}/sdapi/v1/txt2img", json=FAST, timeout=120).json()
    gallery, _ = Client(server, verbose=False).predict(
        prompt="a lighthouse", negative_prompt="", steps=3, guidance_scale=7, width=64, height=64, seed=21,
        sampler="Euler a", api_name="/txt2img")
    with Image.open(gallery[0]["image"]) as image:
        assert np.array_equal(pixels(decoded(ours["images"][0])), pixels(image))


def test_img2img_with_a_mask_inpaints_and_keeps_every_pixel_outside_it(client):
    photo = Image.new("RGB", (64, 64), (40, 90, 160))
    ImageDraw.Draw(photo).rectangle((0, 0, 31, 63), fill=(200, 120, 40))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((40, 40, 55, 55), fill=255)
    result = client.img2img(images=[photo], mask_image=mask, prompt="a red door", width=64, height=64, seed=4,
                            mask_blur=0, inpainting_fill=1, denoising_strength=1.0)
    out = pixels(result.image)
    outside = np.ones((64, 64), bool)
    outside[36:60, 36:60] = False
    assert np.array_equal(out[outside], pixels(photo)[outside])
    assert np.abs(out[44:52, 44:52] - pixels(photo)[44:52, 44:52]).mean() > 1
    assert "Mask blur: 0" in result.info["infotexts"][0] and "Inpaint area: Only masked" in result.info["infotexts"][0]


def test_img2img_resizes_to_the_requested_size_as_a1111(client):
    photo = Image.new("RGB", (96, 64), (40, 90, 160))
    assert client.img2img(images=[photo], prompt="x", width=64, height=64, resize_mode=1).image.size == (64, 64)


def test_a_controlnet_unit_runs_the_control_task_and_other_scripts_are_ignored(client):
    scribble = Image.new("RGB", (64, 64))
    ImageDraw.Draw(scribble).ellipse((8, 8, 56, 56), outline="white", width=3)
    unit = webuiapi.ControlNetUnit(image=scribble, module="none", model="control_v11p_sd15_scribble [d4ba51ff]",
                                   weight=0.8, guidance_end=0.9)
    client.has_adetailer = True  # so it sends ADetailer {"args": [false]} as it does to a real A1111
    try:
        # A new dict: webuiapi's default `alwayson_scripts={}` is shared between calls, so the unit would
        # stay in every later request of this client (A1111 would then run it too).
        result = client.txt2img(prompt="a cat", width=64, height=64, seed=2, controlnet_units=[unit],
                                alwayson_scripts={})
    finally:
        client.has_adetailer = False
    assert "ControlNet: \"scribble, weight 0.8, start 0, end 0.9\"" in result.info["infotexts"][0]
    assert client.controlnet_model_list() == ["scribble", "openpose", "canny"] and client.controlnet_version() == 2


def test_a_canny_unit_takes_the_edges_of_the_photo(client):
    photo = Image.new("RGB", (64, 64), (20, 20, 20))
    ImageDraw.Draw(photo).rectangle((16, 16, 47, 47), fill=(230, 230, 230))
    unit = webuiapi.ControlNetUnit(image=photo, module="canny", model="control_v11p_sd15_canny [d14c016b]")
    result = client.txt2img(prompt="a box", width=64, height=64, seed=2, controlnet_units=[unit], alwayson_scripts={})
    assert 'ControlNet: "canny, weight 1, start 0, end 1"' in result.info["infotexts"][0]


def test_options_switch_the_model_and_refuse_an_unknown_one(api_url):
    """Without logins every client of one address is one caller; with logins each login is its
    own (test_an_open_webui_sequence)."""
    one = requests.Session()
    options = one.get(f"{api_url}/sdapi/v1/options").json()
    assert options["sd_model_checkpoint"] == "tiny"
    options["sd_model_checkpoint"] = "tiny-sdxl"
    assert one.post(f"{api_url}/sdapi/v1/options", json=options).status_code == 200
    assert one.get(f"{api_url}/sdapi/v1/options").json()["sd_model_checkpoint"] == "tiny-sdxl"
    bad = one.post(f"{api_url}/sdapi/v1/options", json={"sd_model_checkpoint": "nope"})
    assert bad.status_code == 422 and "Unknown preset 'nope'" in bad.json()["detail"]
    one.post(f"{api_url}/sdapi/v1/options", json={"sd_model_checkpoint": "tiny"})


def test_webuiapi_sets_and_gets_the_model(client):
    client.util_set_model("tiny-sdxl", find_closest=False)
    try:
        assert client.util_get_current_model() == "tiny-sdxl"
        assert client.txt2img(prompt="a boat", width=64, height=64, seed=1).info["sd_model_name"] == "./tiny/sdxl-base"
    finally:
        client.util_set_model("tiny", find_closest=False)


def test_lists_that_clients_read(client, api_url, settings):
    (settings.loras_dir / "damaged.safetensors").write_bytes(b"not a safetensors file")
    try:
        loras = {lora["name"]: lora for lora in client.get_loras()}
    finally:
        (settings.loras_dir / "damaged.safetensors").unlink()
    assert {"tiny-style", "tiny-kohya"} <= set(loras)
    assert "could not be read" in loras["damaged"]["metadata"]["error"]  # listed, with the reason
    assert "Euler a" in client.util_get_sampler_names() and "tiny" in client.util_get_model_names()
    assert client.get_scripts() == {"txt2img": ["x/y/z plot", "controlnet"], "img2img": ["x/y/z plot"]}
    assert client.get_face_restorers() == []
    assert [style["name"] for style in client.get_prompt_styles()] == list(read_styles(settings.styles_file))
    assert {"ram", "cuda"} <= set(client.get_memory())
    assert "loaded" in client.get_embeddings() and client.get_schedulers()[1]["name"] == "karras"
    assert requests.post(f"{api_url}/sdapi/v1/refresh-loras").status_code == 200


def test_png_info_reads_the_parameters_back(client):
    made = client.txt2img(prompt="a castle", width=64, height=64, seed=8)
    info = client.png_info(made.image)
    assert info.info == made.info["infotexts"][0]
    assert info.json["parameters"]["Prompt"] == "a castle" and info.json["parameters"]["Seed"] == "8"


@pytest.mark.parametrize("payload, status, message", [
    ({"sampler_name": "Heun"}, 422, "Unknown sampler 'Heun'. Choose one of: Euler, Euler a"),
    ({"steps": 0}, 422, "Steps must be between 1 and 50, got 0"),
    ({"steps": "many"}, 422, "'steps' must be a whole number"),
    ({"width": 100}, 422, "Width must be a multiple of 8, got 100"),
    ({"seed": 1.5}, 422, "'seed' must be a whole number"),
    ({"override_settings": {"sd_model_checkpoint": "../../etc/passwd"}}, 422, "Unknown preset"),
    ({"override_settings": {"sd_vae": "nope.safetensors"}}, 422, "Unknown VAE 'nope.safetensors'"),
    ({"alwayson_scripts": {"controlnet": {"args": [{"enabled": True, "image": "not base64!", "model": "x"}]}}},
     422, "Unknown ControlNet model"),
])
def test_bad_input_gets_a1111s_json_error_that_says_what_to_change(api_url, payload, status, message):
    answer = requests.post(f"{api_url}/sdapi/v1/txt2img", json={**FAST, **payload}, timeout=60)
    assert answer.status_code == status and message in answer.json()["detail"]
    assert set(answer.json()) >= {"error", "detail"} and "Traceback" not in answer.text
    assert requests.post(f"{api_url}/sdapi/v1/txt2img", json=FAST, timeout=60).status_code == 200


@pytest.mark.slow
def test_progress_shows_the_callers_job_and_interrupt_stops_it(api_url, client):
    outcome = {}

    def long_job():
        outcome["answer"] = requests.post(f"{api_url}/sdapi/v1/txt2img",
                                          json={**FAST, "steps": 50, "width": 256, "height": 256}, timeout=300)

    worker = threading.Thread(target=long_job)
    worker.start()
    deadline = time.time() + 60
    progress = {}
    while time.time() < deadline:
        progress = requests.get(f"{api_url}/sdapi/v1/progress").json()
        if progress["state"]["sampling_step"] >= 6 and progress["current_image"]:
            break
        time.sleep(0.2)
    assert 0 < progress["progress"] < 1 and progress["state"]["sampling_steps"] == 50
    assert decoded(progress["current_image"]).size == (256, 256)
    client.interrupt()
    worker.join(120)
    answer = outcome["answer"].json()
    assert answer["images"] == [] and '"interrupted": true' in answer["info"]
    assert requests.get(f"{api_url}/sdapi/v1/progress").json()["state"]["job_count"] == 0


def test_with_logins_anonymous_calls_are_refused_and_basic_auth_works(private_api):
    anonymous = requests.get(f"{private_api}/sdapi/v1/options")
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert "asks for a login" in anonymous.json()["detail"]
    assert requests.get(f"{private_api}/sdapi/v1/options", auth=("ann", "wrong")).status_code == 401
    assert requests.post(f"{private_api}/sdapi/v1/txt2img", json=FAST).status_code == 401


def test_an_open_webui_sequence(private_api):
    """What Open WebUI does: read the options, POST them all back with another model, list the
    models, generate; all with HTTP Basic auth."""
    session = requests.Session()
    session.auth = ("ann", "pw-ann")
    options = session.get(f"{private_api}/sdapi/v1/options").json()
    options["sd_model_checkpoint"] = "tiny-sdxl"
    assert session.post(f"{private_api}/sdapi/v1/options", json=options).status_code == 200
    titles = [model["title"] for model in session.get(f"{private_api}/sdapi/v1/sd-models").json()]
    assert "tiny-sdxl" in titles
    answer = session.post(f"{private_api}/sdapi/v1/txt2img", json=FAST, timeout=120).json()
    assert "Model: ./tiny/sdxl-base" in answer["info"]
    # Bob's model is his own.
    assert requests.get(f"{private_api}/sdapi/v1/options", auth=("bob", "pw-bob")).json()[
        "sd_model_checkpoint"] == "tiny"


@pytest.mark.slow
def test_one_users_interrupt_does_not_stop_anothers_job(private_api):
    outcome = {}

    def anns_job():
        outcome["ann"] = requests.post(f"{private_api}/sdapi/v1/txt2img", auth=("ann", "pw-ann"), timeout=300,
                                       json={**FAST, "steps": 20, "width": 128, "height": 128})

    worker = threading.Thread(target=anns_job)
    worker.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        state = requests.get(f"{private_api}/sdapi/v1/progress", auth=("ann", "pw-ann")).json()["state"]
        if state["sampling_step"] >= 2:
            break
        time.sleep(0.1)
    assert requests.post(f"{private_api}/sdapi/v1/interrupt", auth=("bob", "pw-bob")).status_code == 200
    assert requests.get(f"{private_api}/sdapi/v1/progress", auth=("bob", "pw-bob")).json()["state"]["job_count"] == 0
    worker.join(120)
    answer = outcome["ann"].json()
    assert len(answer["images"]) == 1 and '"interrupted": false' in answer["info"]


def test_api_off_serves_no_sdapi_routes(settings):
    from studio.core import Studio

    studio = Studio(dataclasses.replace(settings, api=False))
    demo, url = launch(studio)
    try:
        assert requests.get(f"{url}sdapi/v1/options").status_code == 404
    finally:
        close_server(demo)


def test_the_pages_login_cookie_is_accepted_too(private_api):
    session = requests.Session()
    assert session.post(f"{private_api}/login", data={"username": "bob", "password": "pw-bob"}).status_code == 200
    assert session.get(f"{private_api}/sdapi/v1/options").status_code == 200


def test_flux_through_the_api_with_forges_fields(api_url):
    """A FLUX.1 model named in override_settings: Forge's distilled_cfg_scale and Beta schedule are
    read, cfg_scale and the negative prompt do nothing (FLUX.1-dev has neither), and sd-models lists it."""
    models = requests.get(f"{api_url}/sdapi/v1/sd-models", timeout=30).json()
    assert "tiny-flux" in [model["model_name"] for model in models]
    payload = {"prompt": "a lighthouse", "negative_prompt": "fog", "steps": 2, "width": 64, "height": 64, "seed": 4,
               "sampler_name": "Euler", "scheduler": "beta", "cfg_scale": 7, "distilled_cfg_scale": 2.5,
               "override_settings": {"sd_model_checkpoint": "tiny-flux"}}
    answer = requests.post(f"{api_url}/sdapi/v1/txt2img", json=payload, timeout=120).json()
    info = json.loads(answer["info"])
    text = info["infotexts"][0]
    assert "Sampler: Euler Beta, CFG scale: 1, Distilled CFG Scale: 2.5," in text and "Negative prompt" not in text
    assert decoded(answer["images"][0]).size == (64, 64)
    assert any("no negative prompt" in note for note in info["notes"])
    assert (info["cfg_scale"], info["distilled_cfg_scale"]) == (1.0, 2.5)
    again = requests.post(f"{api_url}/sdapi/v1/txt2img", json={**payload, "cfg_scale": 3, "negative_prompt": ""},
                          timeout=120).json()
    assert pixels(decoded(again["images"][0])).tolist() == pixels(decoded(answer["images"][0])).tolist()
    bad = requests.post(f"{api_url}/sdapi/v1/txt2img", json={**payload, "sampler_name": "DPM++ 2M Karras"}, timeout=60)
    assert bad.status_code == 422 and "Choose one of: Euler" in bad.json()["detail"]
