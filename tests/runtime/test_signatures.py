"""The worker's description of a function as JSON Schema (runtime/signatures.py), in process.
Expected schemas are written out from the JSON Schema meaning of each Python hint."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from types import SimpleNamespace
from typing import Annotated, Any, Literal, NamedTuple, Optional

import pytest
from openapi_spec_validator import validate

from modelhost.db.repo import Model, Version
from modelhost.operations import model_docs
from modelhost.runtime.signatures import describe


@dataclasses.dataclass
class Node:
    value: int
    children: list[Node] = dataclasses.field(default_factory=list)


class Colour(enum.Enum):
    RED = "red"
    WHITE = "white"


class Pair(NamedTuple):
    left: int
    right: str


_NOT_JSON = object()


def _parameter(function: Any, name: str) -> dict[str, Any]:
    return next(p for p in describe(function)["parameters"] if p["name"] == name)


def test_an_unresolvable_hint_is_any_json_and_the_others_keep_their_types() -> None:
    def predict(x: NotDefinedAnywhere, y: int) -> float:  # type: ignore[name-defined]  # noqa: F821
        return 0.0

    described = describe(predict)
    assert _parameter(predict, "x")["schema"] == {}
    assert _parameter(predict, "y")["schema"] == {"type": "integer"}
    assert described["returns"] == {"type": "number"}


@pytest.mark.parametrize(
    ("hint", "schema"),
    [
        (Literal["a", 1], {"enum": ["a", 1]}),
        (Colour, {"enum": ["red", "white"]}),
        (
            tuple[int, str],
            {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "string"}],
                "minItems": 2,
                "maxItems": 2,
            },
        ),
        (tuple[float, ...], {"type": "array", "items": {"type": "number"}}),
        (set[str], {"type": "array", "items": {"type": "string"}, "uniqueItems": True}),
        (Optional[bool], {"anyOf": [{"type": "boolean"}, {"type": "null"}]}),  # noqa: UP045
        (Annotated[int, "units"], {"type": "integer"}),
        (int | Any, {}),
        (
            Pair,
            {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "string"}],
                "maxItems": 2,
            },
        ),
        (object, {}),
    ],
)
def test_each_kind_of_hint_has_its_schema(hint: Any, schema: dict[str, Any]) -> None:
    def predict(value):  # type: ignore[no-untyped-def]
        return value

    predict.__annotations__ = {"value": hint}
    assert _parameter(predict, "value")["schema"] == schema


def test_a_dataclass_that_refers_to_itself_is_one_named_schema() -> None:
    def predict(tree: Node) -> int:
        return 0

    described = describe(predict)
    assert _parameter(predict, "tree")["schema"] == {"$ref": "#/$defs/Node"}
    node = described["$defs"]["Node"]
    assert node["required"] == ["value"]
    assert node["properties"]["children"] == {"type": "array", "items": {"$ref": "#/$defs/Node"}}


def test_defaults_that_are_not_json_are_left_out_and_kinds_are_kept() -> None:
    def predict(a, /, b=_NOT_JSON, *rest, c: float = 1.5, **options):  # type: ignore[no-untyped-def]
        return a

    described = describe(predict)
    assert [(p["name"], p["kind"]) for p in described["parameters"]] == [
        ("a", "positional_only"),
        ("b", "positional_or_keyword"),
        ("rest", "var_positional"),
        ("c", "keyword_only"),
        ("options", "var_keyword"),
    ]
    assert _parameter(predict, "b") == {
        "name": "b",
        "kind": "positional_or_keyword",
        "required": False,
        "schema": {},
    }
    assert _parameter(predict, "c")["schema"] == {"type": "number", "default": 1.5}


def test_a_callable_without_a_signature_takes_anything() -> None:
    kinds = {p["kind"] for p in describe(dict.fromkeys)["parameters"]}
    assert kinds <= {"positional_only", "positional_or_keyword", "var_positional", "var_keyword"}
    assert describe(type.__call__)["returns"] == {}


def test_a_version_built_before_descriptions_were_kept_gets_a_valid_untyped_document() -> None:
    parameters = model_docs._from_signature("predict(x, y=2, *args, z, **kw)")
    assert [(p["name"], p["kind"]) for p in parameters] == [
        ("x", "positional_or_keyword"),
        ("y", "positional_or_keyword"),
        ("args", "var_positional"),
        ("z", "keyword_only"),
        ("kw", "var_keyword"),
    ]
    assert [p.get("required") for p in parameters] == [True, False, None, True, None]
    r_formals = model_docs._from_signature("score(features, weight, ...)")
    assert [p["kind"] for p in r_formals][-2:] == ["var_positional", "var_keyword"]


def test_a_document_from_a_rich_description_is_valid_openapi() -> None:
    def predict(tree: Node, colour: Colour = Colour.RED, *, pairs: list[Pair]) -> dict[str, Node]:
        return {}

    now = dt.datetime.now(dt.timezone.utc)
    model = Model("m1", "trees", "", "u1", 1, None, now, now, invocation_mode="public")
    version = Version(
        **{f.name: None for f in dataclasses.fields(Version) if f.default is dataclasses.MISSING},
    )
    version = dataclasses.replace(
        version,
        number=3,
        file="trees.py",
        function="predict",
        signature_schema=json.dumps(describe(predict)),
        example=json.dumps({"data": {"tree": {"value": 1}, "pairs": [[1, "a"]]}}),
    )
    services = SimpleNamespace(settings=SimpleNamespace(url="http://127.0.0.1:1"))
    document = model_docs.document(services, model, version, "versions/3")  # type: ignore[arg-type]
    validate(document)
    schemas = document["components"]["schemas"]
    assert schemas["Node"]["properties"]["children"]["items"] == {
        "$ref": "#/components/schemas/Node"
    }
    assert "security" not in document["components"]
