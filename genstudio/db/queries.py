"""Named SQL queries, kept as plain `.sql` files under `queries/`.

Each file holds blocks introduced by a `-- name: <query_name>` line; everything up to the next
such line is that query's SQL. Files are read once, at import of the module that asks.
"""

from __future__ import annotations

import re
from importlib import resources

_NAME_LINE = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split one file's text into {name: sql}; a repeated name is a mistake worth failing on."""
    queries: dict[str, str] = {}
    matches = list(_NAME_LINE.finditer(text))
    for match, following in zip(matches, matches[1:] + [None]):
        end = following.start() if following else len(text)
        name = match["name"]
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = text[match.end() : end].strip()
    return queries


def load_queries(area: str) -> dict[str, str]:
    """The queries of `queries/<area>.sql`."""
    text = resources.files("genstudio.db").joinpath("queries", f"{area}.sql").read_text("utf-8")
    return parse_queries(text)
