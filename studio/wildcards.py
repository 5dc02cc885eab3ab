"""Wildcards and variants, as the Dynamic Prompts extension reads them (the `dynamicprompts`
library): `__name__` is a random line of `wildcards/name.txt` (`__a/b__`: of `wildcards/a/b.txt`),
`{red|green|blue}` one of the variants, `{2$$a|b|c}` two of them (joined by
","; `{2$$ and $$a|b|c}` names the joiner).

Each image's choice comes from that image's seed, so the same seed gives the same prompt. A prompt
with any of them becomes one generation per image (each with its own resolved prompt); the image's
parameters keep the resolved prompt, and the template as Dynamic Prompts writes it ("Template").
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from studio.errors import RequestError
from studio.requests import MAX_SEED, GenerationRequest

WILDCARD = re.compile(r"__([^_\s](?:[^\s]*?[^_\s])?)__")
NAME = re.compile(r"[\w\- ]+(/[\w\- ]+)*")


def has_dynamic_parts(text: str) -> bool:
    return "{" in text or WILDCARD.search(text) is not None


class Wildcards:
    def __init__(self, folder: Path):
        self.folder = folder

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(path.relative_to(self.folder).with_suffix("").as_posix() for path in self.folder.rglob("*.txt")
                      if self._inside(path))

    def _inside(self, path: Path) -> bool:
        """A file under the folder, also once links are followed (a link out of it is not read)."""
        try:
            path.resolve().relative_to(self.folder.resolve())
        except ValueError:
            return False
        return path.is_file()

    def check(self, text: str) -> None:
        """Every `__name__` in `text` names a file of the folder; a message that says which is not."""
        for match in WILDCARD.finditer(text):
            name = match.group(1)
            if not NAME.fullmatch(name) or not self._inside(self.folder / f"{name}.txt"):
                known = ", ".join(self.names()[:20]) or "none"
                raise RequestError(f"The wildcard __{name[:60]}__ has no file {self.folder.name}/{name[:60]}.txt "
                                   f"(names are letters, digits, '-', '_' and '/' for subfolders). "
                                   f"Wildcards here: {known}.")

    def resolve(self, text: str, seed: int) -> str:
        """`text` with its wildcards and variants chosen from `seed` (the same seed, the same text)."""
        if not has_dynamic_parts(text):
            return text
        from dynamicprompts.generators import RandomPromptGenerator
        from dynamicprompts.wildcards import WildcardManager

        self.check(text)
        generator = RandomPromptGenerator(wildcard_manager=WildcardManager(self.folder), seed=seed)
        try:
            return str(generator.generate(text, num_images=1)[0])
        except Exception as exc:  # the library's parse errors: unbalanced braces and the like
            raise RequestError(f"The prompt's variants cannot be read ({type(exc).__name__}: {exc}). Check its "
                               "{...|...} braces.") from None

    def expand(self, request: GenerationRequest, first_seed: int) -> list[GenerationRequest]:
        """One request per image, each with its own seed (first_seed + k, as a batch's) and its prompts
        resolved from that seed; a request without wildcards or variants as it is."""
        prompt, negative = request.prompt, request.negative_prompt
        if not (has_dynamic_parts(prompt) or has_dynamic_parts(negative)):
            return [request]
        count = request.batch_size * request.batch_count
        expanded = []
        for k in range(count):
            seed = (first_seed + k) % (MAX_SEED + 1)
            expanded.append(replace(request, prompt=self.resolve(prompt, seed), negative_prompt=self.resolve(
                negative, seed), seed=seed, batch_size=1, batch_count=1, prompt_template=prompt,
                negative_template=negative if has_dynamic_parts(negative) else ""))
        return expanded
