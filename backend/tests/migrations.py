"""Alembic configuration for running migrations from tests."""

from pathlib import Path

from alembic.config import Config

BACKEND = Path(__file__).resolve().parents[1]


def alembic_config(script_location: Path | None = None) -> Config:
    config = Config(BACKEND / "alembic.ini")
    # pytest owns logging during the run; alembic.ini's fileConfig would replace its handlers.
    config.attributes["configure_logger"] = False
    if script_location is not None:
        config.set_main_option("script_location", str(script_location))
    return config
