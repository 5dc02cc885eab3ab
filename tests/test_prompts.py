"""A1111 prompt syntax: parsing, chunked encoding, emphasis, Clip skip, and textual-inversion
embeddings, on the tiny SD and tiny SDXL models through the real pipelines."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from studio.errors import RequestError
from studio.families.clip_prompts import CHUNK, MAX_CHUNKS, _Chunker, encode_prompts
from studio.prompt_syntax import parse_weighted
from studio.requests import Txt2ImgRequest


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.int16)


def run(studio, prompt, preset=None, **change):
    fields = {"prompt": prompt, "steps": 3, "width": 64, "height": 64, "seed": 11, **change}
    return studio.generate(Txt2ImgRequest(**fields), preset=preset)


@pytest.mark.parametrize("prompt, expected", [
    ("a (b) c", [("a ", 1.0), ("b", 1.1), (" c", 1.0)]),
    ("((b))", [("b", pytest.approx(1.21))]),
    ("[b]", [("b", pytest.approx(1 / 1.1))]),
    ("(b:1.5), c", [("b", 1.5), (", c", 1.0)]),
    ("(a [b] c:0.5)", [("a ", 0.5), ("b", pytest.approx(0.5 / 1.1)), (" c", 0.5)]),
    (r"\(b\) \[c\]", [("(b) [c]", 1.0)]),
    ("a BREAK b", [("a", 1.0), ("BREAK", None), ("b", 1.0)]),
    ("a (b", [("a ", 1.0), ("b", 1.1)]),  # left open: weighs the rest
    ("a) b] c:d", [("a) b] c:d", 1.0)]),  # closers without an opener, a bare colon: text
    ("(a:1)", [("a", 1.0)]),
    ("aBREAK b", [("aBREAK b", 1.0)]),  # BREAK only as a word of its own
    ("", [("", 1.0)]),
])
def test_parse_weighted(prompt, expected):
    assert parse_weighted(prompt) == expected


def lent_pipe(studio, preset):
    """A pipeline as a generation gets it (no LoRA), kept for encoding only."""
    with studio.manager(preset).pipeline("txt2img", "Euler a") as pipe:
        return pipe


@pytest.fixture(scope="module")
def sd_pipe(studio):
    return lent_pipe(studio, "tiny")


@pytest.fixture(scope="module")
def sdxl_pipe(studio):
    return lent_pipe(studio, "tiny-sdxl")


def test_a_plain_prompt_encodes_exactly_as_diffusers_does(sd_pipe, sdxl_pipe):
    """So images from plain prompts do not change with the A1111 syntax setting."""
    ours = encode_prompts(sd_pipe, "a red fox", "blurry").kwargs
    theirs = sd_pipe.encode_prompt("a red fox", "cpu", 1, True, "blurry")
    assert torch.equal(ours["prompt_embeds"], theirs[0]) and torch.equal(ours["negative_prompt_embeds"], theirs[1])
    ours = encode_prompts(sdxl_pipe, "a red fox", "").kwargs
    theirs = sdxl_pipe.encode_prompt("a red fox", device="cpu", negative_prompt=None)
    names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
    for name, tensor in zip(names, theirs):
        assert torch.equal(ours[name], tensor), name
    assert not ours["negative_prompt_embeds"].any()  # SDXL's empty negative is zeros, as A1111 and diffusers


def test_long_prompts_are_chunked_and_padded_to_the_same_length(sd_pipe, sdxl_pipe):
    long = "word " * 60  # 5 tokens a word with the tiny character-level tokenizer: 300 tokens
    for pipe in (sd_pipe, sdxl_pipe):
        encoded = encode_prompts(pipe, long, "short").kwargs
        assert encoded["prompt_embeds"].shape[1] == 4 * (CHUNK + 2)
        assert encoded["negative_prompt_embeds"].shape == encoded["prompt_embeds"].shape
    assert encode_prompts(sd_pipe, "a BREAK b", "").kwargs["prompt_embeds"].shape[1] == 2 * (CHUNK + 2)


def test_a_full_chunk_breaks_after_its_last_comma(sd_pipe):
    tokenizer = sd_pipe.tokenizer
    # 70 tokens, a comma, then a word that crosses the 75-token border: it moves whole to chunk 2.
    chunks = _Chunker(tokenizer, {}).run("a" * 69 + "b, " + "c" * 10)
    first = tokenizer.decode(chunks[0].tokens).replace(" ", "")
    assert len(chunks) == 2 and first.endswith("b,") and set(tokenizer.decode(chunks[1].tokens).strip()) == {"c"}


def test_a_prompt_beyond_the_chunk_limit_is_refused_not_cut(sd_pipe):
    with pytest.raises(RequestError, match=f"at most {MAX_CHUNKS} .* are read. Shorten it"):
        encode_prompts(sd_pipe, "ab " * (MAX_CHUNKS * CHUNK // 2 + 10), "")  # 2 tokens each


def test_weight_one_equals_no_weight_and_weights_change_the_image(studio):
    plain = pixels(run(studio, "a red fox in the snow"))
    assert np.array_equal(plain, pixels(run(studio, "a (red fox:1) in the snow")))
    assert np.abs(plain - pixels(run(studio, "a (red fox:1.6) in the snow"))).mean() > 0.5
    assert np.abs(plain - pixels(run(studio, "a [[red fox]] in the snow"))).mean() > 0.1


def test_the_tail_of_a_200_token_prompt_changes_the_image(studio):
    head = "a lighthouse on a cliff at dawn, " * 5  # 165 tokens with the tiny tokenizer
    first = pixels(run(studio, head + "with a red roof"))
    second = pixels(run(studio, head + "with a green boat"))
    assert np.abs(first - second).mean() > 0.1


def test_clip_skip_changes_the_image_and_is_written_as_a1111_does(studio):
    one, two = run(studio, "a red fox"), run(studio, "a red fox", clip_skip=2)
    assert np.abs(pixels(one) - pixels(two)).mean() > 0.5
    assert "Clip skip: 2" in two.infotexts[0] and "Clip skip" not in one.infotexts[0]
    with pytest.raises(RequestError, match="Clip skip must be between 1 and 12, got 13"):
        run(studio, "a red fox", clip_skip=13)
    # The tiny text encoders have 5 layers: what A1111 allows for SD 1.5 (12) goes past them.
    with pytest.raises(RequestError, match="Clip skip 12 goes past this model's text encoder, which has 5 layers: "
                                           "use at most 5"):
        run(studio, "a red fox", clip_skip=12)
    assert run(studio, "a red fox", clip_skip=5).images
    with pytest.raises(RequestError, match="use at most 4"):
        run(studio, "a red fox", clip_skip=5, preset="tiny-sdxl")


def test_sdxl_weighting_and_long_prompts_run(studio):
    plain = pixels(run(studio, "a red fox", preset="tiny-sdxl"))
    assert np.array_equal(plain, pixels(run(studio, "a (red fox:1.0)", preset="tiny-sdxl")))
    weighted = pixels(run(studio, "a (red fox:1.5)", preset="tiny-sdxl", negative_prompt="blur " * 40))
    assert np.abs(plain - weighted).mean() > 0.5


def test_plain_syntax_says_what_it_cut(studio, settings):
    from studio.core import Studio

    plain = Studio(replace(settings, prompt_syntax="plain"))
    result = run(plain, "a red fox " * 20)
    assert any("this model reads 75 with plain prompt syntax, so" in note for note in result.notes)
    assert not run(plain, "a red fox").notes


# --- embeddings -----------------------------------------------------------------------------------

@pytest.fixture()
def embeddings(studio, settings):
    folder = settings.embeddings_dir
    generator = torch.Generator().manual_seed(3)
    save_file({"emb_params": torch.randn(2, 32, generator=generator)}, folder / "tinystyle.safetensors")
    save_file({"string_to_param.*": torch.randn(1, 32, generator=generator)}, folder / "oldstyle.safetensors")
    save_file({"clip_l": torch.randn(2, 32, generator=generator), "clip_g": torch.randn(2, 48, generator=generator)},
              folder / "xlstyle.safetensors")
    yield folder
    for path in folder.iterdir():
        path.unlink()


def test_an_embedding_changes_the_image_and_never_leaks_into_the_next_request(studio, embeddings):
    before = pixels(run(studio, "a red fox, painting"))
    with_embedding = run(studio, "a red fox, tinystyle")
    assert np.abs(before - pixels(with_embedding)).mean() > 0.5
    assert 'TI hashes: "tinystyle: ' in with_embedding.infotexts[0]
    assert np.abs(before - pixels(run(studio, "a red fox, oldstyle"))).mean() > 0.5
    # The same request without it gives exactly the image it gave before any embedding ran.
    assert np.array_equal(before, pixels(run(studio, "a red fox, painting")))
    # Only the whole word triggers it.
    assert "TI hashes" not in run(studio, "a red fox, tinystyles").infotexts[0]


def test_an_embedding_for_another_model_is_read_as_text_with_a_note(studio, embeddings):
    result = run(studio, "a red fox, xlstyle")
    assert any("does not fit this model" in note and "xlstyle" in note for note in result.notes)
    sdxl = run(studio, "a red fox, xlstyle", preset="tiny-sdxl")
    assert 'TI hashes: "xlstyle: ' in sdxl.infotexts[0] and not sdxl.notes
    assert np.abs(pixels(sdxl) - pixels(run(studio, "a red fox, painting", preset="tiny-sdxl"))).mean() > 0.1


def test_embeddings_are_listed_with_their_token_count(studio, embeddings):
    listed = studio.user_models.embeddings.describe_all()
    assert "tinystyle (2 tokens, SD 1.x/2.x, 32 wide)" in listed and "xlstyle (2 tokens, SDXL)" in listed


def test_a_broken_embedding_gets_a_message(studio, embeddings):
    (embeddings / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(RequestError, match="Embedding 'broken' could not be read: the file is damaged"):
        run(studio, "a broken fox")
    save_file({"a": torch.zeros(2, 32), "b": torch.zeros(2, 32)}, embeddings / "twotensors.safetensors")
    with pytest.raises(RequestError, match="'twotensors' is not a textual-inversion file"):
        run(studio, "twotensors")
