"""Saving results: PNG files with the A1111 `parameters` chunk, written atomically.

Layout like A1111's: `<outputs>/<task>/<YYYY-MM-DD>/<nnnnn>-<seed>.png`.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import threading
from datetime import date
from pathlib import Path
from typing import Callable

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from studio.metadata import PNG_KEY

_NUMBERED = re.compile(r"^(\d{5})-")


class OutputStore:
    def __init__(self, root: Path, compress_level: int = 1):
        self.root = root
        self.compress_level = compress_level  # zlib's: 1 is ~5x faster than Pillow's 6 (settings.png_compress)
        self._lock = threading.Lock()  # numbering must not race between concurrent saves

    def remove_partial_files(self) -> None:
        """Delete temp files a killed process left halfway through a save."""
        if self.root.is_dir():
            for stale in self.root.rglob("*.png.tmp"):
                stale.unlink(missing_ok=True)

    def _next_number(self, folder: Path) -> int:
        numbers = [int(m.group(1)) for p in folder.iterdir() if (m := _NUMBERED.match(p.name))]
        return max(numbers, default=0) + 1

    def save(self, image: Image.Image, infotext: str, task: str, seed: int,
             record: Callable[[Path], None] = lambda path: None) -> Path:
        """Write `image` as PNG with `infotext`; the file appears whole or not at all. `record(path)`
        (its history row) runs before the file appears, so every PNG has its row; a kill between
        the two leaves a row without a file, which History.remove_missing() deletes at the next start."""
        folder = self.root / task / date.today().isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        info = PngInfo()
        info.add_text(PNG_KEY, infotext)
        # Encoded before the lock: two saves encode at once; only numbering and the rename are serial.
        encoded = io.BytesIO()
        image.save(encoded, format="PNG", pnginfo=info, compress_level=self.compress_level)
        with self._lock:
            path = folder / f"{self._next_number(folder):05d}-{seed}.png"
            fd, tmp = tempfile.mkstemp(suffix=".png.tmp", dir=folder)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(encoded.getbuffer())
                record(path)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        return path
