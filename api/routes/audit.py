"""The audit log, for admins: who registered users and revoked keys, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import func, select

from api.deps import AdminUser, SessionDep, utc_instant
from core.tables import AuditEvent

router = APIRouter(prefix="/admin", tags=["admin"])


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    actor_id: int | None
    action: str
    target: str | None
    details: dict[str, Any]


class AuditEventPage(BaseModel):
    events: list[AuditEventOut]
    total: int


@router.get("/audit-events", response_model=AuditEventPage)
async def list_audit_events(
    _: AdminUser,
    session: SessionDep,
    actor_id: Annotated[int | None, Query(le=2**63 - 1)] = None,
    action: str | None = None,
    since: Annotated[datetime | None, Query(description="Events at or after this instant.")] = None,
    until: Annotated[datetime | None, Query(description="Events before this instant.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    # Past SQL's 64-bit integers (actor_id too) the database refuses the query: a 422 rather than its error.
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> AuditEventPage:
    query = select(AuditEvent)
    if actor_id is not None:
        query = query.where(AuditEvent.actor_id == actor_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if since is not None:
        query = query.where(AuditEvent.at >= utc_instant(since, "since"))
    if until is not None:
        query = query.where(AuditEvent.at < utc_instant(until, "until"))
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = await session.scalars(
        query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit).offset(offset)
    )
    return AuditEventPage(
        events=[
            AuditEventOut(
                id=e.id, at=e.at, actor_id=e.actor_id, action=e.action, target=e.target, details=e.details
            )
            for e in rows
        ],
        total=total,
    )
