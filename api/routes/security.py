"""Security events and lockouts, for admins: what the guard refused or flagged, who is locked out,
and lifting a lockout (an audited action)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import String, cast, func, select

from api.deps import AdminUser, SessionDep, SettingsDep, utc_instant
from api.errors import not_found
from core.audit import AuditAction, record
from core.security_events import current_lockouts, lockout_until
from core.tables import SecurityEvent, User

router = APIRouter(prefix="/admin", tags=["admin"])

# Past SQL's 64-bit integers the database refuses the query: a 422 rather than its error.
MAX_ID = 2**63 - 1


class SecurityEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    user_id: int | None
    route: str
    kind: str
    reasons: list[str]
    score: float
    text_sha256: str
    excerpt: str
    job_id: str | None
    counts_toward_lockout: bool


class SecurityEventPage(BaseModel):
    events: list[SecurityEventOut]
    total: int


class LockoutOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: int
    username: str
    until: datetime
    refusals: int
    last_refusal_at: datetime


class LockoutLifted(BaseModel):
    user_id: int
    lifted_at: datetime
    # When the lockout would have ended; None when the user was not locked out.
    was_locked_until: datetime | None


@router.get("/security-events", response_model=SecurityEventPage)
async def list_security_events(
    _: AdminUser,
    session: SessionDep,
    user_id: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    reason: Annotated[
        str | None, Query(pattern=r"^[a-z][a-z0-9_]*$", max_length=64, description="A reason code.")
    ] = None,
    kind: Annotated[str | None, Query(pattern=r"^(prompt|document|output|tool)$")] = None,
    since: Annotated[datetime | None, Query(description="Events at or after this instant.")] = None,
    until: Annotated[datetime | None, Query(description="Events before this instant.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> SecurityEventPage:
    """The newest first. Each event has the text's sha256 and a redacted excerpt, never the text."""
    query = select(SecurityEvent)
    if user_id is not None:
        query = query.where(SecurityEvent.user_id == user_id)
    if reason is not None:
        # Reasons are a JSON list of plain codes (the pattern admits no quote or wildcard): the quoted
        # code appears in its text exactly when it is in the list, on SQLite and PostgreSQL alike.
        query = query.where(cast(SecurityEvent.reasons, String).like(f'%"{reason}"%'))
    if kind is not None:
        query = query.where(SecurityEvent.kind == kind)
    if since is not None:
        query = query.where(SecurityEvent.at >= utc_instant(since, "since"))
    if until is not None:
        query = query.where(SecurityEvent.at < utc_instant(until, "until"))
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = await session.scalars(
        query.order_by(SecurityEvent.at.desc(), SecurityEvent.id.desc()).limit(limit).offset(offset)
    )
    return SecurityEventPage(events=[SecurityEventOut.model_validate(e) for e in rows], total=total)


@router.get("/lockouts", response_model=list[LockoutOut])
async def list_lockouts(_: AdminUser, session: SessionDep, settings: SettingsDep) -> list[LockoutOut]:
    """Users locked out now: until when, and how many refusals within the window locked them out."""
    return [LockoutOut.model_validate(lockout) for lockout in await current_lockouts(session, settings)]


@router.post("/lockouts/{user_id}/lift", response_model=LockoutLifted)
async def lift_lockout(
    user_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    admin: AdminUser,
    session: SessionDep,
    settings: SettingsDep,
) -> LockoutLifted:
    """Lets the user start jobs again at once: refusals before now no longer count toward a lockout.
    Lifting a user who is not locked out is allowed (and audited) too."""
    user = await session.get(User, user_id)
    if user is None:
        raise not_found("user")
    was_locked_until = await lockout_until(session, settings, user_id)
    now = datetime.now(UTC)
    user.lockout_lifted_at = now
    record(
        session,
        admin.id,
        AuditAction.lockout_lift,
        str(user_id),
        username=user.username,
        was_locked_until=was_locked_until.isoformat() if was_locked_until else None,
    )
    await session.commit()
    return LockoutLifted(user_id=user_id, lifted_at=now, was_locked_until=was_locked_until)
