"""What a model name may be: checked by the server, and by the client before it packs a project."""

from __future__ import annotations

import re

from modelhost import errors

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
#: A model's id: a name that looks like one could be mistaken for another model's.
ID_LIKE = re.compile(r"^[0-9a-f]{24}$")


def invalid_model_name(name: str) -> errors.BadRequest:
    if ID_LIKE.match(name):
        return errors.BadRequest(
            f"'{name}' cannot be a new model's name: 24 hexadecimal characters are how model "
            "ids look, so it could be mistaken for another model's id. Choose another name, "
            "such as wine-quality."
        )
    return errors.BadRequest(
        f"'{name}' is not a valid model name: use 1 to 63 lowercase letters, digits, '-', "
        "'_' or '.', starting with a letter or digit (for example wine-quality)."
    )


def check_model_reference(name: str) -> str:
    """A name or id that can name a model (new or existing) in a URL; BadRequest if not."""
    if not NAME_PATTERN.match(name):
        raise invalid_model_name(name)
    return name
