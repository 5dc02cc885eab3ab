"""Image and mask helpers shared by the editing tasks: pure Pillow/NumPy, no models."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from studio.errors import RequestError

# An input image may hold at most this many pixels, read from its header before it is decoded: a
# 15 KB one-bit PNG can hold 100 MP, 300 MB once decoded to RGB. 50 MP takes any camera's photo.
MAX_INPUT_PIXELS = 50_000_000
# Pillow's own guard only warns between 1x and 2x its limit; ours above is checked first.
Image.MAX_IMAGE_PIXELS = MAX_INPUT_PIXELS
# Formats an input may be in. Others (EPS runs Ghostscript; PSD, ICNS, ...) are refused unread.
INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")  # JPEG covers MPO (phone photos)
# Decoding is bounded process-wide, like Pillow's limit: however many requests arrive at once, at
# most two images are being decoded, so memory stays near two images' worth above the models.
_DECODING = threading.BoundedSemaphore(2)
MIN_SIDE = 16

RESIZE_MODES = ("Keep size", "Just resize", "Resize and crop", "Resize and pad")


def open_image(source: bytes | str | Path, label: str = "Image", max_bytes: int | None = None) -> Image.Image:
    """An input image (raw bytes or a file), checked before it is decoded: its size in bytes, its
    format and its pixels from the header. Then decoded (at most two at once), turned upright by
    its EXIF orientation, and 16-bit grey brought to 8 bits, as the page and the API both do."""
    size = len(source) if isinstance(source, (bytes, bytearray)) else _file_size(source, label)
    if max_bytes is not None and size > max_bytes:
        raise RequestError(f"{label} is {size / 2**20:.1f} MB; the studio takes images up to "
                           f"{max_bytes / 2**20:.0f} MB.")
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source,
                           formats=INPUT_FORMATS)
        pixels = image.width * image.height
        if pixels > MAX_INPUT_PIXELS:
            raise RequestError(f"{label} is {image.width}x{image.height} pixels ({pixels / 1e6:.0f} MP); the studio "
                               f"takes images up to {MAX_INPUT_PIXELS / 1e6:.0f} MP. Scale it down first.")
        with _DECODING:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _eight_bit(image)
    except RequestError:
        raise
    except Image.DecompressionBombError:  # Pillow's own guard, at twice our limit, fires inside open()
        raise RequestError(f"{label} is over {2 * MAX_INPUT_PIXELS / 1e6:.0f} MP; the studio takes images up to "
                           f"{MAX_INPUT_PIXELS / 1e6:.0f} MP. Scale it down first.") from None
    except UnidentifiedImageError:
        raise RequestError(f"{label} could not be read as an image. Send a PNG, JPEG or WebP picture "
                           f"({', '.join(INPUT_FORMATS)} are read).") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise RequestError(f"{label} could not be read as an image ({type(exc).__name__}: it may be cut short or "
                           "damaged). Send a PNG, JPEG or WebP picture.") from None


def _file_size(path, label: str) -> int:
    try:
        return Path(path).stat().st_size
    except (OSError, ValueError):
        raise RequestError(f"{label}: the file could not be found; upload it again.") from None


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit grey (a 16-bit PNG opens as I;16) as 8-bit L; `convert("RGB")` would clip
    everything above 255 to white."""
    if image.mode.startswith("I;16"):  # the high byte: two bytes a pixel at most, even at 50 MP
        return Image.fromarray((np.asarray(image) >> 8).astype(np.uint8), mode="L")
    if image.mode not in ("I", "F"):
        return image
    values = np.asarray(image, dtype=np.float32)
    top = float(values.max(initial=0))
    peak = 65535.0 if top > 255 else 1.0 if image.mode == "F" and top <= 1.0 else 255.0
    return Image.fromarray(np.clip(np.rint(values * (255 / peak)), 0, 255).astype(np.uint8), mode="L")


def check_image(image: Image.Image | None, label: str = "Image") -> Image.Image:
    """An input image in RGB, or a message saying what is wrong with it."""
    if image is None:
        raise RequestError(f"{label}: upload an image first.")
    if not isinstance(image, Image.Image):
        raise RequestError(f"{label}: expected an image, got {type(image).__name__}.")
    if min(image.size) < MIN_SIDE:
        raise RequestError(
            f"{label} is {image.width}x{image.height} pixels; it must be at least {MIN_SIDE}x{MIN_SIDE}."
        )
    return image.convert("RGB")


def round_to(value: int, multiple: int = 8) -> int:
    """`value` down to a multiple of `multiple` (8, or a family's 16), at least one multiple."""
    return max(multiple, int(value) // multiple * multiple)


def fit_within(image: Image.Image, max_width: int, max_height: int,
               multiple: int = 8) -> tuple[Image.Image, str | None]:
    """Downscale (keeping the aspect ratio) to fit the limits; sides become multiples of `multiple`.
    Returns the image and a note for the user when it had to change size."""
    width, height = image.size
    scale = min(1.0, max_width / width, max_height / height)
    target = (round_to(width * scale, multiple), round_to(height * scale, multiple))
    if target == image.size:
        return image, None
    note = None
    if scale < 1:
        note = (f"The image was {width}x{height}; it was scaled down to {target[0]}x{target[1]} "
                "to fit this preset's limits.")
    return image.resize(target, Image.Resampling.LANCZOS), note


def resize_image(image: Image.Image, mode: str, width: int, height: int) -> Image.Image:
    """A1111's resize modes: stretch, scale to cover and centre-crop, or scale to fit and pad with
    edges."""
    if mode == "Just resize":
        return image.resize((width, height), Image.Resampling.LANCZOS)
    if mode == "Resize and crop":
        scale = max(width / image.width, height / image.height)
        scaled = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))),
                              Image.Resampling.LANCZOS)
        left, top = (scaled.width - width) // 2, (scaled.height - height) // 2
        return scaled.crop((left, top, left + width, top + height))
    if mode == "Resize and pad":
        scale = min(width / image.width, height / image.height)
        inner = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
        left, top = (width - inner.width) // 2, (height - inner.height) // 2
        array = np.asarray(inner)
        pad = ((top, height - inner.height - top), (left, width - inner.width - left), (0, 0))
        return Image.fromarray(np.pad(array, pad, mode="edge"))
    raise RequestError(f"Unknown resize mode {mode!r}. Choose one of: {', '.join(RESIZE_MODES)}.")


def mask_from_editor(value: dict | None) -> Image.Image | None:
    """The painted mask of a `gr.ImageEditor` value: white where any layer has paint."""
    if not value or not value.get("layers"):
        return None
    alpha = None
    for layer in value["layers"]:
        if layer is None:
            continue
        layer_alpha = np.asarray(layer.convert("RGBA"))[..., 3] > 0
        alpha = layer_alpha if alpha is None else alpha | layer_alpha
    return None if alpha is None else Image.fromarray((alpha * 255).astype(np.uint8))


def prepare_mask(mask: Image.Image, size: tuple[int, int], invert: bool = False) -> Image.Image:
    """A binary L mask (255 = repaint) at `size`. Any mode is accepted: alpha masks count where
    painted, others where bright. A mask of another size is resized to the image."""
    if mask.mode in ("RGBA", "LA") and np.asarray(mask)[..., -1].min() < 255:
        array = np.asarray(mask)[..., -1] > 0
    else:
        array = np.asarray(mask.convert("L")) >= 128
    binary = Image.fromarray((array * 255).astype(np.uint8))
    if binary.size != size:
        binary = binary.resize(size, Image.Resampling.NEAREST)
    if invert:
        binary = Image.fromarray(255 - np.asarray(binary))
    return binary


def blur_mask(mask: Image.Image, radius: int) -> Image.Image:
    """Feather the mask outwards: the painted area stays fully white and a smooth edge falls to
    exactly 0 at `radius` pixels outside it, so nothing farther away can change."""
    if radius <= 0:
        return mask
    import cv2

    painted = np.asarray(mask) >= 128
    # Distance of every unpainted pixel to the nearest painted one.
    distance = cv2.distanceTransform(np.where(painted, 0, 255).astype(np.uint8), cv2.DIST_L2, 5)
    t = np.clip(1 - distance / (radius + 1), 0, 1)
    weight = t * t * (3 - 2 * t)  # smoothstep: no visible ring at either end of the ramp
    return Image.fromarray(np.rint(weight * 255).astype(np.uint8))


def paste_back(original: Image.Image, generated: Image.Image, mask: Image.Image) -> Image.Image:
    """Blend generated pixels in where the mask is set; where it is 0 the original comes back exactly."""
    weight = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    source = np.asarray(original.convert("RGB"), dtype=np.float32)
    result = np.asarray(generated.convert("RGB").resize(original.size), dtype=np.float32)
    blended = np.rint(source * (1 - weight) + result * weight).astype(np.uint8)
    untouched = weight[..., 0] == 0
    blended[untouched] = np.asarray(original.convert("RGB"))[untouched]
    return Image.fromarray(blended)


def extend_canvas(image: Image.Image, left: int, right: int, up: int, down: int, fill: str, seed: int):
    """Outpaint canvas: the image grown by the given margins, the new area filled with its edge
    colours or with noise, and the mask of the new area (255) as an L image."""
    array = np.asarray(image.convert("RGB"))
    pad = ((up, down), (left, right), (0, 0))
    if fill == "Edge colours":
        canvas = np.pad(array, pad, mode="edge")
    elif fill == "Noise":
        canvas = np.pad(array, pad, mode="edge")
        noise = np.random.default_rng(seed).integers(0, 256, canvas.shape, dtype=np.uint8)
        outside = np.ones(canvas.shape[:2], dtype=bool)
        outside[up:up + image.height, left:left + image.width] = False
        canvas[outside] = noise[outside]
    else:
        raise RequestError(f"Unknown outpaint fill {fill!r}. Choose 'Edge colours' or 'Noise'.")
    mask = np.full(canvas.shape[:2], 255, dtype=np.uint8)
    mask[up:up + image.height, left:left + image.width] = 0
    return Image.fromarray(canvas), Image.fromarray(mask)
