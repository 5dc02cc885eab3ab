"""Textual-inversion embeddings: `.safetensors` files in the embeddings folder, triggered by their
file stem in a prompt, as in A1111.

Formats read: A1111's `emb_params`, the `string_to_param.*` of older trainers, SDXL's `clip_l` +
`clip_g` pair, or a file holding one tensor. The vectors are put in place of the trigger word's
tokens while one prompt is encoded (studio/families/clip_prompts.py); nothing is added to the tokenizer
or the text encoder, so an embedding never reaches a request that does not name it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from studio.errors import RequestError
from studio.folders import ModelFolder, file_sha256

MAX_VECTORS = 75  # one chunk: an embedding is never split between two


@dataclass(frozen=True)
class Embedding:
    name: str  # the file stem: the word that triggers it
    vectors: dict[str, torch.Tensor] = field(repr=False)  # "clip_l"/"clip_g" (SDXL) or "" (one encoder)
    short_hash: str = ""  # A1111's "TI hashes": sha256 of the file, first 12 hex digits

    @property
    def tokens(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    @property
    def dual(self) -> bool:
        """Made for two text encoders side by side (SDXL's clip_l + clip_g)."""
        return "clip_g" in self.vectors

    def width(self) -> int:
        return next(iter(self.vectors.values())).shape[1]

    def describe(self) -> str:
        kind = "SDXL" if self.dual else f"SD 1.x/2.x, {self.width()} wide"
        return f"{self.name} ({self.tokens} token{'s' if self.tokens != 1 else ''}, {kind})"

    def vectors_for(self, dual: bool, encoder: int, width: int) -> torch.Tensor | None:
        """The vectors for text encoder `encoder` (0, or 1 for SDXL's second) of hidden size
        `width` of a model with one or two (`dual`) encoders, or None when this embedding was made
        for another model."""
        if dual != self.dual:
            return None
        key = ("clip_l", "clip_g")[encoder] if dual else ("" if encoder == 0 else None)
        vectors = self.vectors.get(key) if key is not None else None
        return vectors if vectors is not None and vectors.shape[1] == width else None


def read_vectors(tensors: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """The embedding vectors in a loaded `.safetensors` file, as (tokens, width) tensors."""
    if "clip_l" in tensors and "clip_g" in tensors:
        found = {"clip_l": tensors["clip_l"], "clip_g": tensors["clip_g"]}
    elif "emb_params" in tensors:
        found = {"": tensors["emb_params"]}
    elif params := [key for key in tensors if key.startswith("string_to_param")]:
        found = {"": tensors[params[0]]}
    elif len(tensors) == 1:
        found = {"": next(iter(tensors.values()))}
    else:
        raise RequestError(
            f"Embedding '{name}' is not a textual-inversion file: expected 'emb_params', 'string_to_param' or "
            f"'clip_l' + 'clip_g', found {', '.join(sorted(tensors)[:5])}. Is it a LoRA? Put it in the LoRA folder."
        )
    shaped = {}
    for key, vectors in found.items():
        vectors = vectors.unsqueeze(0) if vectors.ndim == 1 else vectors
        if vectors.ndim != 2 or not 1 <= vectors.shape[0] <= MAX_VECTORS:
            raise RequestError(
                f"Embedding '{name}' has vectors of shape {tuple(vectors.shape)}; expected 1 to {MAX_VECTORS} "
                "vectors of the text encoder's width."
            )
        shaped[key] = vectors.float()
    return shaped


class EmbeddingLibrary:
    """The embeddings folder: names, their vectors (read once, kept: they are a few KB each)."""

    def __init__(self, folder: Path):
        self.files = ModelFolder(folder, "embedding")
        self._lock = threading.Lock()
        self._loaded: dict[tuple[str, float], Embedding] = {}  # (path, mtime) -> embedding

    def by_trigger(self) -> dict[str, Path]:
        """trigger word (the file stem, without its subfolder) -> file; the first file wins a tie."""
        triggers: dict[str, Path] = {}
        for name, path in self.files.files().items():
            triggers.setdefault(name.rsplit("/", 1)[-1], path)
        return triggers

    def get(self, trigger: str, path: Path) -> Embedding:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        key = (str(path), path.stat().st_mtime)
        with self._lock:
            if key in self._loaded:
                return self._loaded[key]
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise RequestError(f"Embedding '{trigger}' could not be read: the file is damaged ({exc}).") from None
        embedding = Embedding(trigger, read_vectors(tensors, trigger), file_sha256(path)[:12])
        with self._lock:
            self._loaded[key] = embedding
        return embedding

    def find(self, text: str) -> list[Embedding]:
        """The embeddings whose trigger word appears in `text` as a word of its own."""
        triggers = self.by_trigger()
        if not triggers:
            return []
        return [self.get(trigger, triggers[trigger]) for trigger in _words_in(text, triggers)]

    def describe_all(self) -> list[str]:
        lines = []
        for trigger, path in sorted(self.by_trigger().items()):
            try:
                lines.append(self.get(trigger, path).describe())
            except RequestError as exc:
                lines.append(str(exc))
        return lines


def trigger_pattern(triggers) -> re.Pattern:
    """Matches any trigger as a whole word (longest first, so `cat2` is not read as `cat`)."""
    names = sorted(triggers, key=len, reverse=True)
    return re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, names)) + r")(?![\w-])")


def _words_in(text: str, triggers) -> list[str]:
    return list(dict.fromkeys(trigger_pattern(triggers).findall(text)))
