"""`/api/webhooks`: register a URL for your jobs' events, list, delete, see its deliveries."""

# No `from __future__ import annotations`: FastAPI reads the annotations.

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from genstudio.api.jobs import Claims, json_response
from genstudio.events.log import KINDS
from genstudio.events.webhooks import WebhookStore

Kind = Literal[KINDS]  # type: ignore[valid-type]
WebhookId = Annotated[uuid.UUID, Path(description="The webhook's id.")]


class CreateWebhookPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2_000, description="HTTPS URL of a public address that receives the events.")
    events: list[Kind] = Field(min_length=1, max_length=len(KINDS),
                               description="Event kinds to deliver, e.g. `[\"completed\", \"failed\"]`.")


class Webhook(BaseModel):
    id: uuid.UUID
    url: str
    events: list[Kind]
    created_at: datetime


class CreatedWebhook(Webhook):
    secret: str = Field(description="Signing secret (`whsec_…`), shown only in this answer.")


class WebhookResponse(BaseModel):
    success: bool = True
    webhook: CreatedWebhook


class WebhookListResponse(BaseModel):
    success: bool = True
    webhooks: list[Webhook]


class DeliveryAttempt(BaseModel):
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None


class Delivery(BaseModel):
    id: str = Field(description="The message id, sent as the `webhook-id` header.")
    event_id: int
    kind: Kind
    state: Literal["pending", "succeeded", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    completed_at: datetime | None
    attempt_log: list[DeliveryAttempt]


class DeliveryListResponse(BaseModel):
    success: bool = True
    deliveries: list[Delivery]


router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])


def store(request: Request) -> WebhookStore:
    return WebhookStore(request.app.state.settings.webhook_allow_private)


@router.post("", status_code=201, summary="Register a webhook for your jobs' events",
             responses={201: {"model": WebhookResponse}, 409: {"description": "You have the most webhooks allowed"}})
async def create(payload: CreateWebhookPayload, request: Request, claims: Claims) -> Response:
    events = list(dict.fromkeys(payload.events))
    async with request.app.state.db.as_user(claims) as conn:
        webhook, secret = await store(request).register(conn, payload.url, events)
    body = webhook[:-1] + ',"secret":"' + secret + '"}'
    return json_response(b'{"success":true,"webhook":' + body.encode() + b"}", 201)


@router.get("", summary="Your webhooks", responses={200: {"model": WebhookListResponse}})
async def list_webhooks(request: Request, claims: Claims) -> Response:
    async with request.app.state.db.as_user(claims) as conn:
        webhooks = await store(request).list(conn)
    return json_response(b'{"success":true,"webhooks":' + webhooks.encode() + b"}")


@router.delete("/{webhook_id}", summary="Delete a webhook (its pending deliveries go with it)",
               responses={200: {"description": "Deleted"}})
async def delete(request: Request, claims: Claims, webhook_id: WebhookId) -> Response:
    async with request.app.state.db.as_user(claims) as conn:
        await store(request).delete(conn, webhook_id)
    return json_response(b'{"success":true,"deleted":"' + str(webhook_id).encode() + b'"}')


@router.get("/{webhook_id}/deliveries", summary="A webhook's deliveries, newest first, with every attempt",
            responses={200: {"model": DeliveryListResponse}})
async def deliveries(request: Request, claims: Claims, webhook_id: WebhookId,
                     limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Response:
    async with request.app.state.db.as_user(claims) as conn:
        body = await store(request).deliveries(conn, webhook_id, limit)
    return json_response(b'{"success":true,"deliveries":' + body.encode() + b"}")
