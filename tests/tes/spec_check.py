"""Check TES responses against the GA4GH TES 1.1 OpenAPI spec (tests/specs/, a copy of the one in shared/).

Stricter than the spec by default, as strict clients are: an object may hold only the keys its schema names
(``additionalProperties: false`` wherever the spec lists properties and says nothing else), and no value may
be null (OpenAPI 3.0 without ``nullable``). The service-info schema lives in another GA4GH document the
spec refers to by URL; it is written out here from ga4gh-service-info 1.0.0.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SPEC = Path(__file__).resolve().parent.parent / "specs" / "ga4gh-tes-1.1.openapi.yaml"
PREFIX = "/ga4gh/tes/v1"

SERVICE_INFO = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "name", "type", "organization", "version"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "type": {
            "type": "object",
            "additionalProperties": False,
            "required": ["group", "artifact", "version"],
            "properties": {
                "group": {"type": "string"},
                "artifact": {"type": "string", "enum": ["tes"]},
                "version": {"type": "string"},
            },
        },
        "description": {"type": "string"},
        "organization": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "url"],
            "properties": {"name": {"type": "string"}, "url": {"type": "string", "format": "uri"}},
        },
        "contactUrl": {"type": "string", "format": "uri"},
        "documentationUrl": {"type": "string", "format": "uri"},
        "createdAt": {"type": "string", "format": "date-time"},
        "updatedAt": {"type": "string", "format": "date-time"},
        "environment": {"type": "string"},
        "version": {"type": "string"},
        "storage": {"type": "array", "items": {"type": "string"}},
        "tesResources_backend_parameters": {"type": "array", "items": {"type": "string"}},
    },
}

ROUTES = [
    ("GET", re.compile(rf"^{PREFIX}/service-info$"), "tesServiceInfo"),
    ("GET", re.compile(rf"^{PREFIX}/tasks$"), "tesListTasksResponse"),
    ("POST", re.compile(rf"^{PREFIX}/tasks$"), "tesCreateTaskResponse"),
    ("GET", re.compile(rf"^{PREFIX}/tasks/[^/:]+$"), "tesTask"),
    ("POST", re.compile(rf"^{PREFIX}/tasks/[^/]+:cancel$"), "tesCancelTaskResponse"),
]


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if out.get("type") == "object" and "additionalProperties" not in out and "allOf" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@cache
def components() -> dict[str, Any]:
    spec = yaml.safe_load(SPEC.read_text())
    schemas = _strict(copy.deepcopy(spec["components"]["schemas"]))
    schemas["tesServiceInfo"] = SERVICE_INFO
    # The MINIMAL view is {id, state} only, although the schema requires executors: accept either shape.
    schemas["tesTaskFull"] = schemas["tesTask"]
    schemas["tesTask"] = {"anyOf": [
        {"type": "object", "additionalProperties": False, "required": ["id", "state"],
         "properties": {"id": {"type": "string"}, "state": {"$ref": "#/components/schemas/tesState"}}},
        {"$ref": "#/components/schemas/tesTaskFull"},
    ]}
    return {"components": {"schemas": schemas}}


def schema_for(method: str, path: str) -> str | None:
    """The spec's schema name for a 200 reply to ``method path``, or None if it is not a TES route."""
    for m, pattern, name in ROUTES:
        if m == method and pattern.match(path):
            return name
    return None


def violations(name: str, body: Any) -> list[str]:
    """What in ``body`` breaks the (strict) schema ``name``: empty if nothing."""
    schema = {"$ref": f"#/components/schemas/{name}", **components()}
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    found = []
    for error in validator.iter_errors(body):
        details = [error]
        if error.context:  # an anyOf: report the full task's errors unless it looks like a MINIMAL one
            minimal = isinstance(error.instance, dict) and set(error.instance) <= {"id", "state"}
            details = [e for e in error.context if e.relative_schema_path[0] == (0 if minimal else 1)] or details
        for e in details:
            found.append(f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}")
    return found
