"""The health check most FastAPI templates ship, for comparison: one session and one query per request.

An `AsyncSession` comes from a `get_db` dependency and runs `SELECT 1` on every call, with
SQLAlchemy's default pool settings, as such templates do. Run by bench/run.py as
`uvicorn per_request_app:app --app-dir bench` with DATABASE_URL in postgresql+asyncpg:// form.
"""

import os
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

engine = create_async_engine(os.environ["DATABASE_URL"])
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)

app = FastAPI()


async def get_db() -> AsyncIterator[AsyncSession]:
    async with SessionLocal() as session:
        yield session


@app.get("/health")
async def health(db: Annotated[AsyncSession, Depends(get_db)]) -> dict[str, str]:
    await db.execute(text("SELECT 1"))
    return {"status": "ok", "database": "connected"}
