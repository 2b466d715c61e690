"""Checks of the client's own arguments, made before anything is packed or sent.

Python takes ``fork="no"`` as true (a non-empty string is) and sends ``python=3.10`` as
``3.1``; a string given as ``exclude`` is a list of one-character patterns, and one given as a
run's ``command`` a list of one-character arguments. These checks refuse
such values with a :class:`~modelhost.errors.BadRequest` that says what to pass, as the client's
other argument errors do (``Pass exactly one of data= (a dict) or parameters= (a list).``).
Numbers may be any integral or real type (a numpy integer too), never a boolean.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from modelhost import errors


def _refuse(name: str, wanted: str, value: Any) -> errors.BadRequest:
    return errors.BadRequest(f"Pass {name}= as {wanted}, not {value!r}.")


def check_bool(name: str, value: Any) -> None:
    """``True`` or ``False`` only: not ``"no"``, ``0`` or ``None``."""
    if not isinstance(value, bool):
        raise errors.BadRequest(f"Pass {name}=True or {name}=False, not {value!r}.")


def check_whole(name: str, value: Any, *, example: int, optional: bool = False) -> None:
    """A whole number (not a boolean, a float or text), or None when ``optional``."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _refuse(name, f"a whole number, such as {example}", value)


def check_number(
    name: str, value: Any, *, unit: str, example: float, optional: bool = False
) -> None:
    """A finite number of ``unit`` (not a boolean or text), or None when ``optional``."""
    if optional and value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
    ):
        raise _refuse(name, f"a number of {unit}, such as {example:g}", value)


def check_text(name: str, value: Any, *, example: str, optional: bool = False) -> None:
    """A string, or None when ``optional``."""
    if optional and value is None:
        return
    if not isinstance(value, str):
        raise _refuse(name, f"text, such as {example!r}", value)


def patterns(name: str, value: Any) -> tuple[str, ...]:
    """A list (or tuple) of glob patterns, as a tuple; a lone string is refused, not split into
    one-letter patterns."""
    if not isinstance(value, (str, bytes)) and isinstance(value, Iterable):
        found = tuple(value)
        if all(isinstance(pattern, str) for pattern in found):
            return found
    raise _refuse(name, "a list of glob patterns, such as ['*.csv']", value)


def command(name: str, value: Any) -> list[str]:
    """A command as a non-empty list (or tuple) of arguments, as a list. A lone string is
    refused, not split: the server runs the command without a shell, one argument per item
    (docs/api.md, Runs), so ``"python train.py"`` has no one right meaning."""
    if not isinstance(value, (str, bytes)) and isinstance(value, Iterable):
        found = list(value)
        if found and all(isinstance(argument, str) for argument in found):
            return found
    raise _refuse(
        name,
        "a list of arguments, such as ['python', 'train.py'] (it runs without a shell; "
        "shlex.split() splits a command line)",
        value,
    )


def check_example(name: str, value: Any) -> None:
    """What :func:`~modelhost.client._client.example_text` takes: a mapping, JSON text, a Path
    or None."""
    if value is not None and not isinstance(value, (Mapping, str, Path)):
        raise _refuse(name, "a dict ({'data': {...}}), JSON text or a Path to a JSON file", value)
