"""The choice of test database: never the development one."""

import pytest

from tests.harness import choose_test_database

DEV = "postgresql://app:pw@db:5432/lifebalance"


def test_explicit_test_database_wins() -> None:
    assert choose_test_database("postgresql://t:pw@other/suite", DEV) == "postgresql://t:pw@other/suite"


def test_test_database_sits_beside_the_development_one() -> None:
    assert choose_test_database(None, DEV) == "postgresql+asyncpg://app:pw@db:5432/lifebalance_test"


def test_nothing_configured_means_embedded() -> None:
    assert choose_test_database(None, None) is None


@pytest.mark.parametrize(
    "test_url", [DEV, "postgres://other:pw@db/lifebalance", "postgresql+asyncpg://app@db/lifebalance"]
)
def test_refuses_the_development_database(test_url: str) -> None:
    with pytest.raises(ValueError, match="must not be the development database"):
        choose_test_database(test_url, DEV)


@pytest.mark.parametrize(
    ("test_url", "dev_url", "named"),
    [("mysql://a@b/c", DEV, "TEST_DATABASE_URL"), (None, "not a url", "DATABASE_URL")],
)
def test_malformed_urls_name_the_variable(test_url: str | None, dev_url: str, named: str) -> None:
    with pytest.raises(ValueError, match=f"^{named} "):
        choose_test_database(test_url, dev_url)
