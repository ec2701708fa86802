"""JSON Schema (the subset OpenAPI 3.1 uses) for the console API: builders for route declarations, and a
small validator that checks request bodies and query parameters against them (the tests also check every
response against its route's declared schema, so the published document cannot drift from the code).

Supported keywords: type (one or a list, "null" included), properties, required, additionalProperties
(false), items, enum, minLength, maxLength, minimum, maximum, pattern, format (documentation only),
description, examples.
"""

from __future__ import annotations

import re
from typing import Any

Schema = dict[str, Any]


def string(description: str = "", *, min_length: int | None = None, max_length: int | None = None,
           enum: list[str] | None = None, fmt: str | None = None, nullable: bool = False,
           pattern: str | None = None) -> Schema:
    s: Schema = {"type": ["string", "null"] if nullable else "string"}
    if description:
        s["description"] = description
    if min_length is not None:
        s["minLength"] = min_length
    if max_length is not None:
        s["maxLength"] = max_length
    if enum is not None:
        s["enum"] = list(enum) + ([None] if nullable else [])
    if fmt:
        s["format"] = fmt
    if pattern:
        s["pattern"] = pattern
    return s


def integer(description: str = "", *, minimum: int | None = None, maximum: int | None = None,
            nullable: bool = False) -> Schema:
    s: Schema = {"type": ["integer", "null"] if nullable else "integer"}
    if description:
        s["description"] = description
    if minimum is not None:
        s["minimum"] = minimum
    if maximum is not None:
        s["maximum"] = maximum
    return s


def number(description: str = "") -> Schema:
    return {"type": "number", **({"description": description} if description else {})}


def boolean(description: str = "", *, nullable: bool = False) -> Schema:
    s: Schema = {"type": ["boolean", "null"] if nullable else "boolean"}
    if description:
        s["description"] = description
    return s


def array(items: Schema, description: str = "") -> Schema:
    return {"type": "array", "items": items, **({"description": description} if description else {})}


def obj(properties: dict[str, Schema], *, required: list[str] | None = None, description: str = "",
        nullable: bool = False, closed: bool = True) -> Schema:
    """An object; every property is required unless `required` names the ones that are."""
    s: Schema = {"type": ["object", "null"] if nullable else "object", "properties": properties,
                 "required": list(properties) if required is None else required}
    if closed:
        s["additionalProperties"] = False
    if description:
        s["description"] = description
    return s


def nullable(schema: Schema) -> Schema:
    """The same schema, also allowing null."""
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    return {**schema, "type": [*kinds, "null"] if "null" not in kinds else kinds}


def timestamp(description: str = "", *, nullable: bool = False) -> Schema:
    return string(description, fmt="date-time", nullable=nullable)


def day(description: str = "") -> Schema:
    return string(description, fmt="date")


_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
                          "object": dict, "array": list, "null": type(None)}


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[kind])


def validate(value: Any, schema: Schema, where: str = "body") -> list[str]:
    """Problems with `value` against `schema`, each naming where (e.g. "body.welcome_text"); [] if none."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, k) for k in kinds):
            return [f"{where}: expected {' or '.join(kinds)}"]
    if value is None:
        return []
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: must be one of {', '.join(str(v) for v in schema['enum'] if v is not None)}"]
    problems: list[str] = []
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            problems.append(f"{where}: at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{where}: at most {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{where}: does not match {schema['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{where}: at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{where}: at most {schema['maximum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                problems.append(f"{where}.{key}: required")
        for key, item in value.items():
            if key in props:
                problems += validate(item, props[key], f"{where}.{key}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{where}.{key}: unknown field")
    if isinstance(value, list) and "items" in schema:
        for n, item in enumerate(value):
            problems += validate(item, schema["items"], f"{where}[{n}]")
    return problems


def coerce_param(raw: str, schema: Schema) -> Any:
    """A query or path parameter (text) as the type its schema declares; raises ValueError."""
    kinds = schema.get("type", "string")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if "integer" in kinds:
        return int(raw)
    if "boolean" in kinds:
        lowered = raw.lower()
        if lowered not in ("true", "false", "1", "0"):
            raise ValueError("expected true or false")
        return lowered in ("true", "1")
    return raw
