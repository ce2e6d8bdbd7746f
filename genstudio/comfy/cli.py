"""`genstudio workflows …`: the workflow templates, checked offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from genstudio.comfy.templates import (
    TemplateSet,
    check_against_object_info,
    load_directory,
    load_templates,
)

workflows_app = typer.Typer(help="Workflow templates (see docs/workflows.md).", no_args_is_help=True)


def _object_info(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        info = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        typer.echo(f"genstudio: cannot read {path}: {exc}", err=True)
        raise typer.Exit(1) from None
    return {k: v for k, v in info.items() if isinstance(v, dict)}


@workflows_app.command("check")
def check(
    directory: Annotated[Path, typer.Argument(help="A directory of templates (one subdirectory each).")],
    object_info: Annotated[Path | None, typer.Option(
        help="A saved `GET /object_info` of your ComfyUI server: also check node types, inputs and bounds.")] = None,
) -> None:
    """Validate a directory of templates offline: one line per problem, exit status 1 if any."""
    known = _object_info(object_info)
    found = load_directory(directory)
    problems = [str(p) for p in found.problems]
    if known is not None:
        for template in found:
            problems += [f"{template.source}: {message}" for message in check_against_object_info(template, known)]
    for line in problems:
        typer.echo(line, err=True)
    if problems:
        raise typer.Exit(1)
    names = ", ".join(t.name for t in found) or "none"
    typer.echo(f"{len(found.templates)} template(s) ok: {names}")


@workflows_app.command("list")
def list_templates() -> None:
    """The templates this genstudio offers (built-in and GENSTUDIO_WORKFLOWS_DIR), and any it skips."""
    from genstudio.config import get_settings

    found: TemplateSet = load_templates(get_settings().workflows_dir)
    for template in found:
        origin = "built-in" if template.builtin else template.source
        typer.echo(f"{template.name:<24} {template.output_type:<6} {template.manifest.display_name}  ({origin})")
    for problem in found.problems:
        typer.echo(f"skipped {problem.name}: {problem.message}", err=True)
