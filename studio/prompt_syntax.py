"""A1111's prompt syntax, parsed into (text, weight) pieces.

    (word)       x1.1        ((word))  x1.21       [word]  /1.1
    (word:1.5)   x1.5        \\( \\)     literal brackets
    BREAK        starts a new 75-token chunk

Brackets left open weigh the rest of the prompt; a closing bracket with no opener is text.
Written from the description of A1111's behaviour (its code is AGPL).
"""

from __future__ import annotations

import math
import re

from studio.errors import RequestError

BREAK = None  # the weight of the marker piece ("BREAK", None) that forces a new chunk
ROUND, SQUARE = 1.1, 1 / 1.1

_TOKENS = re.compile(
    r"""
    \\[()\[\]\\]              # an escaped bracket or backslash
    | \\                      # a lone backslash: text
    | \(                      # opens x1.1
    | \[                      # opens /1.1
    | :\s*([+-]?[.\d]+)\s*\)  # ":1.5)" closes a round bracket with its own weight
    | \)
    | \]
    | [^\\()\[\]:]+           # plain text
    | :                       # a colon that is not a weight
    """,
    re.X,
)
_BREAK_WORD = re.compile(r"\s*\bBREAK\b\s*")
# Each bracket scales the pieces it holds, so the parse costs (pieces x depth): capping the depth
# keeps it linear in the prompt's length. Real prompts nest a handful of levels.
MAX_BRACKET_DEPTH = 32
# A weight beyond this (after nesting) only drives the text encoder's states to infinity: black
# images. A1111's users write 0.5-2.
MAX_PROMPT_WEIGHT = 100.0


def parse_weighted(prompt: str) -> list[tuple[str, float | None]]:
    """The prompt as [(text, weight)], neighbours of equal weight merged; ("BREAK", None) between
    chunks. An empty prompt is [("", 1.0)]."""
    pieces: list[list] = []  # [text, weight]
    round_open: list[int] = []  # index into pieces where each open bracket started
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            if piece[1] is not BREAK:
                piece[1] *= factor

    def add_text(text: str) -> None:
        parts = _BREAK_WORD.split(text)
        for i, part in enumerate(parts):
            if i > 0:
                pieces.append(["BREAK", BREAK])
            if part:
                pieces.append([part, 1.0])

    for match in _TOKENS.finditer(prompt):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\") and len(token) == 2:
            add_text(token[1])
        elif token in "([" and len(round_open) + len(square_open) >= MAX_BRACKET_DEPTH:
            raise RequestError(f"The prompt's brackets nest more than {MAX_BRACKET_DEPTH} deep; use fewer, or a weight "
                               "like (word:1.5).")
        elif token == "(":
            round_open.append(len(pieces))
        elif token == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open:
            try:
                factor = float(weight)
            except ValueError:  # "(a:1.2.3)": not a number, so text as A1111 leaves it
                add_text(token)
                continue
            scale(round_open.pop(), factor)
        elif token == ")" and round_open:
            scale(round_open.pop(), ROUND)
        elif token == "]" and square_open:
            scale(square_open.pop(), SQUARE)
        else:
            add_text(token)
    for start in round_open:
        scale(start, ROUND)
    for start in square_open:
        scale(start, SQUARE)
    for text, weight in pieces:
        if weight is not BREAK and not (math.isfinite(weight) and abs(weight) <= MAX_PROMPT_WEIGHT):
            raise RequestError(f"The prompt weighs {text.strip()[:40]!r} by {weight:g}; weights (brackets included) "
                               f"must be between -{MAX_PROMPT_WEIGHT:g} and {MAX_PROMPT_WEIGHT:g}, like (word:1.3).")
    return _merged(pieces)


def _merged(pieces: list[list]) -> list[tuple[str, float | None]]:
    merged: list[list] = []
    for text, weight in pieces:
        if merged and weight is not BREAK and merged[-1][1] == weight:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return [(text, weight) for text, weight in merged] or [("", 1.0)]
