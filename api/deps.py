"""Request dependencies: settings, database session, Temporal client, the authenticated user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from api.errors import ApiError, unauthorized
from core.security import InvalidToken, decode_access_token
from core.settings import Settings
from core.tables import Role, User

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
    try:
        user_id, role = decode_access_token(token, request.app.state.jwt_secret)
    except InvalidToken:
        raise unauthorized("invalid or expired token") from None
    # The token is only a claim: the database says whether the user still exists, is active and
    # still has the role the token names.
    user = await session.get(User, user_id)
    if user is None or not user.is_active or user.role != role:
        raise unauthorized("invalid or expired token")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def admin_user(user: CurrentUser) -> User:
    if user.role != Role.admin:
        raise ApiError(403, "forbidden", "this route is for admins")
    return user


AdminUser = Annotated[User, Depends(admin_user)]
