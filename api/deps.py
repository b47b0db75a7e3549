"""Request dependencies: settings, database session, Temporal client, the authenticated user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from api.errors import ApiError, unauthorized
from core.api_keys import KeyScope, chat_scope_allows, hash_key, is_api_key
from core.security import InvalidToken, decode_access_token
from core.settings import Settings
from core.tables import ApiKey, Role, User

# auto_error=False: a missing token gets our error shape, not FastAPI's.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/login", auto_error=False)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


def get_temporal(request: Request) -> Client:
    return request.app.state.temporal


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
TemporalDep = Annotated[Client, Depends(get_temporal)]


async def current_user(
    token: Annotated[str | None, Depends(oauth2_scheme)], session: SessionDep, request: Request
) -> User:
    if not token:
        raise unauthorized()
    if is_api_key(token):
        user = await _api_key_user(token, session, request)
    else:
        try:
            user_id, role = decode_access_token(token, request.app.state.jwt_secret)
        except InvalidToken:
            raise unauthorized("invalid or expired token") from None
        # The token is only a claim: the database says whether the user still exists, is active and
        # still has the role the token names.
        found = await session.get(User, user_id)
        if found is None or not found.is_active or found.role != role:
            raise unauthorized("invalid or expired token")
        user = found
    # Ends the read, giving its connection back to the pool: a sync chat waits seconds for its job,
    # and a connection held that long per request ran the pool dry under 20 concurrent chats (then
    # every request waited 30 s for one and failed). The user stays loaded; a route that reads or
    # writes again takes a connection for just that.
    await session.commit()
    return user


# --- API keys -----------------------------------------------------------------------------------

# last_used_at is a hint for people tidying their keys: writing it at most once a minute spares a
# database write on every request of a busy client.
LAST_USED_RESOLUTION = timedelta(minutes=1)


async def _api_key_user(token: str, session: AsyncSession, request: Request) -> User:
    key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(token)))
    now = datetime.now(UTC)
    if key is None or key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise unauthorized("invalid, revoked or expired API key")
    user = await session.get(User, key.user_id)
    if user is None or not user.is_active:
        raise unauthorized("invalid, revoked or expired API key")
    if KeyScope.all not in key.scopes and not chat_scope_allows(request.method, request.url.path):
        raise ApiError(403, "insufficient_scope", "this API key may call only the chat routes")
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        key.last_used_at = now
        await session.commit()
    request.state.api_key_id = key.id
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def login_user(user: CurrentUser, request: Request) -> User:
    """The user, authenticated by a login token: keys cannot mint or manage keys."""
    if getattr(request.state, "api_key_id", None) is not None:
        raise ApiError(403, "insufficient_scope", "API keys cannot manage API keys; log in instead")
    return user


LoginUser = Annotated[User, Depends(login_user)]


async def admin_user(user: CurrentUser) -> User:
    if user.role != Role.admin:
        raise ApiError(403, "forbidden", "this route is for admins")
    return user


AdminUser = Annotated[User, Depends(admin_user)]


def utc_instant(instant: datetime, name: str) -> datetime:
    """A time from a query string as a UTC instant; one without an offset is read as UTC, the logs' own
    zone."""
    if instant.tzinfo is None:
        return instant.replace(tzinfo=UTC)
    try:
        return instant.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00+01:00 is a valid ISO time but no UTC one: a 422, not a failed query.
        raise ApiError(
            422, "invalid_request", f"{name} is out of range in UTC", {"field": f"query.{name}"}
        ) from None
