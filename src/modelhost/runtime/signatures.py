"""A function's signature as JSON Schema: its parameters and its return value, from type hints.

The worker describes the user's function with :func:`describe` when it has imported the
script (the import check of a new version), and sends the description with READY; the server
stores it with the version and builds the model's OpenAPI document from it. Like the rest of
``runtime/`` this module uses the standard library only (the worker loads it by path in any
environment), and it never raises: a hint it does not understand, or cannot even resolve,
becomes ``{}`` (any JSON).

Understood: ``int``, ``float``, ``str``, ``bool``, ``None``, ``list``/``set``/``tuple``/
``dict`` and their ``typing`` forms, ``Optional``/``Union``/``X | Y``, ``Literal``, ``Enum``s,
``datetime``/``date``/``Decimal``/``UUID``, dataclasses and ``TypedDict``s (as objects in
``$defs``), and Pydantic models (through their own ``model_json_schema()``, duck-typed, so
Pydantic is used only when the version's environment has it).

The description (``FORMAT`` 1)::

    {"format": 1,
     "parameters": [{"name": "x", "kind": "positional_or_keyword", "required": true,
                     "schema": {"type": "integer"}}, ...],
     "returns": {...},
     "$defs": {"Row": {...}}}          # referred to as {"$ref": "#/$defs/Row"}

``kind`` is ``positional_only``, ``positional_or_keyword``, ``var_positional`` (``*args``),
``keyword_only`` or ``var_keyword`` (``**kwargs``).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import inspect
import json
import math
import re
import types
import typing
import uuid
from collections import abc
from typing import Any

FORMAT = 1

KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional_only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional_or_keyword",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword_only",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}

_SIMPLE: dict[Any, dict[str, Any]] = {
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": "number"},
    str: {"type": "string"},
    type(None): {"type": "null"},
    datetime.datetime: {"type": "string", "format": "date-time"},
    datetime.date: {"type": "string", "format": "date"},
    datetime.time: {"type": "string", "format": "time"},
    decimal.Decimal: {"type": "number"},
    uuid.UUID: {"type": "string", "format": "uuid"},
}
_SEQUENCES = (list, set, frozenset, abc.Sequence, abc.MutableSequence, abc.Set, abc.Iterable)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)
#: component names allowed by OpenAPI
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
#: nesting past this is described as any JSON (a guard; real hints are never this deep)
_MAX_DEPTH = 32


def describe(function: Any) -> dict[str, Any]:
    """The description of ``function``'s parameters and return value; never raises."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some builtins and C callables have none
        return {
            "format": FORMAT,
            "parameters": [
                {"name": "args", "kind": "var_positional", "schema": {}},
                {"name": "kwargs", "kind": "var_keyword", "schema": {}},
            ],
            "returns": {},
            "$defs": {},
        }
    hints = _hints(function)
    schemas = _Schemas()
    parameters = []
    for parameter in signature.parameters.values():
        hint = hints.get(parameter.name, parameter.annotation)
        schema = schemas.of(hint)
        entry: dict[str, Any] = {"name": parameter.name, "kind": KINDS[parameter.kind]}
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            entry["required"] = parameter.default is parameter.empty
            default = _json_value(parameter.default)
            if default is not _NOT_JSON:
                schema = {**schema, "default": default}
        entry["schema"] = schema
        parameters.append(entry)
    returns = schemas.of(hints.get("return", signature.return_annotation))
    return {"format": FORMAT, "parameters": parameters, "returns": returns, "$defs": schemas.defs}


def _hints(function: Any) -> dict[str, Any]:
    """Resolved type hints; the ones that cannot be resolved are left out (they become {})."""
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: S110 - one name that cannot be resolved: take the rest as they are
        pass
    annotations = getattr(function, "__annotations__", None) or {}
    namespace = getattr(function, "__globals__", None)
    resolved = {}
    for name, hint in dict(annotations).items():
        try:  # one at a time: the ones that resolve keep their types
            holder = types.SimpleNamespace(__annotations__={name: hint})
            resolved[name] = typing.get_type_hints(holder, globalns=namespace)[name]
        except Exception:
            if not isinstance(hint, str):
                resolved[name] = hint
    return resolved


_NOT_JSON = object()


def _json_value(value: Any) -> Any:
    """``value`` if it is plain JSON (a default worth showing), else ``_NOT_JSON``."""
    if value is inspect.Parameter.empty:
        return _NOT_JSON
    if isinstance(value, float) and not math.isfinite(value):
        return _NOT_JSON
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return _NOT_JSON
    if len(text) > 1000:
        return _NOT_JSON
    return json.loads(text)


class _Schemas:
    """Turns hints into schemas, collecting named ones (dataclasses, ...) in ``defs``."""

    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}
        self._named: dict[Any, str] = {}

    def of(self, hint: Any, depth: int = 0) -> dict[str, Any]:
        try:
            return self._of(hint, depth)
        except Exception:  # a hint we cannot read is any JSON, never an error
            return {}

    def _of(self, hint: Any, depth: int) -> dict[str, Any]:
        if depth > _MAX_DEPTH or hint is inspect.Parameter.empty or hint is Any:
            return {}
        if hint is None:
            return {"type": "null"}
        if isinstance(hint, (str, typing.ForwardRef)):
            return {}  # not resolved: any JSON
        if hint in _SIMPLE:
            return dict(_SIMPLE[hint])
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin is typing.Annotated:
            return self._of(args[0], depth + 1)
        if origin is typing.Literal:
            values = [_json_value(a) for a in args]
            return {"enum": [v for v in values if v is not _NOT_JSON]}
        if origin is typing.Union or _is_union_type(origin):
            choices: list[dict[str, Any]] = []
            for arg in args:
                schema = self._of(arg, depth + 1)
                if schema == {}:
                    return {}
                if schema not in choices:
                    choices.append(schema)
            return choices[0] if len(choices) == 1 else {"anyOf": choices}
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return {"type": "array", "items": self._of(args[0], depth + 1)}
            if args == ((),):
                return {"type": "array", "maxItems": 0}
            if args:
                return {
                    "type": "array",
                    "prefixItems": [self._of(a, depth + 1) for a in args],
                    "minItems": len(args),
                    "maxItems": len(args),
                }
            return {"type": "array"}
        if origin in _SEQUENCES:
            schema = {"type": "array"}
            if args:
                schema["items"] = self._of(args[0], depth + 1)
            if origin in (set, frozenset, abc.Set):
                schema["uniqueItems"] = True
            return schema
        if origin in _MAPPINGS:
            schema = {"type": "object"}
            if len(args) == 2:
                schema["additionalProperties"] = self._of(args[1], depth + 1)
            return schema
        if hint is tuple or hint in _SEQUENCES:
            return {"type": "array"}
        if hint in _MAPPINGS:
            return {"type": "object"}
        if isinstance(hint, type):
            return self._class(hint, depth)
        return {}

    def _class(self, cls: type, depth: int) -> dict[str, Any]:
        if issubclass(cls, enum.Enum):
            values = [_json_value(member) for member in cls]
            return {"enum": [v for v in values if v is not _NOT_JSON]}
        if issubclass(cls, bool):
            return {"type": "boolean"}
        if issubclass(cls, int):
            return {"type": "integer"}
        if issubclass(cls, float):
            return {"type": "number"}
        if issubclass(cls, str):
            return {"type": "string"}
        if cls in self._named:
            return {"$ref": f"#/$defs/{self._named[cls]}"}
        if callable(getattr(cls, "model_json_schema", None)):
            return self._pydantic(cls)
        if dataclasses.is_dataclass(cls) or _is_typeddict(cls):
            return self._object(cls, depth)
        if issubclass(cls, tuple) and hasattr(cls, "_fields"):  # a NamedTuple: sent as an array
            hints = _class_hints(cls)
            items = [self._of(hints.get(name, Any), depth + 1) for name in cls._fields]
            return {"type": "array", "prefixItems": items, "maxItems": len(items)}
        return {}

    def _name(self, cls: type) -> str:
        base = _UNSAFE.sub("_", getattr(cls, "__qualname__", cls.__name__)) or "Object"
        name, n = base, 2
        while name in self.defs:
            name, n = f"{base}_{n}", n + 1
        self._named[cls] = name
        self.defs[name] = {}  # taken now, so a class that refers to itself finds it
        return name

    def _object(self, cls: type, depth: int) -> dict[str, Any]:
        name = self._name(cls)
        hints = _class_hints(cls)
        properties: dict[str, Any] = {}
        required: list[str] = []
        if dataclasses.is_dataclass(cls):
            for field in dataclasses.fields(cls):
                schema = self._of(hints.get(field.name, field.type), depth + 1)
                default = _json_value(
                    field.default
                    if field.default is not dataclasses.MISSING
                    else inspect.Parameter.empty
                )
                if default is not _NOT_JSON:
                    schema = {**schema, "default": default}
                properties[field.name] = schema
                if (
                    field.default is dataclasses.MISSING
                    and field.default_factory is dataclasses.MISSING
                ):
                    required.append(field.name)
        else:
            keys = getattr(cls, "__required_keys__", frozenset(hints))
            for key, hint in hints.items():
                properties[key] = self._of(hint, depth + 1)
                if key in keys:
                    required.append(key)
        described: dict[str, Any] = {"type": "object", "title": cls.__name__}
        described["properties"] = properties
        if required:
            described["required"] = required
        doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")  # its own, not dict's
        if doc and not doc.startswith(f"{cls.__name__}("):  # not a dataclass's generated one
            described["description"] = doc
        self.defs[name] = described
        return {"$ref": f"#/$defs/{name}"}

    def _pydantic(self, cls: Any) -> dict[str, Any]:
        """A Pydantic model's own schema, its definitions merged into ours."""
        schema: dict[str, Any] = json.loads(  # plain JSON only
            json.dumps(cls.model_json_schema(ref_template="#/$defs/{model}"))
        )
        for key, value in (schema.pop("$defs", None) or {}).items():
            self.defs.setdefault(key, value)
        if set(schema) == {"$ref"}:  # a model that refers to itself is all in its $defs
            return schema
        name = self._name(cls)
        self.defs[name] = schema
        return {"$ref": f"#/$defs/{name}"}


def _class_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:
        return {
            k: v for k, v in getattr(cls, "__annotations__", {}).items() if not isinstance(v, str)
        }


def _is_typeddict(cls: type) -> bool:
    is_typeddict = getattr(typing, "is_typeddict", None)
    if is_typeddict is not None:
        return bool(is_typeddict(cls))
    return isinstance(cls, type) and issubclass(cls, dict) and hasattr(cls, "__total__")


def _is_union_type(origin: Any) -> bool:
    union_type = getattr(types, "UnionType", None)  # X | Y, Python 3.10+
    return union_type is not None and origin is union_type
