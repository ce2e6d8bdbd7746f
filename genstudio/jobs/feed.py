"""The unified feed: the newest jobs of every type, in one statement, keyset-paginated."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import psycopg
from psycopg import sql

from genstudio.db.queries import load_queries
from genstudio.jobs.output_types import OUTPUT_TYPES
from genstudio.jobs.service import Page, PageQuery, filter_clause, json_object, page_from_row

QUERIES = load_queries("feed")


@dataclass(frozen=True)
class FeedQuery(PageQuery):
    types: tuple[str, ...] = tuple(OUTPUT_TYPES)


@cache
def feed_sql(types: tuple[str, ...], filter_key: tuple) -> str:
    scope, workflow, status, cursor = filter_key
    filters = filter_clause(scope, workflow=workflow, status=status, cursor=cursor)
    branches = [
        sql.SQL(QUERIES["feed_branch"]).format(
            table=sql.Identifier("public", OUTPUT_TYPES[name].table),
            item_json=json_object(OUTPUT_TYPES[name], tag=name),
            filters=filters,
        )
        for name in types
    ]
    return sql.SQL(QUERIES["feed"]).format(branches=sql.SQL("\nUNION ALL\n").join(branches)).as_string()


async def read_feed(conn: psycopg.AsyncConnection, query: FeedQuery) -> Page:
    # A stable order of branches keeps the statement text, and so its prepared plan, the same.
    types = tuple(name for name in OUTPUT_TYPES if name in query.types)
    cur = await conn.execute(feed_sql(types, query.filter_key()), query.params())
    return page_from_row(await cur.fetchone())
