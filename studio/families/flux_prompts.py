"""FLUX.1's prompts: T5 reads the text (up to the model's sequence length, 512 for dev), CLIP gives
its pooled summary of the first 77 tokens. No negative prompt, no Clip skip.

A1111's weights apply where they can: on T5's hidden states, each token's scaled by its weight and
the whole mean restored ("Original" emphasis, as for SD). CLIP's pooled vector reads the text with
the weights taken out, BREAK does nothing (T5 has no chunks), and SD embeddings do not fit; each
of these gets a note. A prompt without weights gives exactly the embeddings of diffusers' own
`encode_prompt`, so plain prompts make the same images either way.
"""

from __future__ import annotations

import torch

from studio.families.base import Encoded
from studio.prompt_syntax import BREAK, parse_weighted

CLIP_TOKENS = 77


def _t5_ids(tokenizer, pieces: list[tuple[str, float]], length: int) -> tuple[list[int], list[float], int]:
    """(ids padded to `length`, their weights, tokens the text has before truncation)."""
    ids, weights = [], []
    for text, weight in pieces:
        piece_ids = tokenizer(text, add_special_tokens=False).input_ids
        ids += piece_ids
        weights += [weight] * len(piece_ids)
    total = len(ids) + 1  # with its end token
    ids, weights = ids[: length - 1] + [tokenizer.eos_token_id], weights[: length - 1] + [1.0]
    pad = length - len(ids)
    return ids + [tokenizer.pad_token_id] * pad, weights + [1.0] * pad, total


def _emphasis(hidden: torch.Tensor, weights: list[float]) -> torch.Tensor:
    scale = torch.tensor(weights, device=hidden.device, dtype=torch.float32)[None, :, None]
    original = hidden.float()
    weighted = original * scale
    ratio = original.mean() / weighted.mean()
    if torch.isfinite(ratio):
        weighted = weighted * ratio
    return weighted.to(hidden.dtype)


def encode_flux_prompt(pipe, prompt: str, negative: str, clip_skip: int, batch_size: int, max_tokens: int,
                       found_embeddings=(), syntax: str = "a1111") -> Encoded:
    """The prompt as FluxPipeline's `prompt_embeds` / `pooled_prompt_embeds`, one row per image."""
    notes: list[str] = []
    pieces = [(text, 1.0) for text in [prompt]] if syntax == "plain" else parse_weighted(prompt)
    if any(weight is BREAK for _, weight in pieces):
        notes.append("BREAK does nothing for FLUX.1 (its T5 encoder reads the prompt whole).")
    pieces = [(text, float(weight)) for text, weight in pieces if weight is not BREAK and text]
    plain_text = "".join(text for text, _ in pieces)
    weighted = any(weight != 1.0 for _, weight in pieces)
    if weighted:
        notes.append("FLUX.1 applies prompt weights to its T5 encoder; CLIP's pooled summary reads the text "
                     "unweighted.")
    if negative.strip():
        notes.append("FLUX.1 has no negative prompt: it was not used.")
    if clip_skip != 1:
        notes.append("Clip skip does not apply to FLUX.1 (its CLIP gives only a pooled summary): it used 1.")
    for embedding in found_embeddings:
        notes.append(f"Embedding '{embedding.describe()}' is for SD/SDXL text encoders; FLUX.1 read "
                     f"'{embedding.name}' as plain text.")
    device = pipe._execution_device
    with torch.no_grad():
        if weighted:
            ids, weights, total = _t5_ids(pipe.tokenizer_2, pieces, max_tokens)
            encoder = pipe.text_encoder_2
            hidden = encoder(torch.tensor([ids], device=encoder.device), output_hidden_states=False)[0]
            embeds = _emphasis(hidden, weights).to(dtype=encoder.dtype, device=device)
            pooled = pipe._get_clip_prompt_embeds(prompt=plain_text, device=device)
        else:
            total = len(pipe.tokenizer_2(plain_text).input_ids)  # with its end token
            embeds, pooled, _ = pipe.encode_prompt(prompt=plain_text, prompt_2=None, device=device,
                                                   max_sequence_length=max_tokens)
    if total > max_tokens:
        cut = pipe.tokenizer_2.decode(pipe.tokenizer_2(plain_text).input_ids[max_tokens - 1:-1])
        notes.append(f"The prompt is {total} T5 tokens; this model reads {max_tokens}, so '{cut[:80]}' was cut.")
    kwargs = {"prompt_embeds": embeds.repeat(batch_size, 1, 1), "pooled_prompt_embeds": pooled.repeat(batch_size, 1)}
    return Encoded(kwargs, notes)
