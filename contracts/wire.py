"""JSON bodies as pydantic models: one definition validates a request and documents it.

Each HTTP service of ours receives JSON bodies and describes them in an OpenAPI 3.0
document.  Written twice (a hand validator and a hand schema), the two drifted; here a
body is a ``Wire`` model, and both sides come from it:

- ``parse(Model, raw, context)`` validates strictly (JSON types as they are: ``"2"`` is
  not an integer, ``"yes"`` not a boolean) and raises ``Invalid(field, message)`` naming
  the first field at fault as a dotted path (``envVars.A``, ``limits.cpu``; ``body`` for
  the body itself), which a service answers with a 400 ``{"error": "field: message"}``.
  A validator that knows better than its position which field is wrong raises
  ``Invalid`` itself; its field is appended to where it was raised.
- ``openapi_schemas(*models)`` gives the models' JSON Schemas in the OpenAPI 3.0 dialect
  (``nullable`` for ``null``, ``example`` for ``examples``, no ``const``, no ``$ref``
  siblings), to go under ``components/schemas``.

Go's encoder writes ``null`` for a nil map, slice or pointer, so on every ``Wire`` model
``null`` means absent for an optional field, and the document says so (``nullable``).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import pydantic
from pydantic import (
    BaseModel,
    ConfigDict,
    TypeAdapter,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic.json_schema import models_json_schema

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
REF = "#/components/schemas/{model}"
_NULL = {"type": "null"}
_META = ("description", "default", "examples", "title")
_JSON_TYPE = {str: "string", int: "integer", float: "number", bool: "boolean",
              type(None): "null", dict: "object", list: "array"}
# pydantic's wording where it speaks Python to a JSON client
_SAY = {"model_type": "must be a JSON object", "dict_type": "must be a JSON object",
        "model_attributes_type": "must be a JSON object", "list_type": "must be a JSON array",
        "extra_forbidden": "unknown field"}


class Invalid(ValueError):
    """A body the service refuses (400); ``field`` is the JSON field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


def _optional_may_be_null(schema: dict[str, Any]) -> None:
    """In the schema: an optional property also takes ``null`` (``Wire._null_is_absent``)."""
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        if name in required or _NULL in prop.get("anyOf", ()):
            continue
        meta = {k: prop.pop(k) for k in _META if k in prop}
        schema["properties"][name] = {"anyOf": [prop, dict(_NULL)], **meta}


@functools.cache
def _optional_keys(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(key for name, f in model.model_fields.items() if not f.is_required()
                     for key in (name, f.alias) if key)


class Wire(BaseModel):
    """A JSON body: strict types, upstream field names as aliases, null as absent."""

    model_config = ConfigDict(strict=True, frozen=True, validate_by_name=True,
                              validate_by_alias=True, serialize_by_alias=True,
                              json_schema_extra=_optional_may_be_null)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if not isinstance(data, dict) or None not in data.values():
            return data  # not a dict: pydantic names it ("must be a JSON object")
        optional = _optional_keys(cls)
        return {k: v for k, v in data.items() if v is not None or k not in optional}

    def to_json(self) -> dict[str, Any]:
        """The body as upstream spells it (aliases), JSON types only."""
        return self.model_dump(mode="json", by_alias=True)


class Error(Wire):
    """A refusal: what is wrong, after the JSON field at fault where one is."""

    error: str


def explained(what: str, ok: Callable[[str], bool] = lambda _: True) -> WrapValidator:
    """Put beside a string's constraints (pattern, length): a string that breaks them, or
    ``ok``, is refused as "'<value>' is not <what>" instead of naming the regex; a value of
    another type keeps pydantic's message."""
    def wrap(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            out = handler(value)
        except pydantic.ValidationError:
            if not isinstance(value, str):
                raise
            out = None
        if out is None or not ok(out):
            raise Invalid("", f"{value!r} is not {what}")
        return out
    return WrapValidator(wrap)


def _message(err: Any) -> tuple[list[str], str]:
    where = [str(p) for p in err["loc"]]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, Invalid):
        return where + ([cause.field] if cause.field else []), cause.message
    if err["type"] in ("value_error", "assertion_error") and cause is not None:
        return where, str(cause)
    if err["type"] == "missing":
        return where, "required"
    msg = _SAY.get(err["type"]) or err["msg"][:1].lower() + err["msg"][1:]
    if err["type"].endswith("_type"):
        got = type(err["input"])
        msg += f", got {_JSON_TYPE.get(got, got.__name__)}"
    return where, msg


def invalid(e: pydantic.ValidationError, field: str = "") -> Invalid:
    """The first error pydantic found, as ``Invalid`` naming its field (``field`` first)."""
    where, message = _message(e.errors(include_url=False)[0])
    return Invalid(".".join([field] * bool(field) + where) or "body", message)


def parse(model: type[M], raw: Any, context: dict[str, Any] | None = None) -> M:
    """``raw`` (parsed JSON) as ``model``, or ``Invalid`` naming the field at fault."""
    try:
        return model.model_validate(raw, context=context)
    except pydantic.ValidationError as e:
        raise invalid(e) from None


def check(adapter: TypeAdapter[T], value: Any, field: str) -> T:
    """One value (a query parameter, say) against a type the models use."""
    try:
        return adapter.validate_python(value, strict=True)
    except pydantic.ValidationError as e:
        raise invalid(e, field) from None


def _nullable(out: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, {type: null}]`` (JSON Schema) as ``X`` + ``nullable`` (OpenAPI 3.0)."""
    rest = [s for s in out.pop("anyOf") if s != _NULL]
    base = rest[0] if len(rest) == 1 else {"anyOf": rest}
    if "$ref" in base:
        base = {"allOf": [base]}
    merged = {**base, **out, "nullable": True}
    if "enum" in merged and None not in merged["enum"]:
        merged["enum"] = [*merged["enum"], None]
    return merged


def openapi30(schema: Any) -> Any:
    """A pydantic JSON Schema (2020-12) in the OpenAPI 3.0 dialect; titles dropped (they
    only repeat the names)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for k, v in schema.items():
        if k == "title":
            continue
        if k in ("properties", "$defs"):
            out[k] = {name: openapi30(s) for name, s in v.items()}
        elif k in ("items", "additionalProperties", "not"):
            out[k] = openapi30(v)
        elif k in ("anyOf", "oneOf", "allOf"):
            out[k] = [openapi30(s) for s in v]
        elif k == "const":
            out["enum"] = [v]
        elif k == "examples":
            out["example"] = v[0]
        elif k in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(v, bool):
            out["minimum" if k == "exclusiveMinimum" else "maximum"] = v
            out[k] = True
        else:
            out[k] = v
    if _NULL in out.get("anyOf", ()):
        out = _nullable(out)
    if "$ref" in out and len(out) > 1:
        out = {"allOf": [{"$ref": out.pop("$ref")}], **out}
    return out


def openapi_schemas(*models: type[BaseModel]) -> dict[str, Any]:
    """``components/schemas`` for these models and every model they hold, by class name."""
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    return {name: openapi30(s) for name, s in top.get("$defs", {}).items()}
