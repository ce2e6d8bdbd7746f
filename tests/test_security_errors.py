"""Issue 11, item 4: no database internals reach the caller. A user deleted since their token was
issued is told so (401); a NUL character in a filter is a 400 naming the parameter; whatever
else PostgreSQL refuses is described in the caller's terms, never in the database's words.
"""

from __future__ import annotations

import psycopg
import pytest

from genstudio.api.errors import describe_database_refusal
from tests.api_support import COMPLETIONS, PAYLOADS, image_payload, table_snapshot
from tests.security_support import api  # noqa: F401  (fixture)


async def test_a_deleted_users_token_is_told_the_account_is_gone(api):
    alice = api.user("alice")
    with psycopg.connect(api.db_url) as conn:
        conn.execute("DELETE FROM auth.users WHERE id = %s", (alice.id,))
    for kind, payload in PAYLOADS.items():
        r = await api.client.post(f"/api/{kind}-jobs", json=payload(), headers=alice.headers)
        assert r.status_code == 401, r.text
        assert r.json() == {"success": False, "error": "your account no longer exists; sign in again"}
        assert r.headers["www-authenticate"] == "Bearer"
    assert table_snapshot(api.db_url) == []


@pytest.mark.parametrize("url,params,words", [
    ("/api/image-jobs", "workflow_name=img%00", "query parameter 'workflow_name'"),
    ("/api/video-jobs", "scope=mine&workflow_name=%00", "query parameter 'workflow_name'"),
    ("/api/feed", "workflow_name=a%00b", "query parameter 'workflow_name'"),
    ("/api/feed", "cursor=abc%00", "query parameter 'cursor'"),
    ("/api/feed", "types=image%00", "query parameter 'types'"),
    ("/api/feed", "x%00y=1", "query parameter 'xy'"),
    ("/api/text-jobs/by-comfy-id/abc%00def", "", "the URL path"),
])
async def test_a_nul_character_in_the_url_is_a_400_naming_where(api, url, params, words):
    alice = api.user("alice")
    r = await api.client.get(f"{url}?{params}" if params else url, headers=alice.headers)
    assert r.status_code == 400, r.text
    assert r.json() == {"success": False, "error": f"{words} must not contain the NUL character (%00)"}


async def test_a_nul_character_inside_json_fields_names_the_field(api):
    alice = api.user("alice")
    before = table_snapshot(api.db_url)
    r = await api.client.post("/api/image-jobs", json=image_payload(parameters={"seed": "1\x00"}), headers=alice.headers)
    assert r.status_code == 422 and "field 'parameters'" in r.json()["error"] and "NUL" in r.json()["error"], r.text
    r = await api.client.post("/api/image-jobs", json=image_payload(parameters={"k\x00": 1}), headers=alice.headers)
    assert r.status_code == 422 and "field 'parameters'" in r.json()["error"], r.text
    created = await api.client.post("/api/text-jobs", json=PAYLOADS["text"](), headers=alice.headers)
    job_id = created.json()["text_job"]["id"]
    before = table_snapshot(api.db_url)
    body = {**COMPLETIONS["text"], "output_data": {"tags": [{"name": "x\x00"}]}}
    r = await api.client.put(f"/api/text-jobs/{job_id}/complete", json=body, headers=alice.headers)
    assert r.status_code == 422 and "field 'output_data'" in r.json()["error"], r.text
    assert table_snapshot(api.db_url) == before


REFUSED_STATEMENTS = {
    "foreign key": ("INSERT INTO public.text_jobs (workflow_name, user_id) VALUES ('w', gen_random_uuid())", 422),
    "check": ("INSERT INTO public.text_jobs (workflow_name, status) VALUES ('w', 'exploded')", 422),
    "not null": ("INSERT INTO public.text_jobs (workflow_name) VALUES (NULL)", 422),
    "unique": ("INSERT INTO public.text_jobs (workflow_name, legacy_table, legacy_id) VALUES "
               "('w', 'datasets', 'a'), ('w', 'datasets', 'a')", 409),
    "NUL in jsonb": ("SELECT '{\"a\": \"\\u0000\"}'::jsonb", 422),
    "out of range": ("INSERT INTO public.image_jobs (workflow_name, comfy_url, width) VALUES ('w', 'u', 99999999999)", 422),
    "progress check": ("INSERT INTO public.image_jobs (workflow_name, comfy_url, progress) VALUES ('w', 'u', 101)", 422),
}


@pytest.mark.parametrize("case", sorted(REFUSED_STATEMENTS))
def test_database_refusals_are_described_without_the_databases_words(db_url, case):
    statement, status = REFUSED_STATEMENTS[case]
    with psycopg.connect(db_url) as conn, pytest.raises(psycopg.Error) as raised:
        conn.execute(statement)
    exc = raised.value
    assert isinstance(exc, (psycopg.errors.DataError, psycopg.errors.IntegrityError))
    got_status, message = describe_database_refusal(exc)
    assert got_status == status and message.endswith("nothing was written")
    for internal in (exc.diag.constraint_name, exc.diag.table_name, exc.diag.message_primary, "jobs", "fkey"):
        assert not internal or internal not in message, (internal, message)
