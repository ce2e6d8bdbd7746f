"""Workflow templates: a ComfyUI workflow in API format plus a manifest saying how to run it.

A template is a directory `<name>/` holding
  workflow.json   the workflow as ComfyUI's "Export (API)" writes it: {node_id: {class_type, inputs}}
  manifest.toml   name, display name, output type, parameters, input files, output nodes

Templates come from the package (`genstudio/comfy/workflows/`) and from the studio's own
directory (`GENSTUDIO_WORKFLOWS_DIR`), whose templates replace built-in ones of the same name.
Each is validated when it is loaded; a broken one is reported by name and skipped, so one bad
file never keeps the server from starting.

Parameters are substituted by value into a copy of the workflow's dict (numbers, booleans and
null stay typed; a string is set as a string), never spliced into JSON text, so a value holding
quotes or braces stays a value.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from genstudio.errors import CallerError

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.toml"
WORKFLOW_FILE = "workflow.json"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
FIELD_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
DEFAULT_STRING_MAX_LENGTH = 10_000
DEFAULT_FILE_MAX_BYTES = 50 * 1024 * 1024

ParameterType = Literal["integer", "number", "string", "boolean"]
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,), "number": (int, float), "string": (str,), "boolean": (bool,),
}


class InvalidParameters(CallerError):
    """Parameters of a run that do not fit the template; `problems` names each field."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class UnknownWorkflow(CallerError):
    """No template of that name is loaded."""


class TemplateError(Exception):
    """A template that cannot be used; `problems` says what to fix, one line each."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else problems
        super().__init__("; ".join(self.problems))


# ---------------------------------------------------------------------------- the manifest

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Parameter(_Strict):
    """A value the caller may set, and the node input it fills."""

    name: str = Field(pattern=FIELD_PATTERN)
    type: ParameterType
    title: str | None = None
    description: str = ""
    default: Any = None
    required: bool = False  # without a default, a parameter is required anyway
    nullable: bool = False
    min: int | float | None = None
    max: int | float | None = None
    multiple_of: int | float | None = Field(default=None, gt=0)
    choices: list[Any] | None = Field(default=None, min_length=1)
    max_length: int | None = Field(default=None, ge=1)
    node: str = Field(min_length=1)
    input: str = Field(min_length=1)

    @field_validator("node", mode="before")
    @classmethod
    def _node_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _consistent(self) -> "Parameter":
        if (self.min is not None or self.max is not None or self.multiple_of is not None) \
                and self.type not in ("integer", "number"):
            raise ValueError("min, max and multiple_of apply to integer and number parameters only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.max_length is not None and self.type != "string":
            raise ValueError("max_length applies to string parameters only")
        if self.choices is not None:
            wrong = [c for c in self.choices if not _is_of_type(c, self.type)]
            if wrong:
                raise ValueError(f"choices {wrong!r} are not of type {self.type}")
        return self

    @property
    def has_default(self) -> bool:
        return "default" in self.model_fields_set

    @property
    def is_required(self) -> bool:
        return self.required or not self.has_default

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": [self.type, "null"] if self.nullable else self.type}
        if self.title:
            schema["title"] = self.title
        if self.description:
            schema["description"] = self.description
        if self.choices is not None:
            schema["enum"] = list(self.choices) + ([None] if self.nullable else [])
        if self.min is not None:
            schema["minimum"] = _number(self.min, self.type)
        if self.max is not None:
            schema["maximum"] = _number(self.max, self.type)
        if self.multiple_of is not None:
            schema["multipleOf"] = _number(self.multiple_of, self.type)
        if self.type == "string":
            schema["maxLength"] = self.max_length or DEFAULT_STRING_MAX_LENGTH
        if self.has_default:
            schema["default"] = self.default
        return schema


class InputFile(_Strict):
    """A file the caller sends (or uploaded earlier), uploaded to the ComfyUI server and set
    as the file name of a loader node's input (e.g. LoadImage's `image`)."""

    name: str = Field(pattern=FIELD_PATTERN)
    title: str | None = None
    description: str = ""
    node: str = Field(min_length=1)
    input: str = Field(min_length=1)
    # Media types told from the content: exact (`image/png`) or a whole kind (`image/*`).
    media_types: list[str] = Field(min_length=1)
    max_bytes: int = Field(default=DEFAULT_FILE_MAX_BYTES, ge=1)
    required: bool = True

    @field_validator("node", mode="before")
    @classmethod
    def _node_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("media_types")
    @classmethod
    def _media_types(cls, values: list[str]) -> list[str]:
        for value in values:
            if not re.fullmatch(r"(image|video|audio)/([a-z0-9.+-]+|\*)", value):
                raise ValueError(f"{value!r} is not a media type such as image/png or image/*")
        return values

    def accepts(self, content_type: str) -> bool:
        kind = content_type.split("/", 1)[0]
        return content_type in self.media_types or f"{kind}/*" in self.media_types

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title or self.name, "description": self.description,
                "media_types": self.media_types, "max_bytes": self.max_bytes, "required": self.required}


class Manifest(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    display_name: str = Field(min_length=1, max_length=200)
    description: str = ""
    output_type: Literal["video", "image", "text"]
    output_nodes: list[str] = Field(min_length=1)
    parameters: list[Parameter] = []
    inputs: list[InputFile] = []

    @field_validator("output_nodes", mode="before")
    @classmethod
    def _nodes_as_text(cls, value: Any) -> Any:
        return [str(v) if isinstance(v, int) else v for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _unique_names(self) -> "Manifest":
        names = [p.name for p in self.parameters] + [f.name for f in self.inputs]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"parameter and input names must be unique; repeated: {', '.join(repeated)}")
        return self


def _is_of_type(value: Any, type_name: str) -> bool:
    if type_name != "boolean" and isinstance(value, bool):
        return False
    return isinstance(value, _PYTHON_TYPES[type_name])


def _number(value: float, type_name: str) -> int | float:
    return int(value) if type_name == "integer" and float(value).is_integer() else value


# ---------------------------------------------------------------------------- the template

@dataclass(frozen=True)
class Template:
    manifest: Manifest
    workflow: dict[str, dict[str, Any]]
    source: str  # where it was loaded from, for messages
    builtin: bool = False

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def output_type(self) -> str:
        return self.manifest.output_type

    @cached_property
    def required_node_types(self) -> list[str]:
        return sorted({node["class_type"] for node in self.workflow.values()})

    @cached_property
    def parameters_schema(self) -> dict[str, Any]:
        """JSON Schema (2020-12) of the `parameters` object of a run."""
        params = self.manifest.parameters
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"Parameters of {self.manifest.display_name}",
            "type": "object",
            "properties": {p.name: p.json_schema() for p in params},
            "required": [p.name for p in params if p.is_required],
            "additionalProperties": False,
        }

    @cached_property
    def _validator(self) -> jsonschema.protocols.Validator:
        return jsonschema.Draft202012Validator(self.parameters_schema)

    def describe(self) -> dict[str, Any]:
        """The template as `GET /api/workflows` shows it."""
        m = self.manifest
        return {
            "name": m.name,
            "display_name": m.display_name,
            "description": m.description,
            "output_type": m.output_type,
            "parameters_schema": self.parameters_schema,
            "input_files": [f.describe() for f in m.inputs],
            "required_node_types": self.required_node_types,
            "builtin": self.builtin,
        }

    def validate_parameters(self, values: Any) -> dict[str, Any]:
        """The parameters of a run, defaults filled in; InvalidParameters names every bad field."""
        if not isinstance(values, Mapping):
            raise InvalidParameters(["parameters: must be a JSON object"])
        problems = []
        for error in sorted(self._validator.iter_errors(values), key=lambda e: list(map(str, e.path))):
            where = ".".join(map(str, error.path))
            if error.validator == "required":
                missing = error.message.split("'")[1]
                problems.append(f"parameters.{missing}: is required")
            elif error.validator == "additionalProperties":
                extra = sorted(set(values) - set(self.parameters_schema["properties"]))
                problems.append(f"parameters: {', '.join(extra)} {'is not a parameter' if len(extra) == 1 else 'are not parameters'} "
                                f"of {self.name}")
            else:
                problems.append(f"parameters.{where}: {error.message}")
        if problems:
            raise InvalidParameters(problems)
        resolved = {p.name: p.default for p in self.manifest.parameters if p.has_default}
        resolved.update(values)
        return {p.name: _typed(resolved[p.name], p.type) for p in self.manifest.parameters if p.name in resolved}

    def build_prompt(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of the workflow with the (validated) parameters set as node input values."""
        prompt = copy.deepcopy(self.workflow)
        for p in self.manifest.parameters:
            if p.name in parameters:
                prompt[p.node]["inputs"][p.input] = parameters[p.name]
        return prompt


def _typed(value: Any, type_name: str) -> Any:
    # JSON Schema counts 3.0 as an integer; ComfyUI's INT inputs want 3.
    if value is not None and type_name == "integer":
        return int(value)
    if value is not None and type_name == "number":
        return float(value) if not isinstance(value, int) else value
    return value


def set_input_file(prompt: dict[str, Any], node: str, input_name: str, server_filename: str) -> None:
    """Point a loader node at a file uploaded to the server (`subfolder/name` as ComfyUI
    addresses it)."""
    prompt[node]["inputs"][input_name] = server_filename


# ---------------------------------------------------------------------------- validation

def check_workflow(workflow: Any) -> list[str]:
    """Problems of an API-format workflow on its own."""
    if not isinstance(workflow, dict) or not workflow:
        return ["workflow.json must be a non-empty object of nodes in ComfyUI's API format "
                "(use \"Export (API)\", not \"Save\")"]
    if "nodes" in workflow and "links" in workflow:
        return ["workflow.json is in ComfyUI's UI format; export it with \"Export (API)\" instead"]
    problems = []
    for node_id, node in workflow.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) \
                or not isinstance(node.get("inputs", {}), dict):
            problems.append(f"node {node_id}: needs a class_type string and an inputs object")
            continue
        for input_name, value in node.get("inputs", {}).items():
            if _is_link(value) and str(value[0]) not in workflow:
                problems.append(f"node {node_id} ({node['class_type']}): input {input_name} links to "
                                f"node {value[0]}, which is not in the workflow")
    return problems


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)) \
        and isinstance(value[1], int) and not isinstance(value[1], bool)


def check_template(manifest: Manifest, workflow: dict[str, Any]) -> list[str]:
    """Problems between a manifest and its workflow."""
    problems = check_workflow(workflow)
    if problems:
        return problems

    def target(kind: str, name: str, node: str, input_name: str) -> None:
        if node not in workflow:
            problems.append(f"{kind} {name}: node {node} is not in the workflow")
        elif input_name not in workflow[node].get("inputs", {}):
            problems.append(f"{kind} {name}: node {node} ({workflow[node]['class_type']}) has no input "
                            f"{input_name!r} in workflow.json")
        elif _is_link(workflow[node]["inputs"][input_name]):
            problems.append(f"{kind} {name}: input {input_name!r} of node {node} is a link, not a value")

    for p in manifest.parameters:
        target("parameter", p.name, p.node, p.input)
        if p.has_default:
            errors = list(jsonschema.Draft202012Validator(p.json_schema()).iter_errors(p.default))
            problems.extend(f"parameter {p.name}: default {p.default!r}: {e.message}" for e in errors)
    for f in manifest.inputs:
        target("input file", f.name, f.node, f.input)
    for node in manifest.output_nodes:
        if node not in workflow:
            problems.append(f"output node {node} is not in the workflow")
    return problems


def check_against_object_info(template: Template, object_info: Mapping[str, Any]) -> list[str]:
    """Problems of a template against a server's `/object_info`: missing node types, unknown
    inputs, parameter bounds and choices outside what the node accepts."""
    problems = []
    missing = [t for t in template.required_node_types if t not in object_info]
    if missing:
        problems.append(f"node types not on the server: {', '.join(missing)}")
    for node_id, node in template.workflow.items():
        info = object_info.get(node["class_type"])
        if info is None:
            continue
        declared = {**info.get("input", {}).get("required", {}), **info.get("input", {}).get("optional", {})}
        for input_name in node.get("inputs", {}):
            if input_name not in declared:
                problems.append(f"node {node_id} ({node['class_type']}): no input {input_name!r}")
        for input_name in info.get("input", {}).get("required", {}):
            if input_name not in node.get("inputs", {}):
                problems.append(f"node {node_id} ({node['class_type']}): required input {input_name!r} is missing")
    for p in template.manifest.parameters:
        node = template.workflow[p.node]
        spec = {**object_info.get(node["class_type"], {}).get("input", {}).get("required", {}),
                **object_info.get(node["class_type"], {}).get("input", {}).get("optional", {})}.get(p.input)
        if spec is None:
            continue
        problems.extend(f"parameter {p.name}: {message}" for message in _parameter_vs_spec(p, spec))
    return problems


def _parameter_vs_spec(p: Parameter, spec: list[Any]) -> list[str]:
    kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    if kind == "COMBO":  # newer nodes list their choices under "options"
        kind = options.get("options", [])
    if isinstance(kind, list):  # a combo: the node takes one of these values
        if p.type != "string":
            return [f"the node input takes one of a list of strings, not a {p.type}"]
        # An empty list is a server-specific one (model files): nothing to compare with.
        outside = [c for c in (p.choices or []) if kind and c not in kind]
        return [f"choices {outside!r} are not accepted by the node"] if outside else []
    expected = {"INT": ("integer",), "FLOAT": ("number", "integer"), "STRING": ("string",), "BOOLEAN": ("boolean",)}
    if kind not in expected:
        return [f"the node input is a {kind} connection, not a value a parameter can set"]
    if p.type not in expected[kind]:
        return [f"the node input is {kind}, the parameter is {p.type}"]
    problems = []
    if "min" in options and (p.min is None or p.min < options["min"]):
        problems.append(f"min must be at least the node's min ({options['min']})")
    if "max" in options and (p.max is None or p.max > options["max"]):
        problems.append(f"max must be at most the node's max ({options['max']})")
    return problems


# ---------------------------------------------------------------------------- loading

@dataclass(frozen=True)
class TemplateProblem:
    name: str  # the template's name (its directory's, when the manifest is unreadable)
    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass
class TemplateSet:
    templates: dict[str, Template] = field(default_factory=dict)
    problems: list[TemplateProblem] = field(default_factory=list)

    def get(self, name: str) -> Template:
        try:
            return self.templates[name]
        except KeyError:
            raise UnknownWorkflow(f"no workflow named {name!r}") from None

    def __iter__(self):
        return iter(sorted(self.templates.values(), key=lambda t: t.name))


def load_template(directory: Path, *, builtin: bool = False) -> Template:
    """One template from its directory; TemplateError says everything wrong with it."""
    manifest_path, workflow_path = directory / MANIFEST_FILE, directory / WORKFLOW_FILE
    try:
        raw_manifest = tomllib.loads(manifest_path.read_text("utf-8"))
    except FileNotFoundError:
        raise TemplateError(f"no {MANIFEST_FILE}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{MANIFEST_FILE} is not valid TOML: {exc}") from None
    try:
        workflow = json.loads(workflow_path.read_text("utf-8"))
    except FileNotFoundError:
        raise TemplateError(f"no {WORKFLOW_FILE}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{WORKFLOW_FILE} is not valid JSON: {exc}") from None
    try:
        manifest = Manifest.model_validate(raw_manifest)
    except ValidationError as exc:
        raise TemplateError([_describe(e) for e in exc.errors()]) from None
    if manifest.name != directory.name:
        raise TemplateError(f"the manifest's name {manifest.name!r} differs from its directory's name")
    problems = check_template(manifest, workflow)
    if problems:
        raise TemplateError(problems)
    workflow = {str(k): v for k, v in workflow.items()}
    return Template(manifest, workflow, str(directory), builtin)


def _describe(error: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in error.get("loc", ()))
    message = error.get("msg", "invalid").removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        message = "is not a manifest field"
    return f"{MANIFEST_FILE} {where}: {message}" if where else f"{MANIFEST_FILE}: {message}"


def template_dirs(directory: Path) -> list[Path]:
    """The template directories inside `directory`: those holding a manifest or a workflow."""
    return sorted(p for p in directory.iterdir()
                  if p.is_dir() and ((p / MANIFEST_FILE).exists() or (p / WORKFLOW_FILE).exists()))


def load_directory(directory: Path, *, builtin: bool = False) -> TemplateSet:
    found = TemplateSet()
    if not directory.is_dir():
        found.problems.append(TemplateProblem(directory.name, str(directory), "not a directory"))
        return found
    for path in template_dirs(directory):
        try:
            template = load_template(path, builtin=builtin)
        except TemplateError as exc:
            found.problems.extend(TemplateProblem(path.name, str(path), message) for message in exc.problems)
            continue
        found.templates[template.name] = template
    return found


def builtin_directory() -> Path:
    return Path(str(resources.files("genstudio.comfy").joinpath("workflows")))


def load_templates(studio_dir: Path | None = None) -> TemplateSet:
    """The built-in templates, then the studio's (replacing built-in ones of the same name).
    Every broken template is logged with its name and left out."""
    found = load_directory(builtin_directory(), builtin=True)
    if studio_dir is not None:
        studio = load_directory(Path(studio_dir))
        found.templates.update(studio.templates)
        found.problems.extend(studio.problems)
    for problem in found.problems:
        log.error("workflow template %s skipped: %s", problem.name, problem)
    return found


def templates_from_settings(settings) -> TemplateSet:
    return load_templates(settings.workflows_dir)


def object_info_node_types(object_info: Mapping[str, Any]) -> list[str]:
    return sorted(object_info)


def missing_node_types(template: Template, node_types: Iterable[str]) -> list[str]:
    available = set(node_types)
    return [t for t in template.required_node_types if t not in available]
