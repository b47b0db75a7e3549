"""The audit log of administrative actions: one row per action, written with the action's own commit."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.tables import AuditEvent


class AuditAction(StrEnum):
    user_register = "user.register"
    api_key_revoke = "api_key.revoke"
    lockout_lift = "lockout.lift"
    # Changes an admin makes to a user's account (api/routes/users.py).
    user_role_change = "user.role_change"
    user_deactivate = "user.deactivate"
    user_activate = "user.activate"


def record(
    session: AsyncSession, actor_id: int | None, action: AuditAction, target: str | None, **details: Any
) -> AuditEvent:
    """Adds the event to the session: it is saved by the same commit as the action, or not at all."""
    event = AuditEvent(actor_id=actor_id, action=action, target=target, details=details)
    session.add(event)
    return event
