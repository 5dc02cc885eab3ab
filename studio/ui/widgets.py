"""Gradio components with messages that say which setting is wrong."""

from __future__ import annotations

import math

import gradio as gr
from PIL import Image


def user_error(message: str) -> gr.Error:
    """A message for the user, shown in the page or returned over the API. Not printed with a
    traceback in the server's console: it is an answer, not a failure (failures are logged)."""
    return gr.Error(message, print_exception=False)


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


_UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _unreadable(label: str, exc: Exception) -> gr.Error:
    if isinstance(exc, Image.DecompressionBombError):
        return user_error(f"{label}: the image is too large to open safely ({exc}). Use one under 64 megapixels.")
    return user_error(f"{label}: the file could not be read as an image ({type(exc).__name__}). "
                    "Upload a PNG, JPEG or WebP picture.")


def _decoded(preprocess, label: str | None, payload):
    """Gradio's own decoding of an upload, with a message instead of a traceback when it fails.
    (A shared base class can't carry this: `is_template` components take their browser widget
    from their first base class.)"""
    try:
        return preprocess(payload)
    except _UNREADABLE as exc:
        raise _unreadable(label or "Image", exc) from None


class ImageInput(gr.Image):
    """An image input that answers a non-image, corrupt or oversized upload with a message."""

    is_template = True

    def preprocess(self, payload):
        return _decoded(super().preprocess, self.label, payload)


class MaskEditor(gr.ImageEditor):
    """The inpaint canvas, with the same clear message for files that are not images."""

    is_template = True

    def preprocess(self, payload):
        return _decoded(super().preprocess, self.label, payload)


def gpu_event_options(studio) -> dict:
    """Every event that runs models shares one queue, as many at once as the studio's backend runs
    (one on one GPU, one per Ray replica). One limit for all: Gradio keeps the lowest limit among
    the events of a queue, so a single event with 1 would hold every other to one at a time."""
    return {"concurrency_id": "gpu", "concurrency_limit": studio.backend.concurrency}
