"""What the fixtures are built from: the choice of test database and Alembic's configuration."""

from pathlib import Path

from alembic.config import Config
from sqlalchemy.engine import URL

from app.core.config import normalize_database_url

BACKEND = Path(__file__).resolve().parents[1]


def choose_test_database(test_url: str | None, dev_url: str | None) -> str | None:
    """TEST_DATABASE_URL, else `<name>_test` beside DATABASE_URL; None means "start an embedded one".

    Raises ValueError, naming the variable, for a malformed URL, and for a test database that is
    the development one: the suite may wipe what it is given.
    """
    for name, value in (("TEST_DATABASE_URL", test_url), ("DATABASE_URL", dev_url)):
        if value:
            try:
                normalize_database_url(value)
            except ValueError as error:
                raise ValueError(f"{name} {error}") from None
    if test_url:
        if dev_url and same_database(test_url, dev_url):
            raise ValueError("TEST_DATABASE_URL must not be the development database (DATABASE_URL)")
        return test_url
    if dev_url:
        dev = normalize_database_url(dev_url)
        return dev.set(database=f"{dev.database}_test").render_as_string(hide_password=False)
    return None


def same_database(a: str, b: str) -> bool:
    def key(url: str) -> tuple[object, ...]:
        parsed = normalize_database_url(url)
        return parsed.host, parsed.port or 5432, parsed.database, parsed.query.get("host")

    return key(a) == key(b)


def alembic_config(script_location: Path | None = None) -> Config:
    config = Config(BACKEND / "alembic.ini")
    # pytest owns logging during the run; alembic.ini's fileConfig would replace its handlers.
    config.attributes["configure_logger"] = False
    if script_location is not None:
        config.set_main_option("script_location", str(script_location))
    return config


def url_at(port: int, *, password: str = "s3cret-pw") -> str:
    """A database URL on 127.0.0.1:`port`, for a port where no PostgreSQL is."""
    return URL.create(
        "postgresql+asyncpg", username="lifebalance", password=password, host="127.0.0.1", port=port, database="db"
    ).render_as_string(hide_password=False)


def url_through(url: str, port: int) -> str:
    """The database `url` names, reached through a proxy on 127.0.0.1:`port`."""
    proxied = normalize_database_url(url).set(host="127.0.0.1", port=port, query={})
    return proxied.render_as_string(hide_password=False)
