"""Password hashing (argon2) and access tokens (JWT, HS256)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

ALGORITHM = "HS256"
_password_hash = PasswordHash((Argon2Hasher(),))


class InvalidToken(Exception):
    pass


def hash_password(password: str) -> str:
    return _password_hash.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    return _password_hash.verify(password, password_hash)


def create_access_token(user_id: int, role: str, secret: str, expire_minutes: int) -> str:
    now = datetime.now(UTC)
    claims = {"sub": str(user_id), "role": role, "iat": now, "exp": now + timedelta(minutes=expire_minutes)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_access_token(token: str, secret: str) -> tuple[int, str]:
    """The user id and role claimed by a valid token; InvalidToken for anything else."""
    try:
        # Naming the one accepted algorithm rejects `alg: none` and key-confusion tokens.
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
        return int(claims["sub"]), str(claims.get("role", ""))
    except (jwt.PyJWTError, ValueError) as exc:
        raise InvalidToken(str(exc)) from exc


STREAM_SIGNATURE_HEADER = "X-Stream-Signature"


def stream_signature(secret: str, job_id: str) -> str:
    """Signs a job's streamed deltas, so only its own activity can write into the client's stream."""
    return hmac.new(secret.encode(), job_id.encode(), hashlib.sha256).hexdigest()
