"""Settings, read from the environment (and a `.env` file in the working directory)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import platformdirs
from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# As root, the embedded PostgreSQL runs as a service account that must be able to reach its
# data; root's home is private, so root keeps it where system services keep theirs.
ROOT_DATA_DIR = Path("/var/lib/genstudio")
# A data directory with less free space than this cannot hold a database.
MIN_FREE_BYTES = 64 * 1024 * 1024
# GENSTUDIO_* variables read outside Settings (by the test suite), so not unknown ones.
OTHER_VARIABLES = frozenset({"GENSTUDIO_TEST_DATABASE_URL", "GENSTUDIO_TEST_COMFYUI_URL"})


def default_data_dir() -> Path:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return ROOT_DATA_DIR
    return Path(platformdirs.user_data_dir("genstudio"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # No DATABASE_URL means: run an embedded PostgreSQL in `data_dir`.
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    data_dir: Path = Field(
        default_factory=default_data_dir,
        validation_alias="GENSTUDIO_DATA_DIR",
    )
    host: str = Field(default="127.0.0.1", validation_alias="GENSTUDIO_HOST")
    port: int = Field(default=8000, ge=1, le=65535, validation_alias="GENSTUDIO_PORT")
    # More than one process lets the API use more than one core; login rate limits are then
    # counted per process.
    workers: int = Field(default=1, ge=1, validation_alias="GENSTUDIO_WORKERS")
    pool_min_size: int = Field(default=2, ge=0, validation_alias="GENSTUDIO_POOL_MIN")
    pool_max_size: int = Field(default=16, ge=1, validation_alias="GENSTUDIO_POOL_MAX")
    # How long a request waits for a database connection before it gets a 503.
    pool_timeout_seconds: float = Field(default=5.0, gt=0, validation_alias="GENSTUDIO_POOL_TIMEOUT")

    # Supabase's project JWT secret signs its access tokens; local accounts use the same one.
    jwt_secret: str | None = Field(
        default=None, validation_alias=AliasChoices("SUPABASE_JWT_SECRET", "GENSTUDIO_JWT_SECRET")
    )
    jwks_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SUPABASE_JWKS_URL", "GENSTUDIO_JWKS_URL")
    )
    jwt_audience: str = Field(default="authenticated", validation_alias="GENSTUDIO_JWT_AUDIENCE")
    access_token_ttl_seconds: int = Field(default=3600, gt=0, validation_alias="GENSTUDIO_TOKEN_TTL")
    # `limits` notation; attempts count whether or not they succeed.
    login_limit_per_address: str = Field(default="20/minute", validation_alias="GENSTUDIO_LOGIN_LIMIT_PER_ADDRESS")
    login_limit_per_account: str = Field(default="10/minute", validation_alias="GENSTUDIO_LOGIN_LIMIT_PER_ACCOUNT")
    max_body_bytes: int = Field(default=1024 * 1024, gt=0, validation_alias="GENSTUDIO_MAX_BODY_BYTES")
    # For local accounts (`genstudio user add|passwd`); Supabase enforces its own.
    min_password_length: int = Field(default=12, ge=1, validation_alias="GENSTUDIO_MIN_PASSWORD_LENGTH")
    # Request line plus headers; larger requests get 431 (`serve` stops reading them early).
    # Room for a Supabase token with custom claims in both the Authorization header and the
    # session cookie, far below what would cost memory or parsing time.
    max_header_bytes: int = Field(default=32 * 1024, ge=4096, validation_alias="GENSTUDIO_MAX_HEADER_BYTES")
    # Addresses (or networks, e.g. 10.0.0.0/8) of reverse proxies whose X-Forwarded-For and
    # X-Forwarded-Proto are believed; from anyone else they are ignored. Empty: trust nobody,
    # so a caller cannot pick the address its login attempts are counted against.
    trusted_proxies: str = Field(default="", validation_alias="GENSTUDIO_TRUSTED_PROXIES")

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

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: str) -> str:
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        for entry in entries:
            if entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/8)") from None
        return ",".join(entries)

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

    @field_validator("login_limit_per_address", "login_limit_per_account")
    @classmethod
    def _is_rate_limit(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate limit such as '20/minute' or '100/hour'") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _is_postgresql(cls, value: str | None) -> str | None:
        if not value:
            return None
        from psycopg.conninfo import conninfo_to_dict

        scheme = value.split("://", 1)[0].lower() if "://" in value else None
        if scheme not in (None, "postgres", "postgresql"):
            raise ValueError(f"a {scheme}:// URL is not a PostgreSQL one (postgresql://user:password@host:port/db)")
        try:
            conninfo_to_dict(value)
        except Exception:  # psycopg.ProgrammingError; its message would repeat the password
            raise ValueError("not a PostgreSQL connection string (postgresql://user:password@host:port/db)") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.pool_min_size > self.pool_max_size:
            raise ValueError(f"GENSTUDIO_POOL_MIN ({self.pool_min_size}) is larger than GENSTUDIO_POOL_MAX "
                             f"({self.pool_max_size})")
        if self.database_url is None or self.jwt_secret is None:  # the data directory will be written
            problem = data_dir_problem(self.data_dir)
            if problem:
                raise ValueError(f"GENSTUDIO_DATA_DIR {problem}")
        return self

    @property
    def embedded_pgdata(self) -> Path:
        return self.data_dir / "postgres"


def data_dir_problem(data_dir: Path) -> str | None:
    """Why genstudio could not keep its files in `data_dir` (which may not exist yet), or None."""
    existing = next(p for p in [data_dir, *data_dir.parents] if p.exists() or p == p.parent)
    if not existing.is_dir():
        return f"{data_dir} cannot be used: {existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{data_dir} cannot be used: {existing} is not writable by this user"
    stats = os.statvfs(existing)
    if stats.f_flag & os.ST_RDONLY:
        return f"{data_dir} cannot be used: {existing} is on a read-only file system"
    free = stats.f_bavail * stats.f_frsize
    if free < MIN_FREE_BYTES:
        return f"{data_dir} cannot be used: the disk holding {existing} is full ({free // 1024 // 1024} MiB free)"
    return None


def describe_settings_error(exc) -> str:
    """A pydantic ValidationError of Settings as one line naming each variable."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        where = ".".join(map(str, error["loc"]))
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def known_variables() -> set[str]:
    """Every environment variable genstudio reads."""
    names = set(OTHER_VARIABLES)
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
    return names


def unknown_variable_warnings(environ: Mapping[str, str], dotenv: Path = Path(".env")) -> list[str]:
    """One line per GENSTUDIO_* variable (in the environment or .env) that genstudio does not
    read, naming the closest one it does: a typo there is otherwise silently ignored."""
    from dotenv import dotenv_values

    found = {name: "the environment" for name in environ}
    if dotenv.is_file():
        found |= {name: str(dotenv) for name in dotenv_values(dotenv) if name not in found}
    known = known_variables()
    warnings = []
    for name, where in sorted(found.items()):
        if name.upper().startswith("GENSTUDIO_") and name not in known:
            close = difflib.get_close_matches(name.upper(), sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            warnings.append(f"unknown setting {name} in {where} is ignored{hint}")
    return warnings


@lru_cache
def get_settings() -> Settings:
    return Settings()
