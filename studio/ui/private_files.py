"""Keeps each user's images their own on Gradio's file route.

Gradio serves any file under `allowed_paths` to any logged-in user at `/gradio_api/file=<path>`.
The outputs folder has to be allowed, because results and history images are copied from it into
Gradio's cache (under a folder named by a hash of their content) and served from there. But served
by its own path, anyone who guesses `<task>/<date>/<nnnnn>-<seed>.png` would read another user's
image. So requests for a path inside the outputs folder are refused: the page never makes them.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote


class PrivateOutputs:
    """ASGI middleware: 403 for file-route requests into the outputs folder."""

    def __init__(self, app, outputs_dir: Path):
        self.app = app
        self.outputs_dir = Path(outputs_dir).resolve()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and "/file=" in scope["path"] and self._is_output(scope["path"]):
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "http.response.body",
                        "body": b"Images of the outputs folder are served only to the user who made them."})
            return
        await self.app(scope, receive, send)

    def _is_output(self, path: str) -> bool:
        target = unquote(path.split("/file=", 1)[1])
        try:
            return Path(target).resolve().is_relative_to(self.outputs_dir)
        except (OSError, ValueError):
            return True  # a path that cannot even be resolved is not served either
