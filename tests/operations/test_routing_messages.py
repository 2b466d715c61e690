"""What deploy, rollback and stop say when the model's state leaves them nothing to do, or
something the user must do first (docs/cli.md, "Versions and routes")."""

from __future__ import annotations

import pytest

from modelhost import errors
from modelhost.operations import model_actions as actions
from tests.operations.conftest import World


def test_a_rollback_in_advanced_routing_without_a_prod_label_says_to_promote_a_version(
    world: World,
) -> None:
    world.add_version()
    world.add_version()
    world.services.repo.update_model(world.model.id, routing_mode="advanced")
    with pytest.raises(errors.Conflict) as refused:
        actions.rollback(world.services, world.owner, actions.VersionChoice("wine"))
    assert refused.value.message == (
        "'wine' is in advanced routing, where rollback moves its prod label, and has no prod "
        "label yet, so there is nothing to roll back; point it at a version with 'modelhost "
        "promote wine --version N'."
    )


def test_stopping_a_version_that_failed_to_build_is_refused_as_start_is(world: World) -> None:
    number = world.add_version(status="failed")
    with pytest.raises(errors.Conflict) as refused:
        actions.stop(world.services, world.owner, actions.VersionChoice("wine", number))
    assert refused.value.message.startswith(
        f"Version {number} of 'wine' failed to build and does not run, so there is nothing to stop;"
    )
    with pytest.raises(errors.Conflict, match="failed to build and cannot serve"):
        actions.start(world.services, world.owner, actions.VersionChoice("wine", number))


def test_a_deploy_says_the_state_of_the_model_it_moves_a_route_of(world: World) -> None:
    number = world.add_version()
    world.services.repo.update_model(world.model.id, state="stopped")
    result = actions.deploy(world.services, world.owner, actions.VersionChoice("wine", number))
    assert (result["to"], result["model_state"]) == (number, "stopped")
