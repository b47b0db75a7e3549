"""Creating users, and the first admin that settings name."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.security import hash_password
from core.tables import Role, User


async def ensure_user(
    sessions: async_sessionmaker[AsyncSession], username: str, password: str, role: Role
) -> bool:
    """Creates the user unless one by that name exists; True when it was created."""
    async with sessions() as session:
        if await session.scalar(select(User.id).where(User.username == username)) is not None:
            return False
        session.add(User(username=username, password_hash=hash_password(password), role=role))
        try:
            await session.commit()
        except IntegrityError:  # another process created it first
            return False
    return True
