"""API keys: bearer credentials for programmatic clients (the openai SDK, scripts), managed by their user.

A key is shown once, when it is created; the database keeps only its sha256. A key with the scope
"chat" may call only the chat routes (see core/api_keys.py). Keys are made with a login token only, so a
leaked key cannot mint more.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.deps import CurrentUser, LoginUser, SessionDep
from api.errors import not_found
from core.api_keys import PREFIX_CHARS, KeyScope, hash_key, new_key
from core.audit import AuditAction, record
from core.tables import ApiKey, Role

router = APIRouter(prefix="/auth/keys", tags=["auth"])


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[KeyScope] = Field(default=[KeyScope.all], min_length=1, max_length=2)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650, description="None: never expires.")


class ApiKeyOut(BaseModel):
    id: int
    name: str
    prefix: str
    scopes: list[KeyScope]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked: bool

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            scopes=key.scopes,
            created_at=key.created_at,
            expires_at=key.expires_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
            revoked=key.revoked_at is not None,
        )


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself: shown this once, never again.")


@router.post("", response_model=ApiKeyCreated, status_code=201)
async def create_key(body: ApiKeyCreate, user: LoginUser, session: SessionDep) -> ApiKeyCreated:
    secret = new_key()
    now = datetime.now(UTC)
    key = ApiKey(
        user_id=user.id,
        name=body.name,
        prefix=secret[:PREFIX_CHARS],
        key_hash=hash_key(secret),
        # "all" already covers chat: keep the stored list minimal.
        scopes=[KeyScope.all] if KeyScope.all in body.scopes else [KeyScope.chat],
        created_at=now,
        expires_at=now + timedelta(days=body.expires_in_days) if body.expires_in_days else None,
    )
    session.add(key)
    await session.commit()
    return ApiKeyCreated(**ApiKeyOut.of(key).model_dump(), key=secret)


@router.get("", response_model=list[ApiKeyOut])
async def list_keys(user: CurrentUser, session: SessionDep) -> list[ApiKeyOut]:
    keys = await session.scalars(
        select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    )
    return [ApiKeyOut.of(key) for key in keys]


@router.delete("/{key_id}", status_code=204)
async def revoke_key(
    # Ids are 64-bit in the database: a larger one is a 422, not a failed query.
    key_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    user: CurrentUser,
    session: SessionDep,
) -> None:
    """Revokes the caller's key, or anyone's for an admin; another user's key is 404, as a missing one."""
    key = await session.get(ApiKey, key_id)
    if key is None or (key.user_id != user.id and user.role != Role.admin):
        raise not_found("API key")
    if key.revoked_at is not None:  # revoking twice changes nothing, and records nothing
        return
    key.revoked_at = datetime.now(UTC)
    if user.role == Role.admin:
        record(session, user.id, AuditAction.api_key_revoke, str(key.id), owner_id=key.user_id, name=key.name)
    await session.commit()
