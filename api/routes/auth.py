"""Login (OAuth2 password form or JSON), registration by admins, and who am I."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.deps import AdminUser, CurrentUser, SessionDep, SettingsDep
from api.errors import ApiError
from core.audit import AuditAction, record
from core.schemas import Credentials, Token, UserCreate, UserOut
from core.security import create_access_token, hash_password, verify_password
from core.tables import User

router = APIRouter(prefix="/auth", tags=["auth"])

_LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
                }
            },
            "application/json": {"schema": Credentials.model_json_schema()},
        },
    }
}

# Verifying against a fixed hash when the user does not exist keeps both answers equally slow.
_UNKNOWN_USER_HASH = hash_password("no such user: constant-time filler")


async def _read_credentials(request: Request) -> Credentials:
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("application/json"):
            return Credentials.model_validate(await request.json())
        form = await request.form()
        return Credentials.model_validate(
            {"username": form.get("username"), "password": form.get("password")}
        )
    except ValidationError as exc:
        problems = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        raise ApiError(422, "invalid_request", "username and password are required", problems) from None
    except ValueError:
        raise ApiError(422, "invalid_request", "the body is not valid JSON or form data") from None


@router.post("/login", response_model=Token, openapi_extra=_LOGIN_BODY)
async def login(request: Request, session: SessionDep, settings: SettingsDep) -> Token:
    credentials = await _read_credentials(request)
    user = await session.scalar(select(User).where(User.username == credentials.username))
    valid = verify_password(credentials.password, user.password_hash if user else _UNKNOWN_USER_HASH)
    if user is None or not valid or not user.is_active:
        raise ApiError(
            401, "invalid_credentials", "wrong username or password", headers={"WWW-Authenticate": "Bearer"}
        )
    token = create_access_token(user.id, user.role, request.app.state.jwt_secret, settings.jwt_expire_minutes)
    return Token(access_token=token)


@router.post("/register", response_model=UserOut, status_code=201)
async def register(body: UserCreate, session: SessionDep, admin: AdminUser) -> User:
    user = User(username=body.username, password_hash=hash_password(body.password), role=body.role)
    session.add(user)
    try:
        await session.flush()  # the new user's id, for the audit event committed with it
        details = {"username": body.username, "role": body.role}
        record(session, admin.id, AuditAction.user_register, str(user.id), **details)
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise ApiError(409, "username_taken", f"the username {body.username!r} is taken") from None
    return user


@router.get("/me", response_model=UserOut)
async def me(user: CurrentUser) -> User:
    return user
