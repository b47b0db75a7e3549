"""Users, for admins: who has an account, their role, whether they may sign in, and changing that
(audited). A change takes effect on the user's next request: every request checks the database."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import ColumnElement, and_, func, or_, select

from api.deps import AdminUser, SessionDep, SettingsDep
from api.errors import ApiError, not_found
from core.audit import AuditAction, record
from core.security_events import current_lockouts, lockout_until
from core.tables import Role, User

router = APIRouter(prefix="/admin", tags=["admin"])

# Past SQL's 64-bit integers the database refuses the query: a 422 rather than its error.
MAX_ID = 2**63 - 1


class UserAdminOut(BaseModel):
    id: int
    username: str
    role: Role
    is_active: bool
    created_at: datetime
    # When the user's guard lockout ends; None when they are not locked out.
    locked_until: datetime | None


class UserPage(BaseModel):
    users: list[UserAdminOut]
    total: int


class UserChange(BaseModel):
    """Fields left out (or null) stay as they are."""

    # An unknown field is a mistake worth hearing about, not a change silently skipped.
    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    is_active: bool | None = None


def _out(user: User, locked_until: datetime | None) -> UserAdminOut:
    return UserAdminOut(
        id=user.id,
        username=user.username,
        role=Role(user.role),
        is_active=user.is_active,
        created_at=user.created_at,
        locked_until=locked_until,
    )


def _active_admin() -> ColumnElement[bool]:
    return and_(User.role == Role.admin, User.is_active.is_(True))


@router.get("/users", response_model=UserPage)
async def list_users(
    _: AdminUser,
    session: SessionDep,
    settings: SettingsDep,
    role: Role | None = None,
    active: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> UserPage:
    """Oldest account first, with each user's lockout (if any) from the guard's security events."""
    query = select(User)
    if role is not None:
        query = query.where(User.role == role)
    if active is not None:
        query = query.where(User.is_active.is_(active))
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    users = list(await session.scalars(query.order_by(User.id).limit(limit).offset(offset)))
    # One read of the recent refusals serves the whole page, rather than one per user.
    locked = {lockout.user_id: lockout.until for lockout in await current_lockouts(session, settings)}
    return UserPage(users=[_out(user, locked.get(user.id)) for user in users], total=total)


@router.get("/users/{user_id}", response_model=UserAdminOut)
async def get_user(
    user_id: Annotated[int, Path(ge=1, le=MAX_ID)], _: AdminUser, session: SessionDep, settings: SettingsDep
) -> UserAdminOut:
    user = await session.get(User, user_id)
    if user is None:
        raise not_found("user")
    return _out(user, await lockout_until(session, settings, user_id))


@router.patch("/users/{user_id}", response_model=UserAdminOut)
async def change_user(
    user_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    body: UserChange,
    admin: AdminUser,
    session: SessionDep,
    settings: SettingsDep,
) -> UserAdminOut:
    """Changes the role and/or whether the user may sign in, each change audited in the same commit
    (user.role_change, user.deactivate, user.activate). A change to what the user already has is no
    change and records nothing. The user's tokens and API keys follow at once: a token naming the old
    role, and every credential of a deactivated user, is refused from the next request on. The last
    active admin cannot be demoted or deactivated (409 last_admin)."""
    user = await session.get(User, user_id)
    if user is None:
        raise not_found("user")
    may_remove_admin = body.role == Role.user or body.is_active is False
    if may_remove_admin:
        # Locking the active admins' rows (and re-reading this user's) before changing anything serves
        # two admins who demote each other at once one after the other on PostgreSQL; SQLite ignores
        # the lock but serialises the writes, and the count after the flush below sees the other's.
        await session.execute(
            select(User)
            .where(or_(_active_admin(), User.id == user_id))
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    was_active_admin = user.role == Role.admin and user.is_active
    target = str(user.id)
    changed = False
    if body.role is not None and body.role != user.role:
        details = {"username": user.username, "from": str(user.role), "to": str(body.role)}
        record(session, admin.id, AuditAction.user_role_change, target, **details)
        user.role = body.role
        changed = True
    if body.is_active is not None and body.is_active != user.is_active:
        action = AuditAction.user_activate if body.is_active else AuditAction.user_deactivate
        record(session, admin.id, action, target, username=user.username)
        user.is_active = body.is_active
        changed = True
    if changed and was_active_admin and not (user.role == Role.admin and user.is_active):
        await session.flush()
        remaining = await session.scalar(select(func.count()).select_from(User).where(_active_admin()))
        if not remaining:
            await session.rollback()
            message = "this is the last active admin: make another user an admin first"
            raise ApiError(409, "last_admin", message, {"user_id": user_id})
    if changed:
        await session.commit()
    return _out(user, await lockout_until(session, settings, user_id))
