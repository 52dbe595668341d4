"""Settings: accepted URL forms, and one readable line naming the variable when a value is wrong."""

import os

import pytest
from pydantic import ValidationError

from app.core.config import Settings, describe_validation_error
from tests import processes


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def error_line(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    with pytest.raises(ValidationError) as caught:
        load(monkeypatch, **env)
    return describe_validation_error(caught.value)


@pytest.mark.parametrize(
    "given",
    [
        "postgresql://app:pw@db.example:5432/lifebalance",
        "postgres://app:pw@db.example:5432/lifebalance",
        "postgresql+asyncpg://app:pw@db.example:5432/lifebalance",
    ],
)
def test_url_forms_all_use_asyncpg(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    settings = load(monkeypatch, DATABASE_URL=given)
    assert settings.database_url == "postgresql+asyncpg://app:pw@db.example:5432/lifebalance"
    assert settings.masked_database_url == "postgresql+asyncpg://app:***@db.example:5432/lifebalance"


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(monkeypatch, DATABASE_URL="postgresql://app:pw@localhost/lifebalance")
    assert settings.environment == "development"
    assert settings.health_timeout == 1.0
    assert 0 < settings.health_cache_ttl <= 1.0
    assert settings.db_connect_timeout < 60
    assert settings.db_pool_timeout < 30


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "DATABASE_URL is not set: set it, or use `invoke migrate` and `invoke serve`, which start an embedded"),
        ({"DATABASE_URL": "mysql://app:pw@localhost/db"}, "DATABASE_URL scheme mysql:// is not supported"),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL is not a valid URL"),
        ({"DATABASE_URL": "postgresql://app:pw@localhost"}, "DATABASE_URL names no database"),
        ({"DATABASE_URL": "postgresql://a:b@h/db", "ENVIRONMENT": "staging"}, "ENVIRONMENT: Input should be"),
        ({"DATABASE_URL": "postgresql://a:b@h/db", "HEALTH_CACHE_TTL": "5"}, "HEALTH_CACHE_TTL: Input should be"),
    ],
)
def test_wrong_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    line = error_line(monkeypatch, **env)
    assert expected in line
    assert "\n" not in line


@pytest.mark.parametrize("password", ["postgres", "password", "lifebalance", "Postgres"])
def test_production_refuses_default_passwords(monkeypatch: pytest.MonkeyPatch, password: str) -> None:
    line = error_line(monkeypatch, ENVIRONMENT="production", DATABASE_URL=f"postgresql://app:{password}@db/lb")
    assert "DATABASE_URL uses a well-known default password" in line
    assert f":{password}@" not in line


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:Xq7-long-random@db/lb",
        # No password in the URL: peer, certificate or .pgpass authentication.
        "postgresql://app@/lb?host=/run/postgresql",
    ],
)
def test_production_accepts_a_real_password_or_none(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    settings = load(monkeypatch, ENVIRONMENT="production", DATABASE_URL=url)
    assert settings.environment == "production"


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "uvicorn", "app.main:app", "--port", "0"],
        ["-m", "alembic", "current"],
    ],
    ids=["uvicorn", "alembic"],
)
def test_startup_stops_with_one_line(command: list[str]) -> None:
    env = {**os.environ, "DATABASE_URL": "mysql://app:pw@localhost/db"}
    result = processes.run(command, env=env, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "Invalid configuration: DATABASE_URL scheme mysql:// is not supported, "
        "use postgresql://, postgres:// or postgresql+asyncpg:// (see backend/.env.example)"
    ]
