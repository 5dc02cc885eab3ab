"""The Extras tab's work (A1111's "Extras"): upscale an image by a factor or to a size with one
upscaler, or two blended, tiled; the PNG keeps the image's own parameters and adds A1111's
"Postprocess" keys."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from studio.errors import RequestError
from studio.imaging import check_image
from studio.metadata import format_infotext, parse_infotext, read_png_infotext
from studio.tasks.base import check_int, check_range
from studio.upscalers import MAX_SCALE, PLAIN, UpscalerLibrary, run_model

MAX_OUTPUT_PIXELS = 8192 * 8192
MAX_MODEL_PASSES = 3  # a 2x model reaches 8x in three passes


@dataclass(frozen=True)
class ExtrasRequest:
    image: Image.Image | None = None
    scale: float = 2.0  # "Scale by"; ignored when width and height are given
    width: int = 0  # "Scale to" (both, or neither)
    height: int = 0
    upscaler: str = "Lanczos"
    upscaler_2: str = "None"
    upscaler_2_visibility: float = 0.0  # A1111's: the share of the second upscaler's image in the blend
    tile: int = 512  # 0: the whole image in one pass

    def target_size(self, image: Image.Image) -> tuple[int, int]:
        if self.width or self.height:
            return self.width, self.height
        return max(1, round(image.width * self.scale)), max(1, round(image.height * self.scale))

    def validate(self, names: list[str]) -> Image.Image:
        image = check_image(self.image, "Image").convert("RGB")
        if self.width or self.height:
            for label, value in (("Width", self.width), ("Height", self.height)):
                check_range(f"Scale to: {label}", check_int(label, value), 1, 16384, " Give both, or use Scale by.")
        else:
            check_range("Scale by", self.scale, 1, MAX_SCALE)
        width, height = self.target_size(image)
        if width * height > MAX_OUTPUT_PIXELS:
            raise RequestError(f"The result would be {width}x{height}, over {MAX_OUTPUT_PIXELS // 2**20} megapixels. "
                               "Scale by less.")
        for label, name in (("Upscaler", self.upscaler), ("Upscaler 2", self.upscaler_2)):
            if name not in names:
                raise RequestError(f"{label}: there is no upscaler {str(name)[:80]!r}. Choose one of: "
                                   f"{', '.join(names)}.")
        check_range("Upscaler 2 visibility", self.upscaler_2_visibility, 0, 1)
        check_range("Tile size", check_int("Tile size", self.tile), 0, 4096, " 0 upscales the whole image at once.")
        return image

    def infotext_params(self, size: tuple[int, int]) -> dict:
        params = {"Postprocess upscale by": float(self.scale)} if not self.width else \
            {"Postprocess upscale to": f"{size[0]}x{size[1]}"}
        params["Postprocess upscaler"] = self.upscaler
        if self.upscaler_2 != "None" and self.upscaler_2_visibility > 0:
            params |= {"Postprocess upscaler 2": self.upscaler_2,
                       "Postprocess upscaler 2 visibility": float(self.upscaler_2_visibility)}
        return params


def upscale_with(library: UpscalerLibrary, name: str, image: Image.Image, size: tuple[int, int],
                 tile: int) -> Image.Image:
    """`image` at `size` through one upscaler: a model's passes until it is at least that large,
    then Lanczos to the exact size; the plain ones resize (None: the image as it is)."""
    if name in PLAIN:
        resample = PLAIN[name]
        return image if resample is None else image.resize(size, resample)
    model = library.model(name)
    for _ in range(MAX_MODEL_PASSES):
        if image.width >= size[0] and image.height >= size[1]:
            break
        image = run_model(model, image, tile)
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def run_extras(library: UpscalerLibrary, request: ExtrasRequest) -> tuple[Image.Image, str]:
    """The upscaled image and its parameters text."""
    image = request.validate(library.names())
    size = request.target_size(image)
    result = upscale_with(library, request.upscaler, image, size, request.tile)
    if request.upscaler_2 != "None" and request.upscaler_2_visibility > 0:
        second = upscale_with(library, request.upscaler_2, image, size, request.tile)
        result = Image.blend(result.resize(size), second.resize(size), request.upscaler_2_visibility)
    original = read_png_infotext(request.image) or ""
    prompt, negative, params = parse_infotext(original) if original else ("", "", {})
    text = format_infotext(prompt, negative, params | request.infotext_params(size))
    return result, text.lstrip("\n")
