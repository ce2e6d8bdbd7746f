"""Settings, read from the environment (and a `.env` file in the working directory)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

import platformdirs
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # No DATABASE_URL means: run an embedded PostgreSQL in `data_dir`.
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("genstudio")),
        validation_alias="GENSTUDIO_DATA_DIR",
    )
    host: str = Field(default="127.0.0.1", validation_alias="GENSTUDIO_HOST")
    port: int = Field(default=8000, validation_alias="GENSTUDIO_PORT")
    # More than one process lets the API use more than one core; login rate limits are then
    # counted per process.
    workers: int = Field(default=1, ge=1, validation_alias="GENSTUDIO_WORKERS")
    pool_min_size: int = Field(default=2, validation_alias="GENSTUDIO_POOL_MIN")
    pool_max_size: int = Field(default=16, validation_alias="GENSTUDIO_POOL_MAX")

    # Supabase's project JWT secret signs its access tokens; local accounts use the same one.
    jwt_secret: str | None = Field(
        default=None, validation_alias=AliasChoices("SUPABASE_JWT_SECRET", "GENSTUDIO_JWT_SECRET")
    )
    jwks_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SUPABASE_JWKS_URL", "GENSTUDIO_JWKS_URL")
    )
    jwt_audience: str = Field(default="authenticated", validation_alias="GENSTUDIO_JWT_AUDIENCE")
    access_token_ttl_seconds: int = Field(default=3600, validation_alias="GENSTUDIO_TOKEN_TTL")
    # `limits` notation; attempts count whether or not they succeed.
    login_limit_per_address: str = Field(default="20/minute", validation_alias="GENSTUDIO_LOGIN_LIMIT_PER_ADDRESS")
    login_limit_per_account: str = Field(default="10/minute", validation_alias="GENSTUDIO_LOGIN_LIMIT_PER_ACCOUNT")
    max_body_bytes: int = Field(default=1024 * 1024, validation_alias="GENSTUDIO_MAX_BODY_BYTES")
    # Whether `serve` also runs the background services (see genstudio/background.py).
    run_background: bool = Field(default=True, validation_alias="GENSTUDIO_BACKGROUND")

    # ComfyUI runner (issue 7). The servers genstudio submits to and follows; the only hosts it
    # ever makes requests to.
    comfyui_urls: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="COMFYUI_URLS")
    # The studio's own workflow templates, beside the built-in ones (which it may override).
    workflows_dir: Path | None = Field(default=None, validation_alias="GENSTUDIO_WORKFLOWS_DIR")
    # Stored outputs, thumbnails and uploaded inputs; default: `<data dir>/storage`.
    storage_dir_setting: Path | None = Field(default=None, validation_alias="GENSTUDIO_STORAGE_DIR")
    # Bounds on uploaded input files (the template's own max size may be lower).
    upload_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1, validation_alias="GENSTUDIO_UPLOAD_MAX_BYTES")
    upload_max_pixels: int = Field(default=40_000_000, ge=1, validation_alias="GENSTUDIO_UPLOAD_MAX_PIXELS")
    # How long a run may wait for a usable server before it fails.
    dispatch_deadline_seconds: float = Field(default=3600.0, gt=0, validation_alias="GENSTUDIO_DISPATCH_DEADLINE")
    # How often the dispatcher re-checks every server's health, queue length and node types.
    health_check_seconds: float = Field(default=10.0, gt=0, validation_alias="GENSTUDIO_HEALTH_CHECK_INTERVAL")
    # Whether this process's background services include the dispatcher (a process may be
    # left to follow jobs only).
    run_dispatcher: bool = Field(default=True, validation_alias="GENSTUDIO_DISPATCHER")
    # How long a dispatcher holds a run while it uploads inputs and submits it.
    dispatch_lease_seconds: float = Field(default=60.0, gt=0, validation_alias="GENSTUDIO_DISPATCH_LEASE")
    # The client id genstudio submits prompts under; ComfyUI sends their progress to the
    # WebSocket that connects with it.
    comfy_client_id: str = Field(default="genstudio", min_length=1, max_length=200, validation_alias="GENSTUDIO_COMFY_CLIENT_ID")
    # Timeout of each request to a ComfyUI server.
    comfy_timeout_seconds: float = Field(default=30.0, gt=0, validation_alias="GENSTUDIO_COMFY_TIMEOUT")
    # Lifetime of signed `/files/...` URLs (for <img src> without a session cookie).
    file_url_ttl_seconds: int = Field(default=3600, ge=1, validation_alias="GENSTUDIO_FILE_URL_TTL")

    # ComfyUI monitor (genstudio/comfy/monitor.py).
    # Prompts clients submitted themselves send no messages to genstudio: checked this often.
    monitor_poll_seconds: float = Field(default=2.0, gt=0, validation_alias="GENSTUDIO_MONITOR_POLL_SECONDS")
    # Every followed prompt is checked against /queue and /history this often (besides after
    # every reconnect), in case a message was lost.
    monitor_reconcile_seconds: float = Field(default=30.0, gt=0, validation_alias="GENSTUDIO_MONITOR_RECONCILE_SECONDS")
    # The watchdog: a running job that reports nothing for this long fails (and is interrupted).
    monitor_stall_seconds: float = Field(default=1800.0, gt=0, validation_alias="GENSTUDIO_MONITOR_STALL_SECONDS")
    # A prompt missing from its server's queue and history is lost only once it is this old
    # (a client may record a job a moment before its POST reaches ComfyUI).
    monitor_lost_grace_seconds: float = Field(default=10.0, ge=0,
                                              validation_alias="GENSTUDIO_MONITOR_LOST_GRACE_SECONDS")
    # At most one progress write per job per this interval (and only on whole-percent changes).
    monitor_progress_interval_seconds: float = Field(default=0.25, ge=0,
                                                     validation_alias="GENSTUDIO_MONITOR_PROGRESS_INTERVAL")
    # How often a process that does not lead a server's monitor checks whether it may.
    monitor_leader_retry_seconds: float = Field(default=2.0, gt=0, validation_alias="GENSTUDIO_MONITOR_LEADER_RETRY")

    @field_validator("comfyui_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [u.strip().rstrip("/") for u in value.split(",") if u.strip()]
        return value

    @field_validator("comfyui_urls")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"COMFYUI_URLS: {url!r} is not an http(s) URL")
        return [u.rstrip("/") for u in urls]

    @property
    def storage_dir(self) -> Path:
        return self.storage_dir_setting or self.data_dir / "storage"

    # Job events (genstudio/events): how long the log keeps them, and live delivery.
    event_retention_days: float = Field(default=7.0, gt=0, validation_alias="GENSTUDIO_EVENT_RETENTION_DAYS")
    event_prune_interval_seconds: float = Field(default=600.0, gt=0,
                                                validation_alias="GENSTUDIO_EVENT_PRUNE_INTERVAL_SECONDS")
    # Comment lines on idle streams, so proxies do not close them.
    sse_heartbeat_seconds: float = Field(default=15.0, gt=0, validation_alias="GENSTUDIO_SSE_HEARTBEAT_SECONDS")
    # Events a stream may hold unsent before it is closed (the client then resumes from the log).
    sse_max_pending: int = Field(default=10_000, ge=1, validation_alias="GENSTUDIO_SSE_MAX_PENDING")
    # Webhooks: receivers on private or loopback addresses, or plain HTTP, only if allowed.
    webhook_allow_private: bool = Field(default=False, validation_alias="GENSTUDIO_WEBHOOK_ALLOW_PRIVATE")
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, validation_alias="GENSTUDIO_WEBHOOK_TIMEOUT_SECONDS")
    # Seconds to wait before each retry of a failed delivery; after the last, it has failed.
    # The default spreads 7 retries over about a day (5 s, 5 min, 30 min, 2 h, 5 h, 8 h, 8 h).
    webhook_retry_schedule: str = Field(default="5,300,1800,7200,18000,28800,28800",
                                        pattern=r"^\s*\d+(\.\d+)?(\s*,\s*\d+(\.\d+)?)*\s*$",
                                        validation_alias="GENSTUDIO_WEBHOOK_RETRY_SCHEDULE")
    webhook_poll_seconds: float = Field(default=1.0, gt=0, validation_alias="GENSTUDIO_WEBHOOK_POLL_SECONDS")
    webhook_concurrency: int = Field(default=16, ge=1, validation_alias="GENSTUDIO_WEBHOOK_CONCURRENCY")

    @property
    def webhook_retry_delays(self) -> tuple[float, ...]:
        return tuple(float(part) for part in self.webhook_retry_schedule.split(","))

    @property
    def event_retention_seconds(self) -> float:
        return self.event_retention_days * 86_400

    @property
    def embedded_pgdata(self) -> Path:
        return self.data_dir / "postgres"


@lru_cache
def get_settings() -> Settings:
    return Settings()
