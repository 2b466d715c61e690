"""A run starts in the same environment as an instance (:mod:`modelhost.serving.children`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelhost.app import create_app
from modelhost.jobs.runner import Jobs
from modelhost.operations import Services
from modelhost.operations import runs as run_ops
from modelhost.serving.children import THREAD_CAPS
from modelhost.settings import load_settings
from tests.fakes import FakeBackend


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    settings = load_settings({"home": str(tmp_path / "home")}, environ={})
    app = create_app(settings, backend=FakeBackend())
    yield app.services
    app.services.repo.engine.dispose()


def _run(services: Services, model_id: str | None) -> tuple[str, dict[str, str], bool]:
    owner = services.repo.create_user("alice", is_admin=True)
    run = services.repo.create_run(
        owner_id=owner.id,
        model_id=model_id,
        file=None,
        function=None,
        command='["python", "train.py"]',
        bundle_sha256="0" * 64,
        timeout_seconds=60.0,
    )
    env, network = Jobs(services)._environment(run, "/envs/run/bin")
    return run.id, env, network


def test_a_runs_environment_caps_blas_and_openmp_threads_like_an_instances(
    services: Services,
) -> None:
    _, env, _ = _run(services, None)
    assert {name: env[name] for name in THREAD_CAPS} == dict.fromkeys(THREAD_CAPS, "1")


def test_a_runs_environment_has_its_home_its_path_first_and_its_models_variables(
    services: Services,
) -> None:
    owner = services.repo.create_user("bob", is_admin=False)
    model = services.repo.create_model("wine", owner_id=owner.id, description="", instance_count=1)
    services.repo.set_env(model.id, "PLAIN", "visible", secret=False)
    services.repo.set_env(model.id, "OMP_NUM_THREADS", "4", secret=False)
    services.repo.set_env(model.id, "TOKEN", services.key.encrypt("s3cret"), secret=True)
    run_id, env, network = _run(services, model.id)
    assert env["HOME"] == str(run_ops.workdir(services, run_id))
    assert env["MODELHOST_WORKING_DIR"] == str(run_ops.workdir(services, run_id))
    assert env["PATH"].split(os.pathsep)[0] == "/envs/run/bin"
    assert (env["PLAIN"], env["TOKEN"]) == ("visible", "s3cret")
    assert env["OMP_NUM_THREADS"] == "4"  # the model's own setting wins over the cap
    assert env["MODELHOST_RUN_ID"] == run_id
    assert (env["MODELHOST_MODEL_ID"], env["MODELHOST_MODEL_NAME"]) == (model.id, "wine")
    assert network is True
