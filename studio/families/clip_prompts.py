"""Prompts encoded as A1111 does: weights, BREAK, any length, embeddings, Clip skip.

The prompt is parsed (studio/prompt_syntax.py) and cut into chunks of 75 tokens (a new chunk at
BREAK; a full chunk breaks after its last comma when that is within 20 tokens, and an embedding is
never split). Each chunk becomes BOS + 75 + EOS = 77 tokens and is encoded alone; the hidden
states are multiplied by their tokens' weights, then scaled so the chunk's mean is what it was
("Original" emphasis); the chunks are concatenated. Prompt and negative prompt are padded with
empty chunks to the same length. SDXL: both text encoders' penultimate layers side by side, the
pooled embedding from the first chunk, as A1111.

A prompt with no weights, no embedding and at most 75 tokens gives exactly the embeddings
diffusers' own encode_prompt gives (tested), so plain prompts make the same images either way.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch

from studio.embeddings import Embedding, EmbeddingLibrary, trigger_pattern
from studio.errors import RequestError
from studio.families.base import Encoded
from studio.prompt_syntax import BREAK, parse_weighted

CHUNK = 75  # tokens of text per chunk, between BOS and EOS
COMMA_BACKTRACK = 20  # a full chunk breaks after a comma this close to its end
MAX_CHUNKS = 32  # 2400 tokens: beyond, the prompt is refused (never cut silently)


@dataclass
class _Chunk:
    tokens: list[int] = field(default_factory=list)  # at most CHUNK token ids
    weights: list[float] = field(default_factory=list)
    fixes: list[tuple[int, Embedding]] = field(default_factory=list)  # (offset in tokens, embedding)


def _encoders(pipe) -> list[tuple[object, object]]:
    pairs = [(getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None)),
             (getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None))]
    return [(tok, enc) for tok, enc in pairs if tok is not None and enc is not None]


def is_sdxl(pipe) -> bool:
    return hasattr(pipe, "text_encoder_2")


def _slots(pipe) -> list[tuple[int, object, object]]:
    """(embedding slot, tokenizer, text encoder) of each text encoder: slot 0 is SD's encoder or
    SDXL's first (`clip_l`), slot 1 SDXL's second (`clip_g`). An SDXL pipeline without its first
    encoder (a refiner) has only slot 1."""
    offset = 1 if is_sdxl(pipe) and getattr(pipe, "text_encoder", None) is None else 0
    return [(index + offset, tokenizer, encoder) for index, (tokenizer, encoder) in enumerate(_encoders(pipe))]


class _Chunker:
    """Turns parsed (text, weight) pieces into chunks of token ids with weights."""

    def __init__(self, tokenizer, embeddings: dict[str, Embedding]):
        self.tokenizer = tokenizer
        self.embeddings = embeddings
        self.pattern = trigger_pattern(embeddings) if embeddings else None
        self.comma = tokenizer.convert_tokens_to_ids(",</w>")
        self.chunks: list[_Chunk] = []
        self.current = _Chunk()
        self.last_comma = -1

    def close(self) -> None:
        self.chunks.append(self.current)
        self.current, self.last_comma = _Chunk(), -1

    def add_token(self, token: int, weight: float) -> None:
        current = self.current
        if token == self.comma:
            self.last_comma = len(current.tokens)
        elif len(current.tokens) == CHUNK and self.last_comma != -1 and CHUNK - self.last_comma <= COMMA_BACKTRACK:
            cut = self.last_comma + 1
            moved = _Chunk(current.tokens[cut:], current.weights[cut:],
                           [(offset - cut, emb) for offset, emb in current.fixes if offset >= cut])
            del current.tokens[cut:], current.weights[cut:]
            current.fixes[:] = [(offset, emb) for offset, emb in current.fixes if offset < cut]
            self.close()
            self.current = moved
        if len(self.current.tokens) == CHUNK:
            self.close()
        self.current.tokens.append(token)
        self.current.weights.append(weight)

    def add_embedding(self, embedding: Embedding, weight: float, placeholder: int) -> None:
        if len(self.current.tokens) + embedding.tokens > CHUNK:
            self.close()
        self.current.fixes.append((len(self.current.tokens), embedding))
        self.current.tokens += [placeholder] * embedding.tokens
        self.current.weights += [weight] * embedding.tokens

    def add_text(self, text: str, weight: float) -> None:
        parts = self.pattern.split(text) if self.pattern else [text]
        for i, part in enumerate(parts):
            if i % 2:  # the pattern's group: an embedding's trigger word
                self.add_embedding(self.embeddings[part], weight, self.tokenizer.bos_token_id)
            elif part:
                for token in self.tokenizer(part, add_special_tokens=False, verbose=False).input_ids:
                    self.add_token(token, weight)

    def run(self, prompt: str) -> list[_Chunk]:
        for text, weight in parse_weighted(prompt):
            if weight is BREAK:
                self.close()
            else:
                self.add_text(text, weight)
        if self.current.tokens or not self.chunks:
            self.close()
        return self.chunks


def _final_norm(encoder):
    return getattr(getattr(encoder, "text_model", encoder), "final_layer_norm")


def _encode_chunk(chunk: _Chunk, slot: int, tokenizer, encoder, clip_skip: int, sdxl: bool, device):
    """(hidden states (1, 77, width), pooled or None) of one chunk through one text encoder."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = [tokenizer.bos_token_id, *chunk.tokens, tokenizer.eos_token_id]
    ids += [pad] * (CHUNK + 2 - len(ids))
    ids_tensor = torch.tensor([ids], device=device)
    width = encoder.get_input_embeddings().weight.shape[1]

    def put_vectors(module, inputs, output):
        output = output.clone()
        for offset, embedding in chunk.fixes:
            vectors = embedding.vectors_for(sdxl, slot, width)
            if vectors is not None:
                output[:, 1 + offset:1 + offset + len(vectors)] = vectors.to(output)
        return output

    hook = encoder.get_input_embeddings().register_forward_hook(put_vectors) if chunk.fixes else None
    try:
        out = encoder(ids_tensor, output_hidden_states=True)
    finally:
        if hook is not None:
            hook.remove()
    depth = clip_skip + 1 if sdxl else clip_skip  # how far back from the last hidden state
    if depth >= len(out.hidden_states):
        most = len(out.hidden_states) - (2 if sdxl else 1)
        raise RequestError(f"Clip skip {clip_skip} goes past this model's text encoder, which has "
                           f"{len(out.hidden_states) - 1} layers: use at most {most}.")
    if sdxl:  # the penultimate layer, as SDXL was trained; Clip skip 2 goes one further
        hidden = out.hidden_states[-depth]
    elif clip_skip == 1:
        hidden = out.last_hidden_state
    else:  # A1111's Clip skip: an earlier layer, through the final layer norm
        hidden = _final_norm(encoder)(out.hidden_states[-depth])
    pooled = getattr(out, "text_embeds", None)  # SDXL's second encoder (with projection) only
    return hidden, pooled


def _emphasis(hidden: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """Multiply each token's hidden state by its weight, then restore the chunk's mean."""
    if all(weight == 1.0 for weight in weights):
        return hidden  # untouched, bit for bit
    full = [1.0, *weights, *[1.0] * (CHUNK + 1 - len(weights))]
    scale = torch.tensor(full, device=hidden.device, dtype=torch.float32)[None, :, None]
    original = hidden.float()
    weighted = original * scale
    ratio = original.mean() / weighted.mean()
    if torch.isfinite(ratio):  # a mean of exactly 0 has nothing to restore
        weighted = weighted * ratio
    return weighted.to(hidden.dtype)


def _encode(pipe, chunks: list[_Chunk], clip_skip: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    sdxl = is_sdxl(pipe)
    hidden_chunks, pooled = [], None
    for number, chunk in enumerate(chunks):
        parts = []
        for slot, tokenizer, encoder in _slots(pipe):
            hidden, chunk_pooled = _encode_chunk(chunk, slot, tokenizer, encoder, clip_skip, sdxl, device)
            parts.append(hidden)
            if number == 0 and chunk_pooled is not None:
                pooled = chunk_pooled
        hidden = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
        hidden_chunks.append(_emphasis(hidden, chunk.weights))
    return torch.cat(hidden_chunks, dim=1), pooled


def _chunks(pipe, prompt: str, embeddings: dict[str, Embedding]) -> list[_Chunk]:
    tokenizer = _encoders(pipe)[0][0]
    chunks = _Chunker(tokenizer, embeddings).run(prompt)
    if len(chunks) > MAX_CHUNKS:
        raise RequestError(
            f"The prompt is {len(chunks)} chunks of {CHUNK} tokens long; at most {MAX_CHUNKS} "
            f"({MAX_CHUNKS * CHUNK} tokens) are read. Shorten it."
        )
    return chunks


def _usable(found: list[Embedding], pipe, notes: list[str]) -> dict[str, Embedding]:
    """The embeddings that fit this model's text encoders; a note for each that does not."""
    widths = [(slot, encoder.get_input_embeddings().weight.shape[1]) for slot, _, encoder in _slots(pipe)]
    usable = {}
    for embedding in found:
        if all(embedding.vectors_for(is_sdxl(pipe), slot, width) is not None for slot, width in widths):
            usable[embedding.name] = embedding
        else:
            model = "SDXL" if is_sdxl(pipe) else f"SD 1.x/2.x with a {widths[0][1]}-wide text encoder"
            notes.append(f"Embedding '{embedding.describe()}' does not fit this model ({model}): "
                         f"'{embedding.name}' was read as plain text.")
    return usable


def encode_prompts(pipe, prompt: str, negative: str, clip_skip: int = 1,
                   library: EmbeddingLibrary | None = None) -> Encoded:
    """Prompt and negative prompt as the pipeline's `prompt_embeds` keyword arguments."""
    notes: list[str] = []
    found = library.find(f"{prompt}\n{negative}") if library is not None else []
    embeddings = _usable(found, pipe, notes)
    device = pipe._execution_device
    positive, negative_chunks = _chunks(pipe, prompt, embeddings), _chunks(pipe, negative, embeddings)
    length = max(len(positive), len(negative_chunks))
    positive += [_Chunk() for _ in range(length - len(positive))]
    negative_chunks += [_Chunk() for _ in range(length - len(negative_chunks))]
    with torch.no_grad():
        embeds, pooled = _encode(pipe, positive, clip_skip, device)
        if is_sdxl(pipe) and not negative.strip() and pipe.config.get("force_zeros_for_empty_prompt", False):
            # SDXL was trained with zeros for "no negative prompt" (A1111 and diffusers both use them)
            negative_embeds, negative_pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
        else:
            negative_embeds, negative_pooled = _encode(pipe, negative_chunks, clip_skip, device)
    kwargs = {"prompt_embeds": embeds, "negative_prompt_embeds": negative_embeds}
    if is_sdxl(pipe):
        kwargs |= {"pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": negative_pooled}
    return Encoded(kwargs, notes, list(embeddings.values()))


def plain_prompts(pipe, prompt: str, negative: str, clip_skip: int = 1) -> Encoded:
    """diffusers' own encoding (the `--prompt-syntax plain` setting): the text as it is, 75 tokens
    at most. A longer prompt gets a note saying what was cut."""
    kwargs: dict = {"prompt": prompt, "negative_prompt": negative or None}
    notes = []
    tokenizer = _encoders(pipe)[0][0]
    for label, text in (("prompt", prompt), ("negative prompt", negative)):
        ids = tokenizer(text, add_special_tokens=False, verbose=False).input_ids
        if len(ids) > CHUNK:
            cut = tokenizer.decode(ids[CHUNK:])
            notes.append(f"The {label} is {len(ids)} tokens; this model reads {CHUNK} with plain prompt syntax, so "
                         f"'{cut[:80]}' was cut. The studio's A1111 syntax setting reads prompts of any length.")
    layers = _encoders(pipe)[0][1].config.num_hidden_layers
    if clip_skip > layers:
        raise RequestError(f"Clip skip {clip_skip} goes past this model's text encoder, which has {layers} layers: "
                           f"use at most {layers}.")
    if clip_skip > 1:
        if "clip_skip" in inspect.signature(pipe.__call__).parameters:
            kwargs["clip_skip"] = clip_skip - 1  # diffusers counts the layers skipped after the last
        else:
            notes.append("Clip skip is not available on this tab with plain prompt syntax: it used 1.")
    return Encoded(kwargs, notes)
