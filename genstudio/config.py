"""Settings, read from the environment (and a `.env` file in the working directory)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    @property
    def embedded_pgdata(self) -> Path:
        return self.data_dir / "postgres"


@lru_cache
def get_settings() -> Settings:
    return Settings()
