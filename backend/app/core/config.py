"""Application settings, read from the environment and an optional backend/.env."""

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self

from dotenv import dotenv_values
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

ENV_FILE = Path(__file__).resolve().parents[2] / ".env"

_URL_SCHEMES = {"postgresql", "postgres", "postgresql+asyncpg"}

# Passwords that ship in examples and compose defaults; a production deployment must not use them.
# (No password at all is fine: peer, certificate or .pgpass authentication supply none in the URL.)
_WELL_KNOWN_PASSWORDS = {"postgres", "password", "changeme", "secret", "admin", "lifebalance"}

Seconds = Annotated[float, Field(gt=0)]
Environment = Literal["development", "test", "production"]


def normalize_database_url(value: str) -> URL:
    """Parse a PostgreSQL URL in any of its usual spellings and pin the asyncpg driver."""
    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError("is not a valid URL, expected postgresql://user:password@host:5432/dbname") from None
    if url.drivername not in _URL_SCHEMES:
        raise ValueError(
            f"scheme {url.drivername}:// is not supported, use postgresql://, postgres:// or postgresql+asyncpg://"
        )
    if not url.database:
        raise ValueError("names no database, expected postgresql://user:password@host:5432/dbname")
    return url.set(drivername="postgresql+asyncpg")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=ENV_FILE, env_file_encoding="utf-8", extra="ignore")

    environment: Environment = "development"
    database_url: str

    # asyncpg waits 60 s to connect and SQLAlchemy 30 s for a pooled connection by default:
    # far longer than any caller will wait, so both are bounded here. A first connection to a
    # database 300 ms away takes about 4.5 s (TLS offer, SCRAM, the driver's set-up queries).
    db_connect_timeout: Seconds = 10.0
    db_pool_timeout: Seconds = 5.0
    db_statement_timeout: Seconds = 30.0
    db_pool_size: Annotated[int, Field(ge=1)] = 5
    db_max_overflow: Annotated[int, Field(ge=0)] = 5

    # The longest a /health probe waits for the database.
    health_timeout: Seconds = 1.0
    # How long a check's result answers further probes, so a burst costs one query.
    health_cache_ttl: Annotated[float, Field(ge=0, le=1)] = 1.0

    # On SIGTERM, how long the server goes on serving while /health answers 503, so that a load
    # balancer stops sending before it stops listening (app/core/drain.py). The runtime image sets 5.
    drain_period: Annotated[float, Field(ge=0)] = 0.0

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # One JSON object a line, for a log collector, by default in production; readable text otherwise.
    log_format: Literal["text", "json"] = Field(
        default_factory=lambda data: "json" if data["environment"] == "production" else "text"
    )

    @field_validator("database_url")
    @classmethod
    def _normalize_database_url(cls, value: str) -> str:
        return normalize_database_url(value).render_as_string(hide_password=False)

    @model_validator(mode="after")
    def _refuse_development_defaults_in_production(self) -> Self:
        """Production refuses what only development may use: checked once every field is read."""
        if self.environment != "production":
            return self
        if (make_url(self.database_url).password or "").lower() in _WELL_KNOWN_PASSWORDS:
            raise ValueError("DATABASE_URL uses a well-known default password, which is refused in production")
        return self

    @property
    def masked_database_url(self) -> str:
        """The database URL with its password hidden, for logs."""
        return make_url(self.database_url).render_as_string(hide_password=True)


class SettingsError(SystemExit):
    """Invalid configuration: exits with one readable line instead of a traceback."""


# Besides setting it, the way to do without a required variable.
_WITHOUT = {
    "DATABASE_URL": "or use `invoke migrate` and `invoke serve`, which start an embedded PostgreSQL without it",
}


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad variable and what is wrong with it."""
    problems = []
    for item in error.errors():
        if item["type"] == "default_factory_not_called":
            continue  # a default derived from a setting that is wrong itself, and is named for it
        name = "_".join(str(part) for part in item["loc"]).upper()
        message = item["msg"].removeprefix("Value error, ")
        if not name:  # a check of the settings together, whose message names the variables
            problems.append(message)
        elif item["type"] == "missing":
            problems.append(f"{name} is not set: set it" + (f", {_WITHOUT[name]}" if name in _WITHOUT else ""))
        else:
            problems.append(f"{name} {message}" if item["type"] == "value_error" else f"{name}: {message}")
    return "Invalid configuration: " + "; ".join(problems) + " (see backend/.env.example)"


def configured(name: str) -> str | None:
    """A variable as the settings read it: from the environment, else from backend/.env."""
    return os.environ.get(name) or dotenv_values(ENV_FILE).get(name)


@lru_cache
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(describe_validation_error(error)) from None
