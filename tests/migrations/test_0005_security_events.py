"""Migration 0005 (security events, lifted lockouts) up and down, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from core.db import create_engine
from core.tables import Base
from tests.core.test_db import alembic_config
from tests.postgres import running_postgres


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'assistant.db'}"
        return
    with running_postgres() as url:
        yield url


async def schema(database_url: str) -> dict[str, set[str]]:
    """Each table's column names."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:

            def read(c: Any) -> dict[str, set[str]]:
                inspector = inspect(c)
                return {
                    t: {col["name"] for col in inspector.get_columns(t)} for t in inspector.get_table_names()
                }

            return await connection.run_sync(read)
    finally:
        await engine.dispose()


async def execute(database_url: str, *statements: str) -> list[Any]:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            results = [await connection.execute(text(s)) for s in statements]
            return [r.all() if r.returns_rows else None for r in results]
    finally:
        await engine.dispose()


async def differences_of_0005(database_url: str) -> list[Any]:
    """What the database and core/tables.py disagree on, as far as this migration's parts go."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:

            def compare(c: Any) -> list[Any]:
                context = MigrationContext.configure(c, opts={"compare_type": True})
                return compare_metadata(context, Base.metadata)

            found = await connection.run_sync(compare)
    finally:
        await engine.dispose()
    return [d for d in found if "security_events" in repr(d) or "lockout_lifted_at" in repr(d)]


async def test_0005_adds_and_removes_the_events_table_and_the_lift_column(database_url: str) -> None:
    config = alembic_config(database_url)
    # migrations/env.py runs its own event loop, which cannot nest inside this test's.
    await asyncio.to_thread(command.upgrade, config, "0004")
    before = await schema(database_url)
    assert "security_events" not in before and "lockout_lifted_at" not in before["users"]

    await asyncio.to_thread(command.upgrade, config, "0005")
    after = await schema(database_url)
    assert set(after) == set(before) | {"security_events"}
    assert after["users"] == before["users"] | {"lockout_lifted_at"}
    assert await differences_of_0005(database_url) == []

    await asyncio.to_thread(command.downgrade, config, "0004")
    assert await schema(database_url) == before

    await asyncio.to_thread(command.upgrade, config, "head")
    assert "security_events" in await schema(database_url)


async def test_downgrading_0005_keeps_users_and_the_rows_that_hang_off_them(database_url: str) -> None:
    config = alembic_config(database_url)
    await asyncio.to_thread(command.upgrade, config, "0005")
    # A rebuilt users table would, with foreign keys on, cascade-delete the keys of every user.
    await execute(
        database_url,
        "INSERT INTO users (username, password_hash, role, is_active, created_at) "
        "VALUES ('keeper', 'x', 'user', true, CURRENT_TIMESTAMP)",
        "INSERT INTO api_keys (user_id, name, prefix, key_hash, scopes, created_at) "
        "SELECT id, 'k', 'p', 'keeper-hash', '[]', CURRENT_TIMESTAMP FROM users WHERE username = 'keeper'",
    )
    await asyncio.to_thread(command.downgrade, config, "0004")
    [keys] = await execute(
        database_url,
        "SELECT u.username FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = 'keeper-hash'",
    )
    assert keys == [("keeper",)]
    await asyncio.to_thread(command.upgrade, config, "head")
