"""The feed and list statements read their indexes, whatever the statistics say.

Right after a bulk insert, before autovacuum has analysed anything, a plan chosen on guesses
once sorted every visible row (and built its JSON) to cut one page. These tests bulk-load
fresh tables that are never analysed, in a studio where each user sees little (1% of the jobs
are shared, 1% ownerless), and check each statement's actual plan, custom and generic (what a
prepared statement ends up with): no sequential scan, no sort of more than the streams'
candidates, and a bound on the index entries and rows read that does not grow with the
table or with the depth of the page.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Any

import psycopg
import pytest

from genstudio.db.pool import SET_PAGE_READ_CONTEXT
from genstudio.jobs.cursor import Cursor
from genstudio.jobs.feed import FeedQuery, feed_statement
from genstudio.jobs.output_types import IMAGE, OUTPUT_TYPES
from genstudio.jobs.service import ESTIMATED_COUNT_CAP, STREAMS, JobService, PageQuery

ROWS_PER_TABLE = 30_000
USERS = 200
LIMIT = 50
TABLES = [t.table for t in OUTPUT_TYPES.values()]

FILL = """
INSERT INTO public.{table} (user_id, workflow_name, status, created_at, comfy_url, visibility)
SELECT CASE WHEN g %% 89 = 7 THEN NULL ELSE u.ids[1 + (g * 7919) %% array_length(u.ids, 1)] END,
       (ARRAY['wf-a', 'wf-b', 'wf-c', 'wf-d'])[1 + g %% 4],
       (ARRAY['completed', 'failed', 'pending'])[1 + g %% 3],
       now() - g * interval '1 minute',
       'http://comfy.local:8188',
       CASE WHEN g %% 97 = 3 THEN 'shared' ELSE 'private' END
FROM generate_series(1, %(n)s) g, (SELECT array_agg(id ORDER BY id) AS ids FROM auth.users) u
"""


@pytest.fixture(scope="module")
def loaded(pg_cluster, migrated_template):
    """A database whose job tables were bulk-loaded and never analysed."""
    name = pg_cluster.create_database(template=migrated_template)
    conninfo = pg_cluster.conninfo(name)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(f"ALTER TABLE public.{table} SET (autovacuum_enabled = false)")
        conn.execute("INSERT INTO auth.users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, %s) g",
                     (USERS,))
        for table in TABLES:
            conn.execute(FILL.replace("{table}", table), {"n": ROWS_PER_TABLE})
        never_analysed = conn.execute(
            "SELECT bool_and(last_analyze IS NULL AND last_autoanalyze IS NULL) FROM pg_stat_user_tables "
            "WHERE relname = ANY(%s)", (TABLES,)).fetchone()[0]
        assert never_analysed
        user = conn.execute("SELECT id FROM auth.users ORDER BY id OFFSET 17 LIMIT 1").fetchone()[0]
        deep = conn.execute(
            "SELECT created_at, id FROM public.image_jobs ORDER BY created_at DESC, id DESC OFFSET 20000 LIMIT 1"
        ).fetchone()
    yield conninfo, user, Cursor(*deep)
    pg_cluster.drop_database(name)


def explain(conninfo: str, user: uuid.UUID, statement: str, params: dict[str, Any], *, generic: bool) -> dict:
    """EXPLAIN ANALYZE of the statement as the API runs it: role `authenticated`, the user's
    claims; with `generic`, as a prepared statement's generic plan."""
    claims = json.dumps({"sub": str(user), "role": "authenticated"})
    with psycopg.connect(conninfo) as conn:
        conn.execute(SET_PAGE_READ_CONTEXT, {"role": "authenticated", "claims": claims})
        if not generic:
            return conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params).fetchone()[0][0]["Plan"]
        names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", statement)))
        numbered = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", statement).replace("%%", "%")
        conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        types = ", ".join(PG_TYPES[type(params[n])] for n in names)
        conn.execute(f"PREPARE page ({types}) AS {numbered}")
        arguments = ", ".join(["%s"] * len(names))
        cur = psycopg.ClientCursor(conn)
        return cur.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE page({arguments})",
                           [params[n] for n in names]).fetchone()[0][0]["Plan"]


PG_TYPES = {int: "int8", str: "text", type(None): "int8", uuid.UUID: "uuid", datetime: "timestamptz"}


def nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def rows_read(plan: dict) -> int:
    """Index entries and heap rows the scans of job tables returned or threw away."""
    return sum((n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0)
                + n.get("Rows Removed by Index Recheck", 0)) * n.get("Actual Loops", 1)
               for n in nodes(plan) if n.get("Relation Name") in TABLES)


def assert_bounded(plan: dict, streams: int, extra_rows: int = 0) -> None:
    job_scans = [n for n in nodes(plan) if n.get("Relation Name") in TABLES]
    assert job_scans and not [n for n in job_scans if n["Node Type"] == "Seq Scan"], plan
    candidates = streams * (LIMIT + 1)
    for sort in (n for n in nodes(plan) if n["Node Type"] in ("Sort", "Incremental Sort")):
        assert sort["Actual Rows"] * sort.get("Actual Loops", 1) <= candidates, sort
    # Each stream's index entries, the page fetched again by key, and the CTE scans over them.
    assert rows_read(plan) <= 6 * candidates + extra_rows, rows_read(plan)


FEEDS = [("mine", None, None), ("all", None, None), ("all", "wf-b", None), ("mine", None, "pending")]


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
@pytest.mark.parametrize("deep", [False, True], ids=["first-page", "deep"])
@pytest.mark.parametrize("scope,workflow,status", FEEDS)
def test_feed_reads_its_indexes_on_unanalysed_tables(loaded, scope, workflow, status, deep, generic):
    conninfo, user, cursor = loaded
    query = FeedQuery(limit=LIMIT, scope=scope, workflow_name=workflow, status=status, cursor=cursor if deep else None)
    plan = explain(conninfo, user, *feed_statement(query), generic=generic)
    # With a filter the public stream also reads (and drops) jobs of other workflows/statuses.
    filtered = workflow is not None or status is not None
    assert_bounded(plan, streams=3 * len(STREAMS[scope]), extra_rows=(4 * 3 * (LIMIT + 1) * 4 if filtered else 0))


LISTS = [("mine", None, None), ("all", None, None), ("mine", "wf-c", None), ("all", None, "failed")]


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
@pytest.mark.parametrize("deep", [False, True], ids=["first-page", "deep"])
@pytest.mark.parametrize("scope,workflow,status", LISTS)
def test_list_reads_its_indexes_on_unanalysed_tables(loaded, scope, workflow, status, deep, generic):
    conninfo, user, cursor = loaded
    query = PageQuery(limit=LIMIT, scope=scope, workflow_name=workflow, status=status,
                      cursor=cursor if deep else None, count="planned")
    plan = explain(conninfo, user, *JobService(IMAGE).list_statement(query), generic=generic)
    filtered = status is not None or (workflow is not None and scope == "all")
    assert_bounded(plan, streams=len(STREAMS[scope]), extra_rows=(3 * 2 * (LIMIT + 1) * 3 if filtered else 0))


@pytest.mark.parametrize("scope", ["mine", "all"])
def test_estimated_total_count_reads_at_most_its_cap(loaded, scope):
    conninfo, user, _ = loaded
    query = PageQuery(limit=LIMIT, scope=scope, count="estimated")
    plan = explain(conninfo, user, *JobService(IMAGE).list_statement(query), generic=False)
    streams = len(STREAMS[scope])
    assert_bounded(plan, streams=streams, extra_rows=2 * streams * (ESTIMATED_COUNT_CAP + 1))
