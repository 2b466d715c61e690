"""A Ray instance's start, before any Ray node is asked: what fails it at once. The actor is a
stand-in (the real cluster's tests are in ``tests/ray``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from modelhost.backends import ray as ray_backend
from modelhost.backends.base import InstanceSpec, InstanceState
from modelhost.backends.ray import RayInstance

pytestmark = pytest.mark.anyio


class Actor:
    """Records what the instance asks of its actor; every method is ``name.remote(...)``."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __getattr__(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(remote=lambda *args, **kwargs: self.asked.append(name))


async def test_a_variable_no_environment_can_hold_fails_the_instance_before_it_is_placed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ray.kill would start a local Ray instance in this process (its APIs start one when
    # none is connected): record what is let go instead.
    let_go: list[object] = []
    monkeypatch.setattr(ray_backend.ray, "kill", lambda actor, **_: let_go.append(actor))
    # One stored before such values were refused (docs/api.md: values may hold no NUL).
    spec = InstanceSpec(
        instance_id="i-1",
        model_id="m-1",
        version_id="v-1",
        version_number=1,
        workdir=tmp_path,
        file="calc.py",
        function="add",
        interpreter="python3",
        log_path=tmp_path / "logs" / "v1-i-1.log",
        env={"MODELHOST_MODEL_NAME": "calc", "TOKEN": "a\0b"},
    )
    actor = Actor()
    changes: list[int] = []
    instance = RayInstance(spec, lambda: changes.append(1), actor)
    await instance.launch(30.0, b"bundle", {}, ("1 CPU", {"CPU": 1.0}))
    assert instance.state is InstanceState.FAILED
    assert instance.failure is not None
    assert "The environment variable TOKEN cannot be set" in instance.failure
    assert "modelhost env unset calc TOKEN" in instance.failure
    assert actor.asked == ["kill"]  # never asked to start anything
    assert let_go == [actor]  # never placed: nothing else would release it
    assert changes
    log = spec.log_path.read_text()
    assert "TOKEN cannot be set" in log
    assert "Traceback" not in log
