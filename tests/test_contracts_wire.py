"""contracts/wire.py: one pydantic model validates a JSON body and documents it.

The services answer a refused body with 400 ``{"error": "<field>: <what>"}``, so the
field path and the wording are the contract; the OpenAPI 3.0 dialect is what
schemathesis and clients read, so each conversion is pinned here on a small model."""
from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import Field

from contracts.wire import Invalid, Wire, explained, openapi30, openapi_schemas, parse

Slug = Annotated[str, Field(max_length=8, pattern=r"^[a-z]+$"), explained("a slug")]


class Inner(Wire, extra="forbid"):
    """inner"""

    n: int = Field(0, ge=0)


class Outer(Wire):
    """outer"""

    name: Slug
    kind: Literal["a", "b"] = "a"
    env_vars: dict[str, str] = Field(default_factory=dict, alias="envVars")
    inner: Inner | None = None
    tags: list[str] = Field(default_factory=list, examples=[["x"]])


@pytest.mark.parametrize("body, field, message", [
    ([], "body", "must be a JSON object, got array"),
    ({}, "name", "required"),
    ({"name": None}, "name", "input should be a valid string, got null"),
    ({"name": "Nope!"}, "name", "'Nope!' is not a slug"),
    ({"name": "x" * 9}, "name", "'xxxxxxxxx' is not a slug"),
    ({"name": 3}, "name", "input should be a valid string, got integer"),
    ({"name": "ok", "kind": "c"}, "kind", "input should be 'a' or 'b'"),
    ({"name": "ok", "envVars": {"A": 1}}, "envVars.A",
     "input should be a valid string, got integer"),
    ({"name": "ok", "inner": {"n": -1}}, "inner.n",
     "input should be greater than or equal to 0"),
    ({"name": "ok", "inner": {"n": "1"}}, "inner.n", "input should be a valid integer, got string"),
    ({"name": "ok", "inner": {"m": 1}}, "inner.m", "unknown field"),
    ({"name": "ok", "inner": []}, "inner", "must be a JSON object, got array"),
])
def test_a_refused_body_names_the_field(body, field: str, message: str) -> None:
    with pytest.raises(Invalid) as e:
        parse(Outer, body)
    assert (e.value.field, e.value.message) == (field, message)
    assert str(e.value) == f"{field}: {message}"


def test_null_is_absent_for_optional_fields_and_aliases_are_the_wire_names() -> None:
    got = parse(Outer, {"name": "ok", "kind": None, "envVars": None, "inner": None,
                        "tags": None, "unknown": 1})
    assert (got.kind, got.env_vars, got.inner, got.tags) == ("a", {}, None, [])
    assert got.to_json() == {"name": "ok", "kind": "a", "envVars": {},
                             "inner": None, "tags": []}


def test_an_invalid_raised_in_a_validator_is_appended_to_its_position() -> None:
    from pydantic import field_validator

    class M(Wire):
        labels: dict[str, str] = Field(default_factory=dict)

        @field_validator("labels")
        @classmethod
        def _min(cls, v: dict[str, str]) -> dict[str, str]:
            if "min" in v:
                raise Invalid("min", "must be an integer")
            return v

    with pytest.raises(Invalid) as e:
        parse(M, {"labels": {"min": "x"}})
    assert e.value.field == "labels.min"


def test_schemas_are_openapi_30() -> None:
    s = openapi_schemas(Outer)
    assert set(s) == {"Outer", "Inner"}
    outer = s["Outer"]["properties"]
    assert s["Outer"]["required"] == ["name"] and s["Outer"]["description"] == "outer"
    assert outer["name"] == {"maxLength": 8, "pattern": "^[a-z]+$", "type": "string"}
    assert outer["kind"]["enum"] == ["a", "b", None] and outer["kind"]["nullable"] is True
    assert outer["envVars"]["nullable"] is True  # null is absent: the document says so
    assert outer["inner"] == {"allOf": [{"$ref": "#/components/schemas/Inner"}],
                              "default": None, "nullable": True}
    assert outer["tags"]["example"] == ["x"] and "examples" not in outer["tags"]
    assert s["Inner"]["additionalProperties"] is False
    assert "title" not in str(s)


@pytest.mark.parametrize("schema, expected", [
    ({"const": 3}, {"enum": [3]}),
    ({"type": "number", "exclusiveMinimum": 0}, {"type": "number", "minimum": 0,
                                                 "exclusiveMinimum": True}),
    ({"$ref": "#/x", "description": "d"}, {"allOf": [{"$ref": "#/x"}], "description": "d"}),
    ({"anyOf": [{"type": "integer"}, {"type": "null"}]}, {"type": "integer", "nullable": True}),
    ({"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]},
     {"anyOf": [{"type": "integer"}, {"type": "string"}], "nullable": True}),
    ({"type": "object", "properties": {"title": {"type": "string", "title": "Title"}}},
     {"type": "object", "properties": {"title": {"type": "string"}}}),
])
def test_openapi30_conversions(schema, expected) -> None:
    assert openapi30(schema) == expected
