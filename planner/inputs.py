"""Reading planner input files: JSON or YAML decoding, and field readers that reject a bad
value with a :class:`PlanInputError` naming the file and the field (spec.py builds its
dataclasses with them)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml


class PlanInputError(Exception):
    """A planner input is wrong; ``str(err)`` is ``"<source>: <field>: <message>"``."""

    def __init__(self, source: str, field_path: str, message: str) -> None:
        self.source = source
        self.field_path = field_path
        self.message = message
        where = f"{source}: {field_path}" if field_path else source
        super().__init__(f"{where}: {message}")


def number(
    src: str, path: str, value: Any, *, minimum: float = 0.0, strict: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PlanInputError(src, path, f"must be a number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        op = ">" if strict else ">="
        raise PlanInputError(src, path, f"must be {op} {minimum:g}, got {value!r}")
    return float(value)


def opt_number(src: str, path: str, raw: dict[str, Any], key: str, **kw: Any) -> float | None:
    if raw.get(key) is None:
        return None
    return number(src, f"{path}.{key}", raw[key], **kw)


def mapping(src: str, path: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PlanInputError(src, path, f"must be a mapping, got {type(value).__name__}")
    return value


def list_of(src: str, path: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise PlanInputError(src, path, f"must be a list, got {type(value).__name__}")
    return value


def ident(src: str, path: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise PlanInputError(src, path, f"must be a non-empty string, got {value!r}")
    return str(value)


def read_structured(path: Path) -> Any:
    """Decode a JSON or YAML file; decoding errors become :class:`PlanInputError`."""
    src = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanInputError(str(path), "", "no such file") from None
    except OSError as exc:
        raise PlanInputError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise PlanInputError(
            src, f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlanInputError(src, where, f"invalid YAML: {problem}") from None
