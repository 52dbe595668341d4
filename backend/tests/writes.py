"""Write routes of the tests' own, in the shape Phase 2's take: they write through `DbSession` and
never commit, as the transaction rule says (app/api/deps.py).

Added to the app under test in process, and served by uvicorn as `--factory tests.writes:create_app`,
so the tests can show that both give the same answers. The tables are not the app's models (Alembic
never sees them): a test creates them in its fresh database.
"""

import asyncio
from typing import Literal

from fastapi import APIRouter, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict
from sqlalchemy import ForeignKey
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.api.deps import DbSession
from app.core.config import get_settings


class WritesBase(DeclarativeBase):
    pass


class Account(WritesBase):
    __tablename__ = "writes_accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(unique=True)


class Entry(WritesBase):
    __tablename__ = "writes_entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    # Checked at COMMIT rather than at the INSERT: a write that fails after the route has returned.
    account_id: Mapped[int] = mapped_column(ForeignKey(Account.id, deferrable=True, initially="DEFERRED"))


class AccountCreate(BaseModel):
    email: str


class AccountRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    email: str


class EntryCreate(BaseModel):
    account_id: int
    # Seconds the route waits after its INSERT: time for a test to cut the connection before the COMMIT.
    pause: float = 0


class EntryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    account_id: int


router = APIRouter()


@router.post("/accounts", status_code=201, response_model=AccountRead, responses={409: {}})
async def create_account(body: AccountCreate, session: DbSession) -> Account:
    account = Account(email=body.email)
    session.add(account)
    try:
        await session.flush()
    except IntegrityError:
        raise HTTPException(409, "this e-mail is registered already") from None
    return account


@router.post("/accounts/{failure}", status_code=201)
async def create_account_then_fail(
    failure: Literal["refuse", "crash"], body: AccountCreate, session: DbSession
) -> None:
    session.add(Account(email=body.email))
    await session.flush()
    if failure == "refuse":
        raise HTTPException(422, "refused after writing")
    raise RuntimeError("a bug after writing")


@router.post("/entries", status_code=201, response_model=EntryRead)
async def create_entry(body: EntryCreate, session: DbSession) -> Entry:
    entry = Entry(account_id=body.account_id)
    session.add(entry)
    await session.flush()
    await asyncio.sleep(body.pause)
    return entry


def create_app() -> FastAPI:
    """The app with these routes, as uvicorn's --factory builds it (from the environment's settings)."""
    from app.main import create_app as create_project_app

    app = create_project_app(get_settings(), served=True)
    app.include_router(router)
    return app
