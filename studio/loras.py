"""The LoRA library: which LoRAs exist, what their files say about themselves, and their weights.

- Files are `.safetensors` only, looked up by name inside the folder (studio/folders.py).
- State dicts are read once and kept in RAM (LRU, a byte budget), so switching back to a LoRA
  costs no disk read.
- `<lora:name:0.8>` in a prompt, A1111's syntax, is taken out of the prompt and added to the set.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from studio.errors import RequestError
from studio.folders import ModelFolder, file_sha256

_PROMPT_LORA = re.compile(r"<lora:([^:>]+)(?::([^>]*))?>")
MAX_LORAS_PER_REQUEST = 8


@dataclass(frozen=True)
class LoraInfo:
    name: str
    source: str  # a file path, or a hub id for LoRAs a preset names
    base_model: str | None = None  # ss_base_model_version, e.g. "sd_v1", "sdxl_base_v1-0"
    rank: str | None = None  # ss_network_dim
    trigger_words: tuple[str, ...] = ()
    short_hash: str | None = None  # A1111's "Lora hashes": sha256 of the file, first 12 hex digits

    def describe(self) -> str:
        parts = [self.name]
        if self.base_model:
            parts.append(f"for {self.base_model}")
        if self.rank:
            parts.append(f"rank {self.rank}")
        if self.trigger_words:
            parts.append("trigger words: " + ", ".join(self.trigger_words))
        return " · ".join(parts)


def parse_prompt_loras(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """Take A1111's `<lora:name:weight>` tags out of a prompt: (clean prompt, [(name, weight)])."""
    found: list[tuple[str, float]] = []
    for name, weight in _PROMPT_LORA.findall(prompt):
        try:
            found.append((name.strip(), float(weight) if weight.strip() else 1.0))
        except ValueError:
            raise RequestError(f"In <lora:{name}:{weight}>, the weight must be a number like 0.8.") from None
    clean = _PROMPT_LORA.sub("", prompt)
    clean = re.sub(r"\s*,\s*(,\s*)+", ", ", clean)  # "a, <lora:x>, b" -> "a, , b" -> "a, b"
    return clean.strip().strip(",").strip(), found


def parse_lora_list(text: str) -> list[tuple[str, float]]:
    """The API's `loras` text, "name:0.8, other" (weight 1 when left out), as (name, weight) pairs."""
    pairs = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, _, weight = item.rpartition(":")
        try:
            pairs.append((name.strip(), float(weight)) if name else (item, 1.0))
        except ValueError:
            pairs.append((item, 1.0))  # the last ":" was part of the name
    return pairs


def format_lora_list(pairs) -> str:
    return ", ".join(f"{name}:{weight:g}" for name, weight in pairs)


def merge_loras(*sets: list[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    """One (name, weight) per LoRA, in first-seen order; a later weight for the same name wins."""
    merged: dict[str, float] = {}
    for lora_set in sets:
        for name, weight in lora_set:
            merged[name] = float(weight)
    return tuple((name, weight) for name, weight in merged.items() if weight != 0)


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def _trigger_words(metadata: dict[str, str], limit: int = 6) -> tuple[str, ...]:
    """The most frequent training tags (kohya's ss_tag_frequency), which users type to trigger it."""
    try:
        frequency = json.loads(metadata.get("ss_tag_frequency", "{}"))
    except ValueError:
        return ()
    counts: dict[str, int] = {}
    for tags in frequency.values() if isinstance(frequency, dict) else ():
        if isinstance(tags, dict):
            for tag, count in tags.items():
                counts[tag.strip()] = counts.get(tag.strip(), 0) + int(count)
    return tuple(sorted(counts, key=lambda tag: -counts[tag])[:limit])


def _short_hash(path: Path) -> str:
    return file_sha256(path)[:12]


class LoraLibrary:
    """LoRAs from a folder (any depth) plus named extras (a preset's hub ids or built files)."""

    def __init__(self, folder: Path, extras: dict[str, str] | None = None, cache_bytes: int = 1 << 30):
        self.folder = Path(folder)
        self._files = ModelFolder(self.folder, "LoRA")
        self.extras = dict(extras or {})
        self.cache_bytes = cache_bytes
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, dict] = OrderedDict()  # name -> state dict, most recent last
        self._info: dict[tuple[str, str], LoraInfo] = {}

    # --- what exists ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(set(self._files.names()) | set(self.extras))

    def refused(self) -> list[str]:
        """Pickle files found in the folder, which are never loaded."""
        return self._files.refused()

    def _source(self, name: str) -> str:
        if isinstance(name, str) and name in self.extras:
            return self.extras[name]
        return str(self._files.path(name, tuple(self.extras)))

    def info(self, name: str) -> LoraInfo:
        from safetensors import SafetensorError

        source = self._source(name)
        key = (name, source)
        if key not in self._info:
            path = Path(source)
            if path.is_file():
                try:
                    metadata = read_metadata(path)
                except (SafetensorError, OSError, ValueError) as exc:
                    raise RequestError(
                        f"LoRA '{name}' could not be read: the file is damaged or not a .safetensors LoRA ({exc})."
                    ) from None
                self._info[key] = LoraInfo(
                    name=name, source=source, base_model=metadata.get("ss_base_model_version"),
                    rank=metadata.get("ss_network_dim"), trigger_words=_trigger_words(metadata),
                    short_hash=_short_hash(path),
                )
            else:
                self._info[key] = LoraInfo(name=name, source=source)
        return self._info[key]

    # --- weights --------------------------------------------------------------------------------

    def state_dict(self, name: str) -> dict:
        """The LoRA's tensors (on the CPU), from the RAM cache or read from disk / the hub. Each
        caller gets its own copy: diffusers' converters change what they are given (FLUX.1's kohya
        one scales the text encoder's weights by alpha in place), which would make the next load of
        the cached file another LoRA."""
        with self._lock:
            if name in self._cache:
                self._cache.move_to_end(name)
                return _copy(self._cache[name])
        source = self._source(name)
        state = self._read(name, source)
        with self._lock:
            self._cache[name] = state
            while len(self._cache) > 1 and sum(map(_nbytes, self._cache.values())) > self.cache_bytes:
                self._cache.popitem(last=False)
        return _copy(state)

    def _read(self, name: str, source: str) -> dict:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(source)
        if not path.is_file():
            path = self._download(name, source)
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise RequestError(f"LoRA '{name}' could not be read: the file is damaged or not a LoRA ({exc}).") from None

    def _download(self, name: str, source: str) -> Path:
        """A hub LoRA: `org/repo` (its pytorch_lora_weights.safetensors) or `org/repo/file.safetensors`."""
        from huggingface_hub import hf_hub_download

        parts = source.split("/")
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:]) or "pytorch_lora_weights.safetensors"
        if not filename.endswith(".safetensors"):
            raise RequestError(f"LoRA '{name}' ({source}) is not a .safetensors file; only those are used.")
        try:
            return Path(hf_hub_download(repo, filename))
        except Exception as exc:  # offline, missing repo or file: all end the same way for the user
            raise RequestError(
                f"LoRA '{name}' ({source}) is not cached and could not be downloaded ({type(exc).__name__}). "
                "Connect to the internet once, or put the .safetensors file in the LoRA folder."
            ) from None

    def cached_names(self) -> list[str]:
        with self._lock:
            return list(self._cache)


def _nbytes(state: dict) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def _copy(state: dict) -> dict:
    return {key: tensor.clone() for key, tensor in state.items()}
