"""Workflow templates: loading (good ones kept, broken ones reported by name and skipped),
typed substitution, the JSON Schema of parameters, and `genstudio workflows check/list`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from genstudio.comfy.templates import (
    InvalidParameters,
    UnknownWorkflow,
    builtin_directory,
    check_against_object_info,
    load_templates,
)

STOCK_OBJECT_INFO = Path(__file__).parent / "data" / "object_info_stock.json"
BUILTIN = ["image-blur", "image-invert", "image-resize", "img2img", "text-concatenate", "video-from-image"]


def stock_object_info() -> dict:
    info = json.loads(STOCK_OBJECT_INFO.read_text())
    return {k: v for k, v in info.items() if isinstance(v, dict)}


def write_template(root: Path, name: str, manifest: str, workflow: dict | str) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "manifest.toml").write_text(manifest)
    (directory / "workflow.json").write_text(workflow if isinstance(workflow, str) else json.dumps(workflow))
    return directory


TEXT_WORKFLOW = {
    "1": {"class_type": "StringConcatenate", "inputs": {"string_a": "a", "string_b": "b", "delimiter": ""}},
    "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
}
TEXT_MANIFEST = """
name = "{name}"
display_name = "Echo"
output_type = "text"
output_nodes = ["2"]

[[parameters]]
name = "text"
type = "string"
node = "1"
input = "string_a"

[[parameters]]
name = "flag"
type = "boolean"
default = false
nullable = true
node = "1"
input = "delimiter"
"""


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genstudio", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_builtin_templates_load_and_match_the_stock_comfyui_nodes():
    found = load_templates()
    assert found.problems == []
    assert [t.name for t in found] == BUILTIN
    assert {t.name: t.output_type for t in found} == {
        "image-blur": "image", "image-invert": "image", "image-resize": "image", "img2img": "image",
        "text-concatenate": "text", "video-from-image": "video"}
    known = stock_object_info()
    for template in found:
        assert check_against_object_info(template, known) == [], template.name
    assert found.get("img2img").required_node_types == [
        "CLIPTextEncode", "CheckpointLoaderSimple", "KSampler", "LoadImage", "SaveImage", "VAEDecode", "VAEEncode"]
    assert found.get("video-from-image").required_node_types == [
        "CreateVideo", "ImageScale", "LoadImage", "RepeatImageBatch", "SaveVideo"]


def test_object_info_check_names_missing_nodes_and_out_of_bound_parameters():
    template = load_templates().get("image-blur")
    known = stock_object_info()
    del known["ImageBlur"]
    assert check_against_object_info(template, known) == ["node types not on the server: ImageBlur"]
    known = stock_object_info()
    known["ImageBlur"]["input"]["required"]["blur_radius"][1]["max"] = 10
    assert check_against_object_info(template, known) == ["parameter radius: max must be at most the node's max (10)"]


def test_studio_templates_join_the_builtin_ones_and_broken_ones_are_skipped_by_name(tmp_path):
    write_template(tmp_path, "echo", TEXT_MANIFEST.format(name="echo"), TEXT_WORKFLOW)
    write_template(tmp_path, "image-invert", TEXT_MANIFEST.format(name="image-invert"), TEXT_WORKFLOW)  # replaces
    write_template(tmp_path, "bad-json", TEXT_MANIFEST.format(name="bad-json"), "{not json")
    write_template(tmp_path, "bad-link", TEXT_MANIFEST.format(name="bad-link"),
                   {**TEXT_WORKFLOW, "2": {"class_type": "PreviewAny", "inputs": {"source": ["7", 0]}}})
    write_template(tmp_path, "bad-target", TEXT_MANIFEST.format(name="bad-target").replace('input = "string_a"', 'input = "strng_a"'),
                   TEXT_WORKFLOW)
    write_template(tmp_path, "bad-default", TEXT_MANIFEST.format(name="bad-default").replace("default = false", 'default = "yes"'),
                   TEXT_WORKFLOW)
    write_template(tmp_path, "ui-format", TEXT_MANIFEST.format(name="ui-format"), {"nodes": [], "links": []})
    write_template(tmp_path, "wrong-name", TEXT_MANIFEST.format(name="other"), TEXT_WORKFLOW)
    write_template(tmp_path, "bad-toml", "name = ", TEXT_WORKFLOW)

    found = load_templates(tmp_path)

    assert [t.name for t in found] == sorted(BUILTIN + ["echo"])
    assert not found.get("image-invert").builtin and found.get("image-invert").output_type == "text"
    problems = {p.name: p.message for p in found.problems}
    assert set(problems) == {"bad-json", "bad-link", "bad-target", "bad-default", "ui-format", "wrong-name", "bad-toml"}
    assert "workflow.json is not valid JSON" in problems["bad-json"]
    assert problems["bad-link"] == "node 2 (PreviewAny): input source links to node 7, which is not in the workflow"
    assert problems["bad-target"] == "parameter text: node 1 (StringConcatenate) has no input 'strng_a' in workflow.json"
    assert problems["bad-default"] == "parameter flag: default 'yes': 'yes' is not of type 'boolean', 'null'"
    assert "UI format" in problems["ui-format"]
    assert "differs from its directory's name" in problems["wrong-name"]
    assert "not valid TOML" in problems["bad-toml"]
    with pytest.raises(UnknownWorkflow):
        found.get("bad-json")


def test_substitution_is_typed_and_strings_stay_values():
    template = load_templates().get("img2img")
    nasty = 'a "quoted" {brace} ", "inject": ["1", 0], "x": "\\\\ \n'
    params = template.validate_parameters({"prompt": nasty, "steps": 30.0, "seed": 2**53 - 1, "strength": 1})
    prompt = template.build_prompt(params)
    assert prompt["4"]["inputs"]["text"] == nasty
    assert prompt["6"]["inputs"]["steps"] == 30 and type(prompt["6"]["inputs"]["steps"]) is int
    assert prompt["6"]["inputs"]["seed"] == 2**53 - 1
    assert prompt["6"]["inputs"]["denoise"] == 1 and prompt["6"]["inputs"]["cfg"] == 7.0
    assert prompt["6"]["inputs"]["positive"] == ["4", 0]  # links untouched
    assert json.loads(json.dumps(prompt)) == prompt and set(prompt) == set(template.workflow)
    # The template itself is unchanged by a run.
    assert template.workflow["4"]["inputs"]["text"] == "a photograph"

    echo = {"text": "x", "flag": None}
    text_params = _echo_template().validate_parameters(echo)
    assert _echo_template().build_prompt(text_params)["1"]["inputs"]["delimiter"] is None


def _echo_template(tmp=Path("/nonexistent")):
    import tempfile

    root = Path(tempfile.mkdtemp())
    write_template(root, "echo", TEXT_MANIFEST.format(name="echo"), TEXT_WORKFLOW)
    try:
        return load_templates(root).get("echo")
    finally:
        shutil.rmtree(root)


def test_parameter_errors_name_every_field():
    template = load_templates().get("img2img")
    with pytest.raises(InvalidParameters) as caught:
        template.validate_parameters({"steps": "20", "cfg": 31, "strength": -0.1, "seed": True, "colour": 1})
    assert caught.value.problems == [
        "parameters.prompt: is required",
        "parameters: colour is not a parameter of img2img",
        "parameters.cfg: 31 is greater than the maximum of 30.0",
        "parameters.seed: True is not of type 'integer'",
        "parameters.steps: '20' is not of type 'integer'",
        "parameters.strength: -0.1 is less than the minimum of 0.0",
    ]
    with pytest.raises(InvalidParameters, match="must be a JSON object"):
        template.validate_parameters(["prompt"])
    resize = load_templates().get("image-resize")
    with pytest.raises(InvalidParameters, match=r"parameters.method: 'cubic' is not one of"):
        resize.validate_parameters({"method": "cubic"})
    video = load_templates().get("video-from-image")
    with pytest.raises(InvalidParameters, match=r"parameters.width: 255 is not a multiple of 2"):
        video.validate_parameters({"width": 255})


def test_json_schema_of_parameters():
    described = load_templates().get("img2img").describe()
    schema = described["parameters_schema"]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["prompt"]
    assert schema["properties"]["steps"] == {"type": "integer", "title": "Steps", "minimum": 1, "maximum": 150, "default": 20}
    assert schema["properties"]["strength"]["maximum"] == 1.0
    assert schema["properties"]["prompt"]["maxLength"] == 5000
    assert described["input_files"] == [{
        "name": "image", "title": "Image", "description": "The starting image.",
        "media_types": ["image/png", "image/jpeg", "image/webp"], "max_bytes": 20_000_000, "required": True}]
    resize = load_templates().get("image-resize").parameters_schema
    assert resize["properties"]["method"]["enum"] == ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
    assert resize["required"] == []
    # Defaults satisfy their own schema.
    for template in load_templates():
        defaults = {k: v["default"] for k, v in template.parameters_schema["properties"].items() if "default" in v}
        assert list(jsonschema.Draft202012Validator(template.parameters_schema).iter_errors(
            {**defaults, **({"prompt": "x"} if template.name == "img2img" else {})})) == []


def test_workflows_check_cli(tmp_path):
    without_flag = TEXT_MANIFEST.split("[[parameters]]\nname = \"flag\"")[0]
    write_template(tmp_path, "echo", without_flag.format(name="echo"), TEXT_WORKFLOW)
    ok = run_cli("workflows", "check", str(tmp_path), "--object-info", str(STOCK_OBJECT_INFO))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "1 template(s) ok: echo"

    write_template(tmp_path, "two-problems", TEXT_MANIFEST.format(name="two-problems").replace('output_type = "text"', 'output_type = "audio"'),
                   {"1": {"class_type": "StringConcatenate", "inputs": {"string_a": ["5", 0]}}})
    write_template(tmp_path, "missing-node", without_flag.format(name="missing-node"),
                   {**TEXT_WORKFLOW, "3": {"class_type": "NoSuchNode", "inputs": {}}})
    bad = run_cli("workflows", "check", str(tmp_path), "--object-info", str(STOCK_OBJECT_INFO))
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert sorted(lines) == sorted([
        f"{tmp_path / 'two-problems'}: manifest.toml output_type: Input should be 'video', 'image' or 'text'",
        f"{tmp_path / 'missing-node'}: node types not on the server: NoSuchNode",
    ])
    nothing = run_cli("workflows", "check", str(tmp_path / "absent"))
    assert nothing.returncode == 1 and "not a directory" in nothing.stderr


def test_workflows_list_cli_shows_builtin_and_studio_templates_and_skipped_ones(tmp_path):
    write_template(tmp_path, "echo", TEXT_MANIFEST.format(name="echo"), TEXT_WORKFLOW)
    write_template(tmp_path, "broken", "name = 'broken'", TEXT_WORKFLOW)
    listed = run_cli("workflows", "list", env={"GENSTUDIO_WORKFLOWS_DIR": str(tmp_path)})
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert names == sorted(BUILTIN + ["echo"])
    assert "skipped broken: manifest.toml display_name: Field required" in listed.stderr


def test_builtin_templates_are_packaged():
    files = {p.relative_to(builtin_directory()).as_posix() for p in builtin_directory().rglob("*") if p.is_file()}
    for name in BUILTIN:
        assert {f"{name}/manifest.toml", f"{name}/workflow.json"} <= files
