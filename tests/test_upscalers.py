"""Upscalers (spandrel) and the Extras tab: sizes, tiling, refused files, the page and A1111's API."""

import base64
import io
import os
import pickle

import numpy as np
import pytest
import requests
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from skimage import data

from studio.errors import RequestError
from studio.extras import ExtrasRequest, run_extras
from studio.upscalers import UpscalerLibrary, build_tiny_upscaler, run_model


@pytest.fixture(scope="module")
def upscalers(settings):
    build_tiny_upscaler(settings.upscalers_dir / "tiny-x2.safetensors")
    return settings.upscalers_dir


def photo(width=96, height=80) -> Image.Image:
    return Image.fromarray(data.astronaut()).resize((width, height))


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/studio-pickle-ran",))


def test_a_model_scales_by_its_factor_and_passes_reach_any_size(upscalers):
    library = UpscalerLibrary(upscalers)
    assert library.model("tiny-x2").scale == 2 and "tiny-x2" in library.names()
    image, _ = run_extras(library, ExtrasRequest(image=photo(), scale=2, upscaler="tiny-x2"))
    assert image.size == (192, 160)
    image, text = run_extras(library, ExtrasRequest(image=photo(), scale=3, upscaler="tiny-x2"))
    assert image.size == (288, 240)  # two passes (4x), then Lanczos down to 3x
    assert "Postprocess upscale by: 3, Postprocess upscaler: tiny-x2" in text
    image, text = run_extras(library, ExtrasRequest(image=photo(), width=100, height=50, upscaler="Lanczos"))
    assert image.size == (100, 50) and "Postprocess upscale to: 100x50" in text


def test_tiled_equals_untiled(upscalers):
    model = UpscalerLibrary(upscalers).model("tiny-x2")
    whole = pixels(run_model(model, photo(), tile=0))
    tiled = pixels(run_model(model, photo(), tile=32, overlap=16))  # 3 x 3 tiles, the overlap past the receptive field
    assert whole.shape == (160, 192, 3) and np.array_equal(whole, tiled)
    assert whole.std() > 10  # a real image came out, not a flat one


def test_two_upscalers_blend_by_the_visibility(upscalers):
    library = UpscalerLibrary(upscalers)
    first, _ = run_extras(library, ExtrasRequest(image=photo(), upscaler="tiny-x2"))
    second, _ = run_extras(library, ExtrasRequest(image=photo(), upscaler="Nearest"))
    half, text = run_extras(library, ExtrasRequest(image=photo(), upscaler="tiny-x2", upscaler_2="Nearest",
                                                   upscaler_2_visibility=0.5))
    assert np.abs(pixels(half) - (pixels(first) + pixels(second)) / 2).max() <= 1
    assert "Postprocess upscaler 2: Nearest, Postprocess upscaler 2 visibility: 0.5" in text


def test_a_pth_runs_no_code_and_refused_files_are_listed_with_the_reason(upscalers, tmp_path):
    folder = tmp_path / "upscalers"
    build_tiny_upscaler(folder / "good.safetensors")
    from safetensors.torch import load_file

    torch.save(load_file(folder / "good.safetensors"), folder / "plain.pth")  # a state dict: read as tensors
    (folder / "evil.pth").write_bytes(pickle.dumps(RunsCode()))
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, folder / "unknown.pth")
    (folder / "broken.safetensors").write_bytes(b"not safetensors")
    library = UpscalerLibrary(folder)
    assert library.names() == ["None", "Lanczos", "Nearest", "good", "plain"]
    refused = library.refused()
    assert set(refused) == {"evil.pth", "unknown.pth", "broken.safetensors"}
    assert "UnpicklingError" in refused["evil.pth"] and not os.path.exists("/tmp/studio-pickle-ran")
    assert "UnsupportedModelError" in refused["unknown.pth"]
    image = photo()
    assert np.array_equal(pixels(run_model(library.model("plain"), image)), pixels(run_model(library.model("good"),
                                                                                           image)))
    with pytest.raises(RequestError, match="no upscaler 'evil'. Choose one of: None, Lanczos, Nearest, good, plain"):
        run_extras(library, ExtrasRequest(image=image, upscaler="evil"))


@pytest.mark.parametrize("change, message", [
    ({"scale": 9}, "Scale by must be between 1 and 8"),
    ({"width": 100, "height": 0}, "Scale to: Height must be between 1"),
    ({"upscaler": "4x-Nowhere"}, "there is no upscaler '4x-Nowhere'"),
    ({"scale": 8, "image": Image.new("RGB", (2048, 2048))}, "over 64 megapixels"),
    ({"image": None}, "upload an image first"),
])
def test_bad_extras_input_gets_a_message(upscalers, change, message):
    with pytest.raises(RequestError, match=message):
        run_extras(UpscalerLibrary(upscalers), ExtrasRequest(**{"image": photo(), "upscaler": "tiny-x2", **change}))


def test_the_saved_png_keeps_the_images_parameters(studio, upscalers):
    buffer = io.BytesIO()
    info = PngInfo()
    info.add_text("parameters", "a fox\nSteps: 20, Sampler: Euler a, Seed: 3")
    photo().save(buffer, format="PNG", pnginfo=info)
    [result] = studio.extras([ExtrasRequest(image=Image.open(io.BytesIO(buffer.getvalue())), upscaler="tiny-x2")])
    with Image.open(result.paths[0]) as saved:
        assert saved.size == (192, 160)
        assert saved.info["parameters"] == ("a fox\nSteps: 20, Sampler: Euler a, Seed: 3, Postprocess upscale by: 2, "
                                            "Postprocess upscaler: tiny-x2")
    assert "extras" in str(result.paths[0])


def b64png(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.slow
def test_the_a1111_extras_routes(server, upscalers):
    listed = {item["name"]: item for item in requests.get(f"{server}sdapi/v1/upscalers", timeout=30).json()}
    assert listed["tiny-x2"]["scale"] == 2 and listed["tiny-x2"]["model_path"].endswith("tiny-x2.safetensors")
    assert {"None", "Lanczos", "Nearest"} <= set(listed)
    single = requests.post(f"{server}sdapi/v1/extra-single-image", timeout=60, json={
        "image": b64png(photo()), "upscaler_1": "tiny-x2", "upscaling_resize": 2}).json()
    with Image.open(io.BytesIO(base64.b64decode(single["image"]))) as image:
        assert image.size == (192, 160) and "Postprocess upscaler: tiny-x2" in single["html_info"]
    batch = requests.post(f"{server}sdapi/v1/extra-batch-images", timeout=60, json={
        "imageList": [{"data": b64png(photo()), "name": "a.png"}, {"data": b64png(photo(40, 40)), "name": "b.png"}],
        "upscaler_1": "Lanczos", "resize_mode": 1, "upscaling_resize_w": 64, "upscaling_resize_h": 32}).json()
    sizes = [Image.open(io.BytesIO(base64.b64decode(item))).size for item in batch["images"]]
    assert sizes == [(64, 32), (64, 32)]
    bad = requests.post(f"{server}sdapi/v1/extra-single-image", timeout=60, json={
        "image": b64png(photo()), "upscaler_1": "nowhere"})
    assert bad.status_code == 422 and "there is no upscaler 'nowhere'" in bad.json()["detail"]


@pytest.mark.slow
def test_the_extras_tab_over_the_page_api(client, upscalers, tmp_path):
    from gradio_client import handle_file

    photo().save(tmp_path / "photo.png")
    gallery, info = client.predict(image=handle_file(str(tmp_path / "photo.png")), batch=[], resize_mode="Scale by",
                                   scale=2, upscaler="tiny-x2", api_name="/extras")
    assert len(gallery) == 1 and "Postprocess upscaler: tiny-x2" in info
    with Image.open(gallery[0]["image"]) as image:
        assert image.size == (192, 160)


def test_a_batch_with_one_bad_image_writes_nothing(studio, settings, upscalers):
    before = sorted(settings.outputs_dir.rglob("*.png"))
    with pytest.raises(RequestError, match="Scale by must be between 1 and 8"):
        studio.extras([ExtrasRequest(image=photo(), upscaler="tiny-x2"),
                       ExtrasRequest(image=photo(), upscaler="tiny-x2", scale=20)])
    assert sorted(settings.outputs_dir.rglob("*.png")) == before
