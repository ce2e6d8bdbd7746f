"""The workflow templates the pages offer: the navigation, the feed's workflow filter, `/run`."""

from __future__ import annotations

from typing import Any

from fastapi import Request


def workflow_catalog(request: Request) -> list[dict[str, Any]]:
    """Every template as `GET /api/workflows` describes it (name, display_name, output_type, schema)."""
    return []
