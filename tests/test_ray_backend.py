"""Generation on Ray Serve replicas (studio/backends/ray_serve.py): a local cluster with two CPU
replicas, started once for this module (~15 s, ~1.5 GB)."""

import dataclasses
import threading

import numpy as np
import pytest
from PIL import Image

from studio.errors import RequestError
from studio.requests import InpaintRequest, Txt2ImgRequest
from studio.ui import close_server

pytestmark = pytest.mark.slow

BASE = {"prompt": "a fox in the snow", "steps": 4, "width": 64, "height": 64, "seed": 17}
LONG = {**BASE, "steps": 40, "width": 128, "height": 128}


@pytest.fixture(scope="module")
def ray_studio(settings, tmp_path_factory):
    import ray

    from studio.backends.ray_serve import RayBackend
    from studio.core import Studio

    # A queue of 2 behind the 2 replicas, so the busy test needs only a handful of jobs.
    ray_settings = dataclasses.replace(settings, outputs_dir=tmp_path_factory.mktemp("ray-outputs"), queue_size=2)
    backend = RayBackend(ray_settings, workers=2, object_store_mb=128)
    yield Studio(ray_settings, backend=backend)
    backend.close()
    assert not ray.is_initialized()


def pixels(result) -> list[np.ndarray]:
    return [np.asarray(image) for image in result.images]


def test_same_seed_same_pixels_as_the_local_backend_with_progress_on_the_way(ray_studio, studio):
    request = Txt2ImgRequest(**{**BASE, "steps": 6}, batch_size=2, loras=(("tiny-style", 0.8),))
    steps, previews = [], []
    remote = ray_studio.generate(request, on_step=lambda done, total: steps.append((done, total)),
                                 on_preview=previews.append, owner="session:ray")
    local = studio.generate(request)
    assert steps == [(done, 6) for done in range(1, 7)]
    assert len(previews) == 2 and previews[0].size == (64, 64)  # every third step, as on one GPU
    assert all(np.array_equal(a, b) for a, b in zip(pixels(remote), pixels(local), strict=True))
    assert remote.infotexts == local.infotexts
    # Saved by the front end: the files and their history rows.
    assert all(path.is_file() and path.parent.is_relative_to(ray_studio.settings.outputs_dir) for path in remote.paths)
    assert len(ray_studio.history.page("session:ray", 0, 10)) == 2


def test_flux_on_a_replica_gives_the_local_pixels_with_its_lora(ray_studio, studio):
    request = Txt2ImgRequest(prompt="a lighthouse", steps=3, width=64, height=64, seed=9, sampler="Euler",
                             guidance_scale=3.5, batch_size=2, loras=(("tiny-flux-kohya", 0.7),))
    remote, local = ray_studio.generate(request, preset="tiny-flux"), studio.generate(request, preset="tiny-flux")
    assert all(np.array_equal(a, b) for a, b in zip(pixels(remote), pixels(local), strict=True))
    assert remote.infotexts == local.infotexts and "Distilled CFG Scale: 3.5" in remote.infotexts[0]


def test_an_inpaint_keeps_every_pixel_outside_its_mask_on_a_replica(ray_studio, studio):
    photo = Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (16, 16, 48, 48))
    request = InpaintRequest(prompt="a cat", steps=3, seed=4, image=photo, mask=mask, mask_blur=0)
    remote, local = ray_studio.generate(request), studio.generate(request)
    assert np.array_equal(pixels(remote)[0], pixels(local)[0])
    outside = np.asarray(mask) == 0
    assert np.array_equal(pixels(remote)[0][outside], np.asarray(photo)[outside])


def test_stop_ends_the_job_within_a_step(ray_studio):
    stop, seen = threading.Event(), []

    def on_step(done, total):
        seen.append(done)
        if done == 3:
            stop.set()

    result = ray_studio.generate(Txt2ImgRequest(**LONG), on_step=on_step, stop=stop)
    assert result.stopped and result.paths == []
    # The replica reads Stop at each step's end, the answer to the question it sent a step before.
    assert seen[-1] <= 5
    assert ray_studio.generate(Txt2ImgRequest(**BASE)).images  # the replica is free again


def test_two_users_with_different_lora_sets_get_their_own_exact_images(ray_studio, studio):
    requests = {"ann": Txt2ImgRequest(**BASE, loras=(("tiny-style", 1.0),)),
                "bob": Txt2ImgRequest(**BASE, loras=(("tiny-kohya", 1.2),))}
    results = {}

    def run(user):
        results[user] = ray_studio.generate(requests[user], owner=f"user:{user}")

    threads = [threading.Thread(target=run, args=(user,)) for user in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for user, request in requests.items():
        assert np.array_equal(pixels(results[user])[0], pixels(studio.generate(request))[0]), user
    assert not np.array_equal(pixels(results["ann"])[0], pixels(results["bob"])[0])


def test_jobs_go_to_the_replica_that_holds_their_lora_set(ray_studio):
    backend = ray_studio.backend
    sets = [(("tiny-style", 1.0),), (("tiny-kohya", 1.0), ("tiny-style", 0.5))]
    for k in range(8):
        ray_studio.generate(Txt2ImgRequest(**{**BASE, "steps": 2}, loras=sets[k % 2]))
    routed, hits = backend.routed, backend.hits
    for k in range(8):  # both sets are held now: every job finds its replica
        ray_studio.generate(Txt2ImgRequest(**{**BASE, "steps": 2}, loras=sets[k % 2]))
    assert (backend.routed - routed, backend.hits - hits) == (8, 8)


def test_a_bad_request_gets_the_same_message_as_on_one_gpu(ray_studio, studio):
    request = Txt2ImgRequest(**BASE, loras=(("no-such-lora", 1.0),))
    with pytest.raises(RequestError) as local:
        studio.generate(request)
    with pytest.raises(RequestError) as remote:
        ray_studio.generate(request)
    assert str(remote.value) == str(local.value) and "no-such-lora" in str(remote.value)


def test_a_full_queue_says_the_studio_is_busy_and_the_rest_are_served(ray_studio):
    outcomes, statuses = [], []

    def run():
        try:
            outcomes.append(ray_studio.generate(Txt2ImgRequest(**LONG, loras=()), on_status=statuses.append))
        except RequestError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=run) for _ in range(6)]  # 2 replicas + a queue of 2
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    busy = [outcome for outcome in outcomes if isinstance(outcome, str)]
    assert busy and all("The studio is busy" in text and "number 3 in the queue" in text for text in busy)
    assert len(outcomes) - len(busy) >= 2  # the jobs that got a place ran to the end
    assert all(len(outcome.paths) == 1 for outcome in outcomes if not isinstance(outcome, str))
    # The queued ones were told their place while they waited.
    assert "Waiting for a GPU worker: number 1 in the queue" in statuses


def test_the_page_generates_on_the_replicas(ray_studio, settings):
    from gradio_client import Client

    from studio.ui import build, launch_options
    from tests.conftest import free_port

    demo = build(ray_studio)
    # Every event on the GPU queue lets two jobs through, one per replica (Gradio keeps the lowest limit).
    assert {fn.concurrency_limit for fn in demo.fns.values() if fn.concurrency_id == "gpu"} == {3}  # 2 + a save
    demo.queue()
    demo.launch(server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_options(ray_studio))
    try:
        client = Client(demo.local_url, verbose=False)
        gallery, info = client.predict(prompt="a fox", steps=2, width=64, height=64, seed=5, api_name="/txt2img")
        assert len(gallery) == 1 and "Seed: 5" in info
    finally:
        close_server(demo)


def test_a_replica_killed_mid_job_fails_that_job_with_a_message_and_the_next_works(ray_studio):
    import ray

    backend = ray_studio.backend
    killed = []

    def on_step(done, total):
        if done == 2 and not killed:
            replica = next(iter(backend.running.values()))
            ray.kill(ray.get_actor(replica, namespace="serve"))
            killed.append(replica)

    with pytest.raises(RequestError, match="The GPU worker rendering your job stopped .*Press Generate again"):
        ray_studio.generate(Txt2ImgRequest(**LONG), on_step=on_step)
    assert killed
    assert len(ray_studio.generate(Txt2ImgRequest(**BASE)).paths) == 1

