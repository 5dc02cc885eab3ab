"""Gradio components with messages that say which setting is wrong."""

from __future__ import annotations

import base64
import binascii
import logging
import math

import gradio as gr
from PIL import Image

from studio.errors import RequestError, StudioError
from studio.imaging import open_image

log = logging.getLogger(__name__)


def user_error(message: str) -> gr.Error:
    """A message for the user, shown in the page or returned over the API. Not printed with a
    traceback in the server's console: it is an answer, not a failure (failures are logged)."""
    return gr.Error(message, print_exception=False)


class StudioBlocks(gr.Blocks):
    """The page. Every event, private ones too, can be called by its fn_index with any payload (an
    `event_data` of null, a file path that was never uploaded, a value of the wrong shape), and what
    Gradio or a handler raises on such input is printed as a traceback. Here each failure of an
    event becomes a message for its caller and one line in the log; the server keeps serving."""

    async def process_api(self, *args, **kwargs):
        try:
            return await super().process_api(*args, **kwargs)
        except (gr.Error, StopIteration, StopAsyncIteration):
            raise
        except StudioError as exc:
            raise user_error(str(exc)) from None
        except Exception as exc:
            log.warning("an event was refused: %s: %s", type(exc).__name__, str(exc)[:300])
            raise user_error(f"This request could not be processed ({type(exc).__name__}: {str(exc)[:300]}). "
                             "Check the values it sends.") from None


class NamedSlider(gr.Slider):
    """A slider whose out-of-range error names the setting and its range.

    Gradio enforces slider bounds on the server (API calls included) but its message is only
    "Value 0 is less than minimum value 1."; an API user needs to know which setting.
    """

    is_template = True  # rendered by Gradio's own slider in the browser

    def preprocess(self, payload: float) -> float:
        if isinstance(payload, bool) or not isinstance(payload, (int, float)):
            raise user_error(f"{self.label} must be a number, got {payload!r}.")
        try:
            return super().preprocess(payload)
        except gr.Error:
            raise user_error(
                f"{self.label} must be between {self.minimum:g} and {self.maximum:g}, got {payload}."
            ) from None


class NamedNumber(gr.Number):
    """A number box whose bad values (text, NaN, infinities) get a message naming the setting,
    instead of Gradio's "upstream app raised an exception"."""

    is_template = True

    def preprocess(self, payload):
        if isinstance(payload, bool) or not isinstance(payload, (int, float)) or not math.isfinite(payload):
            raise user_error(f"{self.label} must be a number, got {payload!r}.")
        return super().preprocess(payload)


def _source_of(file, label: str):
    """The bytes or the file of an image payload: an upload (a path Gradio checked was uploaded),
    a `data:` URL an API caller sent inline, or raw bytes (the editor's canvas)."""
    if isinstance(file, (bytes, bytearray, memoryview)):
        return bytes(file)
    url = getattr(file, "url", None) or ""
    if url.startswith("data:"):
        encoded = url.split(",", 1)[1] if "," in url else ""
        try:
            return base64.b64decode(encoded, validate=False)
        except (binascii.Error, ValueError):
            raise user_error(f"{label}: the data URL is not valid base64.") from None
    if getattr(file, "path", None) is None:
        raise user_error(f"{label}: send an uploaded file or a data: URL.")
    return file.path


def _opened(file, label: str | None) -> Image.Image:
    """The image of a payload through the studio's one checked decoder (imaging.open_image)."""
    label = label or "Image"
    try:
        return open_image(_source_of(file, label), label)
    except RequestError as exc:
        raise user_error(str(exc)) from None


class ImageInput(gr.Image):
    """An image input whose uploads are checked before they are decoded (format, pixels from the
    header), decoded as the A1111 API decodes them, and answered with a message when they are not
    images. (A shared base class can't carry this: `is_template` components take their browser
    widget from their first base class.)"""

    is_template = True

    def preprocess(self, payload):
        if payload is None:
            return None
        image = _opened(payload, self.label)
        if self.type == "filepath":  # PNG Info: the file as uploaded, with its text chunks
            if not payload.path:
                raise user_error(f"{self.label}: upload the file (its text is read from the file itself).")
            return payload.path
        if self.type != "pil":
            raise TypeError(f"ImageInput supports type 'pil' or 'filepath', not {self.type!r}")
        return image.convert(self.image_mode) if self.image_mode else image


class MaskEditor(gr.ImageEditor):
    """The inpaint canvas, its images read through the same checked decoder."""

    is_template = True

    def convert_and_format_image(self, file, flatten_on_white: bool = False):
        if file is None:
            return None
        image = _opened(file, self.label)
        # The canvas exports RGB 0 under alpha 0: drop the alpha over white, not black (as Gradio).
        if flatten_on_white and self.image_mode not in ("RGBA", "LA", "PA") and \
                ("A" in image.getbands() or "transparency" in image.info):
            image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
        return image.convert(self.image_mode) if self.image_mode else image


def gpu_event_options(studio) -> dict:
    """Every event that runs models shares one queue, one more at once than the studio's backend
    renders (one on one GPU, one per Ray replica): the extra one is a job saving its PNGs while the
    next renders, so the GPU never waits for a save (Studio.generate holds the GPU slot for the
    render only). One limit for all: Gradio keeps the lowest limit among the events of a queue, so a
    single event with 1 would hold every other to one at a time."""
    return {"concurrency_id": "gpu", "concurrency_limit": studio.backend.concurrency + 1}
