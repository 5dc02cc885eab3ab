"""Styles (A1111's styles.csv) and wildcards (Dynamic Prompts' syntax), on both front ends."""

import dataclasses
import json

import numpy as np
import pytest
import requests

from studio.errors import RequestError
from studio.job_service import Job
from studio.requests import Txt2ImgRequest
from studio.styles import StyleLibrary
from studio.wildcards import Wildcards
from tests.test_shared import FAST

STYLES_CSV = (
    "name,prompt,negative_prompt\n"
    'cinematic,"cinematic still of {prompt}, film grain","cartoon, {prompt}"\n'
    "moody,\"dark, moody\",\n"
)


def small(**change) -> Txt2ImgRequest:
    return Txt2ImgRequest(**{"prompt": "a fox", "steps": 2, "width": 64, "height": 64, "seed": 11, **change})


@pytest.fixture
def library(tmp_path):
    shared = tmp_path / "styles.csv"
    shared.write_text(STYLES_CSV)
    return StyleLibrary(shared, tmp_path / "own", per_user=True)


@pytest.fixture(scope="module")
def wildcard_files(settings):
    folder = settings.wildcards_dir
    (folder / "animals.txt").write_text("fox\nowl\n# a comment is not a choice\nhare\n")
    (folder / "colors").mkdir(exist_ok=True)
    (folder / "colors" / "warm.txt").write_text("red\norange\n")
    return folder


def test_a_style_fills_its_placeholder_or_follows_the_prompt(library):
    assert library.apply("a fox", "blurry", ["cinematic"]) == ("cinematic still of a fox, film grain",
                                                               "cartoon, blurry")
    assert library.apply("a fox", "blurry", ["moody"]) == ("a fox, dark, moody", "blurry")
    assert library.apply("a fox", "", ["moody", "cinematic"])[0] == "cinematic still of a fox, dark, moody, film grain"


def test_an_unknown_style_is_named_with_the_ones_there_are(library):
    with pytest.raises(RequestError, match="no style named 'neon'.*cinematic, moody"):
        library.apply("a fox", "", ["neon"])


def test_saved_styles_are_each_logins_own_and_written_whole(library, tmp_path):
    library.save("user:ann", "soft", "soft light, {prompt}", "harsh")
    assert library.apply("a fox", "", ["soft"], "user:ann") == ("soft light, a fox", "harsh")
    assert "soft" not in library.names("user:bob")  # Bob sees the server's styles, not Ann's
    assert set(library.names("user:bob")) == {"cinematic", "moody"}
    assert library.shared_file.read_text() == STYLES_CSV  # the server's file is untouched
    files = list((tmp_path / "own").iterdir())
    assert len(files) == 1 and files[0].suffix == ".csv" and "ann" not in files[0].name
    with pytest.raises(RequestError, match="Give the style a name"):
        library.save("user:ann", "  ", "x", "")


def test_a_style_that_cannot_be_written_says_so_and_leaves_nothing(library, tmp_path):
    (tmp_path / "own").write_text("a file where the folder of own styles should be")
    with pytest.raises(RequestError, match="could not be saved"):
        library.save("user:ann", "soft", "soft light", "")
    assert (tmp_path / "own").read_text().startswith("a file") and library.names("user:ann") == ["cinematic", "moody"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["own", "styles.csv"]


def test_the_same_seed_gives_the_same_prompt_and_seeds_pick(wildcard_files):
    wildcards = Wildcards(wildcard_files)
    template = "a __animals__ in __colors/warm__, {day|night}"
    assert wildcards.resolve(template, 5) == wildcards.resolve(template, 5)
    picks = {wildcards.resolve(template, seed) for seed in range(40)}
    assert len(picks) > 3
    for pick in picks:
        animal, rest = pick.removeprefix("a ").split(" in ")
        assert animal in {"fox", "owl", "hare"} and rest.split(", ")[0] in {"red", "orange"}
        assert rest.split(", ")[1] in {"day", "night"}
    two = wildcards.resolve("{2$$a|b|c}", 3).split(",")
    assert len(two) == 2 and len(set(two)) == 2 and set(two) <= {"a", "b", "c"}


@pytest.mark.parametrize("name", ["missing", "../outside", "colors/../animals", "/etc/passwd"])
def test_a_wildcard_without_its_file_gets_a_message(wildcard_files, name):
    with pytest.raises(RequestError, match=r"has no file .*Wildcards here: animals, colors/warm"):
        Wildcards(wildcard_files).resolve(f"a __{name}__", 1)


def test_a_wildcard_file_linked_from_outside_the_folder_is_not_read(wildcard_files, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("password\n")
    (wildcard_files / "leak.txt").symlink_to(secret)
    try:
        with pytest.raises(RequestError, match="__leak__ has no file"):
            Wildcards(wildcard_files).resolve("__leak__", 1)
        assert "leak" not in Wildcards(wildcard_files).names()
    finally:
        (wildcard_files / "leak.txt").unlink()


def test_each_image_gets_its_prompt_from_its_seed_and_the_template_is_written(studio, wildcard_files):
    job = studio.jobs.job_for(small(prompt="a __animals__, {day|night}", seed=40, batch_size=2, batch_count=2))
    assert [g.request.seed for g in job.generations] == [40, 41, 42, 43]
    result = studio.jobs.run("wildcard-user", job)
    wildcards = Wildcards(wildcard_files)
    for seed, infotext in zip(result.seeds, result.infotexts):
        resolved = wildcards.resolve("a __animals__, {day|night}", seed)
        assert infotext.startswith(resolved + "\n")
        assert 'Template: "a __animals__, {day|night}"' in infotext
    # The image is the one the resolved prompt makes with that seed.
    alone = studio.generate(small(prompt=wildcards.resolve("a __animals__, {day|night}", 42), seed=42))
    assert np.array_equal(np.asarray(alone.images[0]), np.asarray(result.images[2]))


def test_styles_apply_at_generation_and_a_missing_wildcard_stops_the_job_before_it_starts(studio, settings):
    settings.styles_file.write_text(STYLES_CSV)
    job = studio.jobs.job_for(small(), styles=["cinematic"])
    assert job.generations[0].request.prompt == "cinematic still of a fox, film grain"
    made_before = len(list(settings.outputs_dir.rglob("*.png")))
    with pytest.raises(RequestError, match="__nowhere__ has no file"):
        studio.jobs.run("wildcard-user", studio.jobs.job_for(small(prompt="a __nowhere__")))
    assert len(list(settings.outputs_dir.rglob("*.png"))) == made_before


def test_a_job_checks_every_generation_before_the_first_runs(studio, settings):
    made_before = len(list(settings.outputs_dir.rglob("*.png")))
    job = Job.single(small())
    job.generations.append(dataclasses.replace(job.generations[0], request=small(steps=10_000)))
    with pytest.raises(RequestError, match="Steps must be between"):
        studio.jobs.run("check-user", job)
    assert len(list(settings.outputs_dir.rglob("*.png"))) == made_before


@pytest.mark.slow
def test_the_api_lists_styles_and_applies_them_with_wildcards(server, client, settings, wildcard_files):
    settings.styles_file.write_text(STYLES_CSV)
    listed = requests.get(f"{server}sdapi/v1/prompt-styles", timeout=30).json()
    assert {"name": "moody", "prompt": "dark, moody", "negative_prompt": ""} in listed
    answer = requests.post(f"{server}sdapi/v1/txt2img", timeout=120, json={
        **FAST, "prompt": "a __animals__", "styles": ["moody"], "seed": 9, "steps": 2, "batch_size": 2}).json()
    info = json.loads(answer["info"])
    wildcards = Wildcards(wildcard_files)
    assert info["all_prompts"] == [wildcards.resolve("a __animals__", s) + ", dark, moody" for s in (9, 10)]
    assert info["styles"] == ["moody"] and len(answer["images"]) == 2
    # The page's API too, with a style written after the page was built.
    _, info_text = client.predict(prompt="a fox", steps=2, seed=4, **FAST, styles=["cinematic"], api_name="/txt2img")
    assert info_text.startswith("cinematic still of a fox, film grain\nNegative prompt: cartoon, ")
    bad = requests.post(f"{server}sdapi/v1/txt2img", timeout=60, json={**FAST, "styles": "moody"})
    assert bad.status_code == 422 and "list of style names" in bad.json()["detail"]
