"""A1111-compatible generation parameters ("infotext"), stored in a PNG `parameters` text chunk.

Format, as AUTOMATIC1111 writes it:

    <prompt>
    Negative prompt: <negative prompt>
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 512x512, Model: <id>

Values containing a comma, colon or quote are JSON-quoted, as A1111 does.
"""

from __future__ import annotations

import json
import re

from PIL import Image

PNG_KEY = "parameters"
_NEGATIVE = "Negative prompt:"
# One "Key: value" pair of the last line; the value is either JSON-quoted or runs to the next comma.
_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def _format_value(value) -> str:
    if isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    if any(ch in text for ch in ',:"\n'):
        return json.dumps(text)
    return text


def format_infotext(prompt: str, negative_prompt: str, params: dict) -> str:
    """Render prompt, negative prompt and ordered `params` (None values skipped) as A1111 does."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"{_NEGATIVE} {negative_prompt}")
    lines.append(", ".join(f"{k}: {_format_value(v)}" for k, v in params.items() if v is not None))
    return "\n".join(lines)


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """Split infotext into (prompt, negative prompt, {key: raw string value})."""
    lines = text.strip().split("\n")
    params: dict[str, str] = {}
    last = lines[-1] if lines else ""
    pairs = _PAIR.findall(last)
    if len(pairs) >= 3:  # a real parameter line has Steps, Sampler, ... (A1111 uses the same test)
        lines = lines[:-1]
        for key, value in pairs:
            value = value.strip()
            if value.startswith('"') and value.endswith('"'):
                value = json.loads(value)
            params[key.strip()] = value
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in lines:
        if line.startswith(_NEGATIVE):
            target = negative_lines
            line = line[len(_NEGATIVE):].lstrip()
        target.append(line)
    return "\n".join(prompt_lines), "\n".join(negative_lines), params


def read_png_infotext(image: Image.Image) -> str | None:
    """The `parameters` text of a PNG opened with Pillow, if it has one."""
    return image.info.get(PNG_KEY)
