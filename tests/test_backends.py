"""Choosing where generation runs (studio/backends/), without starting Ray: the flags, the message
when Ray is missing, and the resources each replica asks for. Ray itself: test_ray_backend.py."""

import pytest


def test_scale_out_flags_pick_the_ray_backend_and_without_ray_say_how_to_install_it(monkeypatch, settings):
    import dataclasses

    import app
    from studio.backends import choose_backend, ray_serve
    from studio.backends.local import LocalBackend
    from studio.errors import BackendError
    from studio.model_pool import ModelPool

    for name in ("STUDIO_WORKERS", "STUDIO_RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert (app.settings_from_args(app.parse_args([])).workers, settings.ray_address) == (0, "")
    flagged = app.settings_from_args(app.parse_args(["--workers", "3", "--ray-address", "auto"]))
    assert (flagged.workers, flagged.ray_address) == (3, "auto")
    monkeypatch.setenv("STUDIO_WORKERS", "2")
    assert app.settings_from_args(app.parse_args([])).workers == 2
    with pytest.raises(ValueError, match="workers must be 0"):
        dataclasses.replace(settings, workers=-1)

    pool = ModelPool(settings)
    assert isinstance(choose_backend(settings, pool), LocalBackend)
    monkeypatch.setattr(ray_serve, "ray", None)  # as on a machine without Ray
    with pytest.raises(BackendError, match=r'pip install "ray\[serve\]"'):
        choose_backend(dataclasses.replace(settings, workers=2), pool)


def test_ray_replicas_get_a_gpu_each_share_them_when_fewer_or_split_the_cores():
    from studio.backends.ray_serve import replica_resources

    assert replica_resources(4, gpus=8, cpus=64, cores=64) == ({"num_gpus": 1.0}, 0)
    assert replica_resources(2, gpus=1, cpus=16, cores=16) == ({"num_gpus": 0.5}, 0)  # never waits for a 2nd GPU
    options, threads = replica_resources(2, gpus=0, cpus=2, cores=2)
    assert threads == 1 and options == {"num_cpus": 1.0, "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1"}}}
    assert replica_resources(1, gpus=0, cpus=2, cores=2)[1] == 2
