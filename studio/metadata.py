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

from studio.errors import RequestError

PNG_KEY = "parameters"
# The longest parameters text read (A1111's longest, with long prompts and every extension's keys,
# stay far below); a longer one is refused before it is parsed.
MAX_INFOTEXT_CHARS = 100_000
_NEGATIVE = "Negative prompt:"
# One "Key: value" pair of the last line, matched at a position (never searched for): the key runs
# to the first colon of its comma-separated field, the value is JSON-quoted or runs to the next
# comma. Each attempt reads one field, and the next starts after it, so a line costs linear time.
# (A1111's pattern, searched with findall, retries at every character: quadratic on a long line.)
_FIELD = re.compile(r'\s*([^:,]*):\s*("(?:\\.|[^\\"])*"|[^,]*)\s*(?:,|$)')
_KEY = re.compile(r"\w[\w \-/]+$")  # A1111's key: the end of the text before the colon


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
    if len(text) > MAX_INFOTEXT_CHARS:
        raise RequestError(f"The parameters text is {len(text):,} characters long; the studio reads at most "
                           f"{MAX_INFOTEXT_CHARS:,}.")
    lines = text.strip().split("\n")
    params: dict[str, str] = {}
    pairs = _pairs(lines[-1] if lines else "")
    if len(pairs) >= 3:  # a real parameter line has Steps, Sampler, ... (A1111 uses the same test)
        lines = lines[:-1]
        for key, value in pairs:
            value = value.strip()
            if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass  # not JSON after all: kept as written
            params[key] = value
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in lines:
        if line.startswith(_NEGATIVE):
            target = negative_lines
            line = line[len(_NEGATIVE):].lstrip()
        target.append(line)
    return "\n".join(prompt_lines), "\n".join(negative_lines), params


def _pairs(line: str) -> list[tuple[str, str]]:
    """The (key, value) fields of a parameter line, in one pass."""
    pairs, position = [], 0
    while position < len(line):
        match = _FIELD.match(line, position)
        if match is None:  # a field with no colon: skip to the next comma
            comma = line.find(",", position)
            position = len(line) if comma < 0 else comma + 1
            continue
        key = _KEY.search(match.group(1))
        if key is not None:
            pairs.append((key.group(0).strip(), match.group(2)))
        position = max(match.end(), position + 1)
    return pairs


def read_png_infotext(image: Image.Image) -> str | None:
    """The `parameters` text of a PNG opened with Pillow, if it has one."""
    return image.info.get(PNG_KEY)
