"""Migration 0004 (API keys, audit log) up and down, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import inspect

from core.db import create_engine
from tests.core.test_db import alembic_config
from tests.postgres import running_postgres

NEW_TABLES = {"api_keys", "audit_events"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'assistant.db'}"
        return
    with running_postgres() as url:
        yield url


async def table_names(database_url: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_0004_adds_and_removes_only_the_key_and_audit_tables(database_url: str) -> None:
    config = alembic_config(database_url)
    # migrations/env.py runs its own event loop, which cannot nest inside this test's.
    await asyncio.to_thread(command.upgrade, config, "0003")
    before = await table_names(database_url)
    assert not before & NEW_TABLES

    await asyncio.to_thread(command.upgrade, config, "0004")
    assert await table_names(database_url) == before | NEW_TABLES

    await asyncio.to_thread(command.downgrade, config, "0003")
    assert await table_names(database_url) == before

    await asyncio.to_thread(command.upgrade, config, "head")
    assert await table_names(database_url) >= before | NEW_TABLES
