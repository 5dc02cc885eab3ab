"""Small Gradio helpers shared by the tabs."""

from __future__ import annotations

import gradio as gr

from gradio.events import Dependency

class NamedSlider(gr.Slider):
    """A slider whose out-of-range error names the setting and its range.

    Gradio enforces slider bounds on the server (API calls included) but its message is only
    "Value 0 is less than minimum value 1."; an API user needs to know which setting.
    """

    is_template = True  # rendered by Gradio's own slider in the browser

    def preprocess(self, payload: float) -> float:
        try:
            return super().preprocess(payload)
        except gr.Error:
            raise gr.Error(
                f"{self.label} must be between {self.minimum:g} and {self.maximum:g}, got {payload}."
            ) from None
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


def gpu_event_options(studio_queue_id: str = "gpu") -> dict:
    """Every event that runs models shares one queue, so GPU work never overlaps."""
    return {"concurrency_id": studio_queue_id, "concurrency_limit": 1}
class ImageInput(gr.Image):
    """An image input that answers a non-image, corrupt or oversized upload with a message."""

    is_template = True

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except _UNREADABLE as exc:
            raise _unreadable(self.label or "Image", exc) from None
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component

    
class MaskEditor(gr.ImageEditor):
    """The inpaint canvas, with the same clear message for files that are not images."""

    is_template = True

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except _UNREADABLE as exc:
            raise _unreadable(self.label or "Image", exc) from None
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component

    