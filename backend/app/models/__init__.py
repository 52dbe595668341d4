"""ORM models. Import each model module here so Alembic's autogenerate sees its tables."""

from app.models.base import Base

__all__ = ["Base"]
