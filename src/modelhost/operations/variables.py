"""Per-model environment variables. Secret values are encrypted at rest and never returned."""

from __future__ import annotations

import re
from typing import Any

from modelhost import errors
from modelhost.db.repo import Model
from modelhost.operations import Services, iso

NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # fullmatch: "$" would let "X\n" by
RESERVED_PREFIX = "MODELHOST_"
MAX_VALUE_BYTES = 32 * 1024


def validate_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name) or len(name) > 128:
        raise errors.BadRequest(
            f"'{name}' is not a valid variable name: start with a letter, then letters, digits "
            "or '_' (for example API_URL)."
        )
    if name.upper().startswith(RESERVED_PREFIX):
        raise errors.BadRequest(
            f"Names starting with {RESERVED_PREFIX} are reserved for modelhost; pick another."
        )
    return name


def list_env(services: Services, model: Model) -> list[dict[str, Any]]:
    return [
        {
            "name": var.name,
            "value": None if var.secret else var.value,
            "secret": var.secret,
            "updated_at": iso(var.updated_at),
        }
        for var in services.repo.list_env(model.id)
    ]


def set_env(services: Services, model: Model, name: str, value: str, *, secret: bool) -> None:
    """Set a variable; running instances are replaced with zero downtime to pick it up."""
    validate_name(name)
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise errors.BadRequest(f"The value of {name} is over {MAX_VALUE_BYTES} bytes.")
    if "\0" in value:
        # the operating system ends an environment string at a NUL: no process could start
        raise errors.BadRequest(
            f"The value of {name} contains a NUL character (\\u0000), which an environment "
            "variable cannot hold; remove it, or encode the value (for example as base64)."
        )
    stored = services.key.encrypt(value) if secret else value
    services.repo.set_env(model.id, name, stored, secret=secret)
    services.wake()


def unset_env(services: Services, model: Model, name: str) -> None:
    if not services.repo.unset_env(model.id, name):
        raise errors.NotFound(f"Model '{model.name}' has no variable {name}.")
    services.wake()
