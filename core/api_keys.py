"""API keys: how they look, how they are stored, and what a chat-only key may call."""

from __future__ import annotations

import hashlib
import re
import secrets
from enum import StrEnum

KEY_MARKER = "ak-"  # tells an API key from a JWT without decoding either
PREFIX_CHARS = 10  # "ak-" and 7 random characters: shown in listings to recognise a key


class KeyScope(StrEnum):
    all = "all"
    chat = "chat"


def new_key() -> str:
    return KEY_MARKER + secrets.token_urlsafe(32)


def is_api_key(token: str) -> bool:
    return token.startswith(KEY_MARKER)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_CHAT_POSTS = frozenset({"/chat", "/inference", "/v1/chat/completions"})
_JOB_PATH = re.compile(r"/(jobs|inference)/[^/]+")


def chat_scope_allows(method: str, path: str) -> bool:
    """Whether a chat-only key may call this route: chats, the OpenAI-compatible chat, and its jobs.

    Job routes check the job's owner themselves, so a key sees only its user's jobs.
    """
    path = path.rstrip("/") or "/"
    if method == "POST" and (path in _CHAT_POSTS or path.startswith("/chat/")):
        return True
    if method == "GET" and (path == "/v1/models" or _JOB_PATH.fullmatch(path) is not None):
        return True
    return False
