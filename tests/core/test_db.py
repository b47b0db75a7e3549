"""The schema, its constraints and the migrations, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.db import create_engine, create_sessionmaker
from core.security import verify_password
from core.settings import PROJECT_ROOT
from core.tables import Base, Role, User
from core.users import ensure_user
from tests.postgres import running_postgres


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with running_postgres() as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'assistant.db'}"
    return request.getfixturevalue("postgres_url")


def cli_db_upgrade(database_url: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "VAULT_"))}
    env.update(DATABASE_URL=database_url, VAR_DIR=str(workdir / "var"))
    # A working directory without a .env, so only DATABASE_URL decides where the migration goes.
    return subprocess.run(
        [sys.executable, "-m", "assistant", "db", "upgrade"],
        env=env, cwd=workdir, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def migrated(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    result = cli_db_upgrade(database_url, tmp_path_factory.mktemp("cli"))
    assert result.returncode == 0, result.stdout + result.stderr
    return database_url


@pytest.fixture(scope="module")
async def engine(migrated: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


def alembic_config(database_url: str) -> Config:
    # The same configuration `assistant db upgrade` builds.
    config = Config()
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def unique_name() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def describe_users(connection) -> dict:  # type: ignore[no-untyped-def]
    inspector = inspect(connection)
    if not inspector.has_table("users"):
        return {}
    return {
        "columns": {c["name"]: c for c in inspector.get_columns("users")},
        "indexes": inspector.get_indexes("users"),
        "checks": inspector.get_check_constraints("users"),
        "primary_key": inspector.get_pk_constraint("users")["constrained_columns"],
    }


USER_COLUMNS = {"id", "username", "password_hash", "role", "is_active", "created_at", "lockout_lifted_at"}


async def test_cli_upgrade_creates_the_users_table_at_the_head_revision(
    engine: AsyncEngine, migrated: str, tmp_path: Path
) -> None:
    async with engine.connect() as connection:
        users = await connection.run_sync(describe_users)
        version = await connection.scalar(text("SELECT version_num FROM alembic_version"))

    columns = users["columns"]
    assert set(columns) == USER_COLUMNS
    assert users["primary_key"] == ["id"]
    # The one nullable column: a user whose lockout was never lifted has no lift time.
    assert [name for name, c in columns.items() if name != "id" and c["nullable"]] == ["lockout_lifted_at"]
    assert [i["column_names"] for i in users["indexes"] if i["unique"]] == [["username"]]
    assert any(c["name"] == "ck_users_role" for c in users["checks"])
    head = ScriptDirectory.from_config(alembic_config(migrated)).get_current_head()
    assert version == head
    # Running it again at head is a no-op, so deployments may run it on every start.
    again = cli_db_upgrade(migrated, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr


async def test_the_migrations_build_exactly_what_core_tables_declares(engine: AsyncEngine) -> None:
    def differences(connection) -> list:  # type: ignore[no-untyped-def]
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_a_duplicate_username_raises_integrity_error(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    name = unique_name()
    async with sessions() as session:
        session.add(User(username=name, password_hash="x"))
        await session.commit()

    async with sessions() as session:
        session.add(User(username=name, password_hash="y", role=Role.admin))
        with pytest.raises(IntegrityError):
            await session.commit()


@pytest.mark.parametrize("role", ["root", "Admin", ""])
async def test_a_role_other_than_user_or_admin_is_rejected(
    sessions: async_sessionmaker[AsyncSession], role: str
) -> None:
    async with sessions() as session:
        session.add(User(username=unique_name(), password_hash="x", role=role))
        with pytest.raises(IntegrityError):
            await session.commit()


async def test_new_users_default_to_an_active_user_role(sessions: async_sessionmaker[AsyncSession]) -> None:
    name = unique_name()
    async with sessions() as session:
        session.add(User(username=name, password_hash="x"))
        await session.commit()

    async with sessions() as session:
        user = await session.scalar(select(User).where(User.username == name))
    assert user is not None
    assert (user.role, user.is_active) == ("user", True)


async def test_created_at_reads_back_timezone_aware_as_the_same_instant(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    defaulted, explicit = unique_name(), unique_name()
    two_hours_east = datetime(2026, 1, 2, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    before = datetime.now(UTC)
    async with sessions() as session:
        session.add(User(username=defaulted, password_hash="x"))
        session.add(User(username=explicit, password_hash="x", created_at=two_hours_east))
        await session.commit()

    async with sessions() as session:
        result = await session.execute(
            select(User.username, User.created_at).where(User.username.in_([defaulted, explicit]))
        )
        rows = {name: created_at for name, created_at in result}

    for created_at in rows.values():
        assert created_at.tzinfo is not None and created_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= rows[defaulted] <= datetime.now(UTC) + timedelta(seconds=1)
    assert rows[explicit] == two_hours_east
    # Queries compare instants, not wall-clock text.
    async with sessions() as session:
        later = await session.scalars(
            select(User.username).where(
                User.username.in_([defaulted, explicit]),
                User.created_at > datetime(2026, 1, 2, 12, 31, tzinfo=UTC),
            )
        )
        assert list(later) == [defaulted]


async def test_a_naive_created_at_is_refused_rather_than_guessed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        session.add(User(username=unique_name(), password_hash="x", created_at=datetime(2026, 1, 2, 14, 30)))
        with pytest.raises(StatementError, match="naive datetime"):
            await session.commit()


async def test_ensure_user_creates_once_then_returns_false(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    name = unique_name()

    assert await ensure_user(sessions, name, "first-password", Role.admin) is True
    assert await ensure_user(sessions, name, "second-password", Role.user) is False

    async with sessions() as session:
        users = (await session.scalars(select(User).where(User.username == name))).all()
    assert len(users) == 1
    assert users[0].role == "admin"
    assert verify_password("first-password", users[0].password_hash)
    assert not verify_password("second-password", users[0].password_hash)


async def test_downgrade_to_base_then_upgrade_again_rebuilds_the_schema(
    engine: AsyncEngine, migrated: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    config = alembic_config(migrated)
    try:
        # migrations/env.py runs its own event loop, which cannot nest inside this test's.
        await asyncio.to_thread(command.downgrade, config, "base")
        async with engine.connect() as connection:
            assert await connection.run_sync(describe_users) == {}
            assert await connection.scalar(text("SELECT count(*) FROM alembic_version")) == 0

        await asyncio.to_thread(command.upgrade, config, "head")
    finally:
        # PostgreSQL connections cache statements planned against the dropped table.
        await engine.dispose()

    async with engine.connect() as connection:
        assert set((await connection.run_sync(describe_users))["columns"]) == USER_COLUMNS
        assert await connection.scalar(text("SELECT count(*) FROM users")) == 0
    name = unique_name()
    assert await ensure_user(sessions, name, "password", Role.user) is True
    async with sessions() as session:
        session.add(User(username=name, password_hash="x"))
        with pytest.raises(IntegrityError):
            await session.commit()
