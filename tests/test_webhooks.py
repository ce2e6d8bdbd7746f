"""Webhooks over real HTTP: registration rules, Standard Webhooks signatures checked by the
`standardwebhooks` library's own verifier, retries with backoff recorded attempt by attempt,
a worker killed mid-delivery, and addresses refused at registration and at delivery."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import psycopg
import pytest
from standardwebhooks import Webhook

from genstudio.db.pool import Database
from genstudio.events.webhooks import WebhookSender
from tests.api_support import COMPLETIONS, PAYLOADS, add_user, make_settings
from tests.events_support import live_api, new_job, sql, start_genstudio  # noqa: F401
from tests.webhook_receiver import Receiver


@pytest.fixture
def live_settings(tmp_path):
    return make_settings(tmp_path, run_background=True, webhook_allow_private=True,
                         webhook_retry_schedule="0.3,0.3,0.3", webhook_poll_seconds=0.1, webhook_timeout_seconds=5,
                         event_prune_interval_seconds=3600)


async def register(live_api, user, url: str, events: list[str]) -> dict:
    response = await live_api.client.post("/api/webhooks", json={"url": url, "events": events}, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()["webhook"]


async def wait_for_delivery(live_api, user, webhook_id: str, state: str, count: int = 1, timeout: float = 20) -> list:
    deadline = time.monotonic() + timeout
    while True:
        response = await live_api.client.get(f"/api/webhooks/{webhook_id}/deliveries", headers=user.headers)
        deliveries = response.json()["deliveries"]
        if sum(d["state"] == state for d in deliveries) >= count:
            return deliveries
        assert time.monotonic() < deadline, deliveries
        await asyncio.sleep(0.1)


async def test_register_list_and_delete(live_api):
    alice, bob = live_api.user("alice"), live_api.user("bob")
    webhook = await register(live_api, alice, "https://93.184.215.14/hook", ["completed", "failed"])
    assert webhook["secret"].startswith("whsec_") and webhook["events"] == ["completed", "failed"]
    listed = (await live_api.client.get("/api/webhooks", headers=alice.headers)).json()["webhooks"]
    assert listed == [{k: v for k, v in webhook.items() if k != "secret"}]  # the secret is shown once
    assert (await live_api.client.get("/api/webhooks", headers=bob.headers)).json()["webhooks"] == []
    for method, path in (("DELETE", ""), ("GET", "/deliveries")):
        other = await live_api.client.request(method, f"/api/webhooks/{webhook['id']}{path}", headers=bob.headers)
        assert other.status_code == 404 and other.json()["success"] is False
    deleted = await live_api.client.delete(f"/api/webhooks/{webhook['id']}", headers=alice.headers)
    assert deleted.json() == {"success": True, "deleted": webhook["id"]}
    assert (await live_api.client.get("/api/webhooks", headers=alice.headers)).json()["webhooks"] == []
    bad = await live_api.client.post("/api/webhooks", json={"url": "https://93.184.215.14/", "events": ["finished"]},
                                     headers=alice.headers)
    assert bad.status_code == 422
    bad = await live_api.client.post("/api/webhooks", json={"url": "https://93.184.215.14/", "events": []},
                                     headers=alice.headers)
    assert bad.status_code == 422
    assert (await live_api.client.post("/api/webhooks", json={"url": "x", "events": ["created"]})).status_code == 401


@pytest.mark.parametrize("url, reason", [
    ("http://93.184.215.14/hook", "plain http"),
    ("https://127.0.0.1/hook", "private, loopback"),
    ("https://localhost:8443/hook", "private, loopback"),
    ("https://10.1.2.3/hook", "private, loopback"),
    ("https://169.254.169.254/latest/meta-data", "private, loopback"),
    ("https://[::1]/hook", "private, loopback"),
    ("https://[::ffff:192.168.0.1]/hook", "private, loopback"),
    ("https://user:pw@93.184.215.14/hook", "user name or password"),
    ("ftp://93.184.215.14/hook", "https://"),
])
async def test_private_addresses_and_plain_http_are_refused_unless_allowed(db_url, tmp_path, url, reason):
    from genstudio.api.app import create_app
    from tests.api_support import ServerThread

    alice = add_user(db_url, "alice@example.com")
    with ServerThread(create_app(db_url, make_settings(tmp_path, run_background=False))) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            response = await client.post("/api/webhooks", json={"url": url, "events": ["created"]},
                                         headers=alice.headers)
    assert response.status_code == 422 and reason in response.json()["error"]
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM genstudio.webhooks").fetchone() == (0,)


async def test_deliveries_are_signed_and_verify_with_the_standard_webhooks_library(live_api):
    alice, bob = live_api.user("alice"), live_api.user("bob")
    with Receiver() as receiver:
        webhook = await register(live_api, alice, receiver.url, ["created", "completed"])
        job = (await live_api.client.post("/api/image-jobs", json=PAYLOADS["image"](), headers=alice.headers)).json()["image_job"]
        await live_api.client.put(f"/api/image-jobs/{job['id']}", json={"progress": 30}, headers=alice.headers)  # not wanted
        await live_api.client.post("/api/image-jobs", json=PAYLOADS["image"](), headers=bob.headers)  # not alice's
        await live_api.client.put(f"/api/image-jobs/{job['id']}/complete", json=COMPLETIONS["image"], headers=alice.headers)
        requests = receiver.wait_for(2)
        await asyncio.sleep(0.5)
    assert len(receiver.requests) == 2
    verifier = Webhook(webhook["secret"])
    # Deliveries are sent concurrently, in no promised order: receivers order by event_id.
    payloads = sorted((verifier.verify(r.body, r.headers) for r in requests), key=lambda p: p["data"]["event_id"])
    requests = sorted(requests, key=lambda r: json.loads(r.body)["data"]["event_id"])
    assert [p["type"] for p in payloads] == ["job.created", "job.completed"]
    final = payloads[1]["data"]
    current = (await live_api.client.get(f"/api/image-jobs/{job['id']}", headers=alice.headers)).json()["image_job"]
    assert final["job"] == current and final["job_id"] == job["id"] and final["type"] == "image"
    assert final["changes"]["status"] == "completed"
    assert requests[0].headers["content-type"] == "application/json"
    assert len({r.headers["webhook-id"] for r in requests}) == 2
    # A forged body does not verify.
    from standardwebhooks.webhooks import WebhookVerificationError
    with pytest.raises(WebhookVerificationError):
        verifier.verify(requests[1].body.replace(b"completed", b"failed"), requests[1].headers)
    deliveries = await wait_for_delivery(live_api, alice, webhook["id"], "succeeded", 2)
    assert [d["kind"] for d in deliveries] == ["completed", "created"]
    assert {d["id"] for d in deliveries} == {r.headers["webhook-id"] for r in requests}


async def test_a_receiver_failing_twice_gets_one_successful_delivery_after_retries(live_api):
    alice = live_api.user("alice")
    with Receiver(statuses=[500, 503]) as receiver:
        webhook = await register(live_api, alice, receiver.url, ["created"])
        new_job(live_api.db_url, alice)
        deliveries = await wait_for_delivery(live_api, alice, webhook["id"], "succeeded")
        await asyncio.sleep(0.8)  # long enough for a wrongly scheduled extra retry
    assert len(deliveries) == 1
    delivery = deliveries[0]
    assert delivery["attempts"] == 3 and delivery["last_status_code"] == 200 and delivery["next_attempt_at"] is None
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 503, 200]
    assert [a["error"] for a in delivery["attempt_log"]] == ["HTTP 500", "HTTP 503", None]
    assert all(a["latency_ms"] >= 0 for a in delivery["attempt_log"])
    assert len(receiver.requests) == 3
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1  # one message, deduplicable
    assert len({r.body for r in receiver.requests}) == 1
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:])]
    assert all(gap >= 0.25 for gap in gaps), gaps  # the backoff schedule was waited out


async def test_a_delivery_that_never_succeeds_fails_when_the_schedule_runs_out(live_api):
    alice = live_api.user("alice")
    with Receiver(statuses=[500] * 10) as receiver:
        webhook = await register(live_api, alice, receiver.url, ["created"])
        new_job(live_api.db_url, alice)
        deliveries = await wait_for_delivery(live_api, alice, webhook["id"], "failed")
    assert deliveries[0]["attempts"] == 4 and len(receiver.requests) == 4  # first try + 3 retries


async def test_a_worker_killed_mid_delivery_leaves_it_to_the_next_worker(db_url, tmp_path):
    alice = add_user(db_url, "alice@example.com")
    env = {"GENSTUDIO_WEBHOOK_ALLOW_PRIVATE": "true", "GENSTUDIO_WEBHOOK_TIMEOUT_SECONDS": "1.5",
           "GENSTUDIO_WEBHOOK_POLL_SECONDS": "0.1", "GENSTUDIO_WEBHOOK_RETRY_SCHEDULE": "0.2"}
    with Receiver(hang_first_seconds=30) as receiver:
        secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        sql(db_url, "INSERT INTO genstudio.webhooks (user_id, url, events, secret) VALUES (%s, %s, %s, %s)",
            (alice.id, receiver.url, ["created"], secret))
        worker = start_genstudio(["worker", "--no-migrate"], db_url, tmp_path / "w1", **env)
        try:
            new_job(db_url, alice)
            receiver.wait_for(1)  # the worker is in the middle of the delivery...
            worker.send_signal(signal.SIGKILL)  # ...and dies
            worker.wait(timeout=10)
        finally:
            worker.kill()
        pending = sql(db_url, "SELECT state, attempts, lease_owner IS NOT NULL FROM genstudio.webhook_deliveries")
        assert pending == [("pending", 0, True)]
        restarted = start_genstudio(["worker", "--no-migrate"], db_url, tmp_path / "w2", **env)
        try:
            requests = receiver.wait_for(2, timeout=30)  # once the dead worker's lease (2 x timeout) ran out
            deadline = time.monotonic() + 10
            while sql(db_url, "SELECT state FROM genstudio.webhook_deliveries") != [("succeeded",)]:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        finally:
            restarted.send_signal(signal.SIGTERM)
            restarted.wait(timeout=20)
    assert requests[0].headers["webhook-id"] == requests[1].headers["webhook-id"]
    Webhook(secret).verify(requests[1].body, requests[1].headers)
    assert sql(db_url, "SELECT status_code FROM genstudio.webhook_attempts") == [(200,)]


async def test_addresses_are_checked_again_at_delivery_and_redirects_are_not_followed(db_url):
    db = Database(db_url, min_size=1, max_size=2)
    strict = WebhookSender(db, retry_delays=(1,), timeout_seconds=5, allow_private=False)
    lenient = WebhookSender(db, retry_delays=(1,), timeout_seconds=5, allow_private=True)
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    try:
        with Receiver(statuses=[302], redirect_to="http://127.0.0.1:9/elsewhere") as receiver:
            # Registered while private addresses were allowed (or the name resolved elsewhere then):
            refused = await strict.attempt(receiver.url.replace("http:", "https:"), secret, "msg_1", "{}")
            assert refused.status_code is None and "private, loopback" in refused.error
            assert receiver.requests == []
            redirected = await lenient.attempt(receiver.url, secret, "msg_2", "{}")
            assert redirected.status_code == 302 and "redirects are not followed" in redirected.error
            assert len(receiver.requests) == 1
    finally:
        await strict.close()
        await lenient.close()


async def test_a_webhook_deleted_during_a_delivery_ends_it_quietly(db_url):
    from genstudio.events.webhooks import enqueue_new_events

    alice = add_user(db_url, "alice@example.com")
    db = Database(db_url, min_size=1, max_size=4)
    await db.open()
    sender = WebhookSender(db, retry_delays=(1,), timeout_seconds=5, allow_private=True)
    try:
        with Receiver(hang_first_seconds=1.0) as receiver:
            webhook_id = sql(db_url, "INSERT INTO genstudio.webhooks (user_id, url, events, secret) "
                                     "VALUES (%s, %s, %s, %s) RETURNING id",
                             (alice.id, receiver.url, ["created"], "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))[0][0]
            new_job(db_url, alice)
            assert await enqueue_new_events(db) == 1
            sending = asyncio.create_task(sender.send_due())
            await asyncio.to_thread(receiver.wait_for, 1)
            sql(db_url, "DELETE FROM genstudio.webhooks WHERE id = %s", (webhook_id,))
            assert await sending == 1
    finally:
        await sender.close()
        await db.close()
    assert sql(db_url, "SELECT count(*) FROM genstudio.webhook_deliveries") == [(0,)]
    assert sql(db_url, "SELECT count(*) FROM genstudio.webhook_attempts") == [(0,)]
