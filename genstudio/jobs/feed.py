"""The unified feed: the newest jobs of every type, in one statement, keyset-paginated."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import psycopg
from psycopg import sql

from genstudio.db.queries import load_queries
from genstudio.jobs.output_types import OUTPUT_TYPES
from genstudio.jobs.service import STREAMS, PageQuery, filter_clause, json_object, next_cursor, stream

QUERIES = load_queries("feed")


@dataclass(frozen=True)
class FeedQuery(PageQuery):
    types: tuple[str, ...] = tuple(OUTPUT_TYPES)


@cache
def feed_sql(types: tuple[str, ...], filter_key: tuple) -> str:
    scope, workflow, status, cursor = filter_key
    filters = filter_clause(workflow=workflow, status=status, cursor=cursor)
    streams = [
        sql.SQL(QUERIES["feed_stream"]).format(
            type=sql.Literal(name), table=sql.Identifier("public", OUTPUT_TYPES[name].table),
            stream=stream(s), filters=filters)
        for name in types for s in STREAMS[scope]
    ]
    render = [
        sql.SQL(QUERIES["feed_render"]).format(
            type=sql.Literal(name), table=sql.Identifier("public", OUTPUT_TYPES[name].table),
            item_json=json_object(OUTPUT_TYPES[name], tag=name))
        for name in types
    ]
    return sql.SQL(QUERIES["feed"]).format(
        streams=sql.SQL("\nUNION\n").join(streams), render=sql.SQL("\nUNION ALL\n").join(render),
        next_cursor=next_cursor(),
    ).as_string()


def feed_statement(query: FeedQuery) -> tuple[str, dict]:
    # A stable order of branches keeps the statement text, and so its prepared plan, the same.
    types = tuple(name for name in OUTPUT_TYPES if name in query.types)
    return feed_sql(types, query.filter_key()), query.params()


async def read_feed(conn: psycopg.AsyncConnection, query: FeedQuery) -> str:
    """One page as the response body, `{"success": true, "items": [...], "next_cursor": ...}`,
    rendered by PostgreSQL."""
    cur = await conn.execute(*feed_statement(query))
    return (await cur.fetchone())["body"]
