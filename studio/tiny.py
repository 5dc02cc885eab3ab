"""The offline "tiny" model set: small random-weight models in the diffusers layout, built from code.

Every model a real preset loads from the hub has a tiny twin, saved with `save_pretrained` (or as the
files controlnet-aux expects), so the tiny presets go through exactly the same `from_pretrained` /
`load_lora_weights` / annotator loading code. The weights are random but deterministic (fixed seed):
the same version of the builders always builds the same models.

Each family builds its own twin under `<models_dir>/tiny/` (its builder lives with the family in
studio/families/); this module keeps what they share (the CLIP tokenizer and text encoder, the
preview VAE, PEFT LoRA layers, the OpenPose annotator) and builds the whole set once, atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from studio.control import CONTROL_MODES

# Bump when the shared models change; each family's twin has its own tiny_version.
VERSION = 7
SEED = 20261121
_MARKER = "tiny-models.json"

CROSS_ATTENTION_DIM = 32
_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def _byte_alphabet() -> list[str]:
    """GPT-2 / CLIP byte-to-unicode alphabet: one printable character for each of the 256 bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build_tokenizer():
    """A character-level CLIP tokenizer built in memory: every byte, alone or ending a word."""
    from transformers import CLIPTokenizer

    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + list(_SPECIAL_TOKENS)
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def preview_vae(latent_channels: int = 4):
    from diffusers import AutoencoderTiny

    # TAESD's layout (three 2x upsamplings: latents to full size) with narrow blocks.
    return AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                           num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1),
                           latent_channels=latent_channels)


def text_encoder(tokenizer, with_projection: bool = False, hidden_size: int = CROSS_ATTENTION_DIM):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        hidden_size=hidden_size,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=1000,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        layer_norm_eps=1e-5,
        projection_dim=hidden_size,
    )
    model = CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)
    # A trained CLIP's final layer norm has a bias, so its output's mean is not ~0; A1111's emphasis
    # divides by that mean. A zero bias (the init) would make the tiny model's weighting degenerate.
    with torch.no_grad():
        norm = getattr(model, "text_model", model).final_layer_norm
        norm.bias.normal_(0, 0.5)
    return model


def build_annotators(folder: Path) -> None:
    """Random OpenPose weights in the file layout controlnet-aux's `from_pretrained(folder)` reads."""
    from controlnet_aux.open_pose.body import bodypose_model
    from controlnet_aux.open_pose.face import FaceNet
    from controlnet_aux.open_pose.hand import handpose_model

    folder.mkdir(parents=True)
    # controlnet-aux strips the first name of each key (`model0.conv1_1.weight` -> `conv1_1.weight`).
    for model, name in ((bodypose_model(), "body_pose_model.pth"), (handpose_model(), "hand_pose_model.pth")):
        state = {".".join(k.split(".")[1:]): v.half() for k, v in model.state_dict().items()}
        torch.save(state, folder / name)
    torch.save({k: v.half() for k, v in FaceNet().state_dict().items()}, folder / "facenet.pth")


def lora_layers(model, rank: int, targets: list[str]):
    """PEFT LoRA on `targets` of `model`, with random (non-zero) up weights."""
    from peft import LoraConfig, get_peft_model_state_dict

    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False)
    model.add_adapter(config, adapter_name="tiny")
    return get_peft_model_state_dict(model, adapter_name="tiny")


def _versions() -> dict:
    from studio.families import FAMILIES

    # A new control mode (studio/control.py) needs its tiny ControlNets: rebuilt then.
    return {"version": VERSION, "seed": SEED, "control": list(CONTROL_MODES),
            "families": {family.name: family.tiny_version for family in FAMILIES}}


def _build_all(root: Path) -> None:
    from studio.families import FAMILIES

    torch.manual_seed(SEED)
    build_annotators(root / "annotators")
    for family in FAMILIES:  # each from the same seed: a new family changes no other's weights
        torch.manual_seed(SEED)
        family.build_tiny(root)
    (root / _MARKER).write_text(json.dumps(_versions()))


def is_built(root: Path) -> bool:
    try:
        return json.loads((root / _MARKER).read_text()) == _versions()
    except (OSError, ValueError):
        return False


def ensure_built(root: Path) -> Path:
    """Build the tiny set into `root` unless an up-to-date one is there. Returns `root`.

    Built in a temporary sibling folder and renamed into place, so an interrupted build never
    leaves a half set that looks complete.
    """
    if is_built(root):
        return root
    from filelock import FileLock  # huggingface_hub's dependency

    root.parent.mkdir(parents=True, exist_ok=True)
    # Two processes (two studios, or parallel test workers) build it once: the second waits here,
    # then finds it built, instead of deleting the folder the first is reading.
    with FileLock(str(root.parent / f".{root.name}.lock")):
        if is_built(root):
            return root
        staging = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=root.parent))
        try:
            with torch.random.fork_rng():
                _build_all(staging)
            if root.exists():
                shutil.rmtree(root)
            os.replace(staging, root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return root
