"""A workflow's run form, generated from the JSON Schema of its parameters and its input files.

Numbers keep their bounds (the browser enforces them and says which field is wrong), choices
become selects, long strings text areas, files uploads with a preview.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Strings that read as prose get a text area; every other string (a file name, a model) a line.
_PROSE_WORDS = ("prompt", "text", "caption", "description")


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    kind: str  # number | text | textarea | select | checkbox | file
    required: bool = False
    default: Any = None
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    step: str = "any"
    choices: tuple[Any, ...] = ()
    accept: str = ""
    max_bytes: int | None = None
    json_type: str = "string"  # how the value goes back into `parameters`: string | number | integer | boolean
    extra: dict[str, Any] = field(default_factory=dict)


def _label(name: str, schema: dict[str, Any]) -> str:
    return str(schema.get("title") or name.replace("_", " ").capitalize())


def _schema_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "string")
    if isinstance(kind, list):  # e.g. ["integer", "null"]
        kind = next((k for k in kind if k != "null"), "string")
    return str(kind)


def _is_file(schema: dict[str, Any]) -> bool:
    return schema.get("format") == "binary" or "contentMediaType" in schema or schema.get("x-file") is True


def parameter_field(name: str, schema: dict[str, Any], required: bool) -> FormField:
    common = {"name": name, "label": _label(name, schema), "required": required,
              "default": schema.get("default"), "description": str(schema.get("description") or "")}
    kind = _schema_type(schema)
    if _is_file(schema):
        return FormField(kind="file", accept=str(schema.get("contentMediaType") or ""),
                         max_bytes=schema.get("maxLength"), **common)
    if "enum" in schema:
        return FormField(kind="select", choices=tuple(c for c in schema["enum"] if c is not None), json_type=kind,
                         **common)
    if kind in ("number", "integer"):
        minimum = schema.get("minimum", schema.get("exclusiveMinimum"))
        maximum = schema.get("maximum", schema.get("exclusiveMaximum"))
        step = "1" if kind == "integer" else str(schema.get("multipleOf") or "any")
        return FormField(kind="number", minimum=minimum, maximum=maximum, step=step, json_type=kind, **common)
    if kind == "boolean":
        return FormField(kind="checkbox", json_type="boolean", **{**common, "required": False})
    long = any(word in name for word in _PROSE_WORDS)
    return FormField(kind="textarea" if long else "text", json_type="string",
                     extra={"maxlength": schema.get("maxLength"), "minlength": schema.get("minLength")}, **common)


def file_field(spec: dict[str, Any]) -> FormField:
    """An input file of a template (`input_files` of `GET /api/workflows/{name}`)."""
    accept = spec.get("accept") or spec.get("media_types") or spec.get("content_types") or []
    if isinstance(accept, str):
        accept = [accept]
    name = str(spec["name"])
    return FormField(name=name, label=str(spec.get("label") or spec.get("title") or _label(name, {})), kind="file",
                     required=bool(spec.get("required", True)), description=str(spec.get("description") or ""),
                     accept=",".join(accept), max_bytes=spec.get("max_bytes") or spec.get("max_size_bytes"))


def form_fields(workflow: dict[str, Any]) -> list[FormField]:
    """Input files first (what the run is about), then the parameters in the schema's order."""
    schema = workflow.get("parameters_schema") or workflow.get("schema") or {}
    required = set(schema.get("required") or [])
    fields = [file_field(spec) for spec in workflow.get("input_files") or []]
    fields += [parameter_field(name, prop, name in required)
               for name, prop in (schema.get("properties") or {}).items()]
    return fields
