"""Request rate limits and daily token budgets, applied to every route in one middleware.

- Each request spends from its user's moving window (the limit set by role); a request without a valid
  token spends from its client address's window, so guessing tokens is limited too. Heavier routes
  cost more (ROUTE_COSTS).
- POST /auth/login: failed attempts are counted per client address and per username; once either is
  spent the attempt is refused before the password is checked, so a locked-out guesser costs nothing.
- Starting a chat or RAG job is refused while the user's tokens of the UTC day reach their budget, and
  when the request itself may spend more than is left: its prompt (tiktoken's count, see
  core/token_budget.py) plus its max_tokens, for each provider it asks.

An API key (Authorization: Bearer ak-...) is not a signed token: the limiter counts each key's requests
in a window of its own (named by the key's hash) at the user limit and leaves the key's validity to the
route; on the budgeted routes it looks up the key's user to check that user's daily token budget.

The limiter runs before routing and before the route's own authentication: it reads the token's signed
claims (user id, role) without the database, which the route then checks as always.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string
from pydantic import ValidationError
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse

from activities.providers import get_provider
from api.errors import ApiError, error_body
from api.routes.chat import cap_max_tokens
from api.routes.openai_compat import CompletionRequest
from core.api_keys import hash_key, is_api_key
from core.schemas import ChatInput, ChatRequest, RagRequest, Target
from core.schemas import Message as ChatMessage
from core.security import InvalidToken, decode_access_token
from core.settings import Settings
from core.tables import ApiKey, Completion, Role, User
from core.token_budget import RequestTokens, request_tokens
from workflows.chat import chat_messages

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# What one request spends of its user's window; unlisted routes cost 1. Paths without a trailing slash.
ROUTE_COSTS: dict[tuple[str, str], int] = {
    ("POST", "/documents"): 5,  # parsing and embedding a whole file
    ("POST", "/ingestion/ingest"): 5,
    ("POST", "/chat/rag"): 3,  # a search, then a model call
    ("POST", "/chat/rag/async"): 3,
    ("POST", "/chat/rag/stream"): 3,
}

# The routes that start a chat or RAG job: refused once the user's daily token budget is spent.
BUDGETED_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("POST", "/chat"),
        ("POST", "/chat/async"),
        ("POST", "/chat/stream"),
        ("POST", "/inference"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/chat/rag"),
        ("POST", "/chat/rag/async"),
        ("POST", "/chat/rag/stream"),
    }
)

# Probes, scrapes, the API's documentation, and workers delivering streamed tokens (signed per job):
# these paths and everything under them.
EXEMPT_PATHS = ("/health", "/metrics", "/docs", "/redoc", "/openapi.json", "/internal/streams")

LOGIN_PATH = "/auth/login"


@dataclass(frozen=True)
class Window:
    """Where a key stands in its window, as the X-RateLimit-* headers say it."""

    limit: int
    remaining: int
    reset: float  # epoch seconds when the oldest counted request leaves the window

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.remaining, 0)),
            "X-RateLimit-Reset": str(math.ceil(self.reset)),
        }

    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset - time.time()))


def limiter_storage(settings: Settings) -> Storage:
    """Redis when REDIS_URL is set (one budget for all API processes), else this process's memory."""
    if settings.redis_url:
        storage = storage_from_string(
            f"async+{settings.redis_url}", implementation="redispy", wrap_exceptions=True
        )
        assert isinstance(storage, Storage)
        return storage
    return MemoryStorage()


class RateLimits:
    def __init__(self, settings: Settings, storage: Storage | None = None) -> None:
        self.settings = settings
        self.limiter = MovingWindowRateLimiter(storage or limiter_storage(settings))

    async def _spend(self, amount: int, window_s: int, cost: int, *key: str) -> tuple[bool, Window]:
        item = RateLimitItemPerSecond(amount, window_s)
        allowed = await self.limiter.hit(item, *key, cost=cost)
        stats = await self.limiter.get_window_stats(item, *key)
        return allowed, Window(amount, stats.remaining, stats.reset_time)

    async def _peek(self, amount: int, window_s: int, *key: str) -> Window:
        stats = await self.limiter.get_window_stats(RateLimitItemPerSecond(amount, window_s), *key)
        return Window(amount, stats.remaining, stats.reset_time)

    async def spend_request(self, who: str, role: str, cost: int) -> tuple[bool, Window] | None:
        """Spends cost from who's window; None when the role has no limit."""
        amount = (
            self.settings.rate_limit_admin_requests
            if role == Role.admin
            else self.settings.rate_limit_user_requests
        )
        if amount <= 0:
            return None
        return await self._spend(amount, self.settings.rate_limit_window, cost, "requests", who)

    def _login_keys(self, address: str, username: str) -> list[tuple[int, str, str]]:
        keys = [(self.settings.rate_limit_login_ip_failures, "login-address", address)]
        if username:  # none: the route refuses the request, and the address is still counted
            keys.append((self.settings.rate_limit_login_username_failures, "login-username", username))
        return [key for key in keys if key[0] > 0]

    async def login_window(self, address: str, username: str) -> Window | None:
        """The tighter of the address's and the username's failed-login windows; None: no limit."""
        windows = [
            await self._peek(amount, self.settings.rate_limit_login_window, kind, value)
            for amount, kind, value in self._login_keys(address, username)
        ]
        return min(windows, key=lambda w: w.remaining, default=None)

    async def record_login_failure(self, address: str, username: str) -> None:
        for amount, kind, value in self._login_keys(address, username):
            await self._spend(amount, self.settings.rate_limit_login_window, 1, kind, value)


def budget_for(settings: Settings, role: str) -> int:
    return settings.token_budget_admin_per_day if role == Role.admin else settings.token_budget_user_per_day


def utc_day_bounds(now: datetime | None = None) -> tuple[datetime, datetime]:
    now = now or datetime.now(UTC)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


async def tokens_used_today(sessions: Any, user_id: int) -> int:
    """Tokens in + out of the user's completions saved since midnight UTC."""
    start, _ = utc_day_bounds()
    async with sessions() as session:
        usages = await session.scalars(
            select(Completion.usage).where(Completion.owner_id == user_id, Completion.created_at >= start)
        )
        total = 0
        for usage in usages:
            usage = usage or {}
            total += int(usage.get("total_tokens") or 0) or (
                int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
            )
        return total


def requested_tokens(path: str, body: bytes, settings: Settings) -> RequestTokens | None:
    """The most a chat or RAG request may spend, read as its route reads it (the same defaults, the
    operator's max_tokens cap); None when the body is no valid request, which the route answers.
    A RAG request counts its question only: the sources it will be given are not known yet."""
    try:
        data = json.loads(body)
        chat: ChatInput
        if path.startswith("/chat/rag"):
            rag = RagRequest.model_validate(data)
            chat, messages = rag.chat_input(), [ChatMessage(role="user", content=rag.question)]
        else:
            if path == "/v1/chat/completions":
                request = CompletionRequest.model_validate(data).to_chat_request(settings)
            else:
                request = ChatRequest.model_validate(data)
            chat = request.to_workflow_input()
            messages = chat_messages(chat)
    except (ValueError, ValidationError, ApiError):
        return None
    cap_max_tokens(chat, settings)
    targets = chat.compare or [Target(provider=chat.provider, model=chat.model)]
    return request_tokens(
        [(t.provider, t.model or get_provider(t.provider).default_model(settings)) for t in targets],
        messages,
        chat.params.max_tokens,
    )


async def key_owner(sessions: Any, key_hash: str) -> tuple[int, str] | None:
    """The user id and role behind an API key, whatever its state: the route decides whether it is valid."""
    async with sessions() as session:
        row = (
            await session.execute(
                select(User.id, User.role)
                .join(ApiKey, ApiKey.user_id == User.id)
                .where(ApiKey.key_hash == key_hash)
            )
        ).first()
        return (row[0], row[1]) if row else None


def _path_of(scope: Scope) -> str:
    path: str = scope.get("path", "")
    return path.rstrip("/") or "/"


def _client_address(scope: Scope) -> str:
    # The peer as the server sees it; behind a reverse proxy, uvicorn's --proxy-headers (with
    # --forwarded-allow-ips) makes it the client's, so X-Forwarded-For is never trusted here.
    client = scope.get("client")
    return client[0] if client else "unknown"


def _bearer_claims(scope: Scope, secret: str) -> tuple[int, str] | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token:
                return None
            try:
                return decode_access_token(token.strip(), secret)
            except InvalidToken:
                return None
    return None


def _api_key_hash(scope: Scope) -> str | None:
    """The bearer API key's hash: the limiter names a key by it, never by the key (it may go to Redis)."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and is_api_key(token):
                return hash_key(token)
            return None
    return None


def _refusal(status: int, code: str, message: str, details: Any, headers: dict[str, str]) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status, headers=headers)


def _with_headers(send: Send, headers: dict[str, str]) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message.setdefault("headers", [])
            message["headers"] = [
                *message["headers"],
                *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
            ]
        await send(message)

    return wrapped


async def _buffered_body(receive: Receive) -> tuple[bytes, Receive]:
    """Reads the whole body and returns a receive that hands it to the route again."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


async def _login_username(scope: Scope, body: bytes) -> str:
    """The username the login form or JSON names, parsed as the route will parse it; "" when none."""
    content_type = dict(scope.get("headers", [])).get(b"content-type", b"").decode("latin-1")
    try:
        if content_type.startswith("application/json"):
            value = json.loads(body).get("username")
        else:

            async def once() -> Message:
                return {"type": "http.request", "body": body, "more_body": False}

            form = await Request(scope, once).form()
            value = form.get("username")
            await form.close()
    except Exception:  # malformed: the route answers it; the address limit still applies
        return ""
    return value if isinstance(value, str) else ""


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: RateLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _path_of(scope)
        if any(path == exempt or path.startswith(f"{exempt}/") for exempt in EXEMPT_PATHS):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        try:
            if method == "POST" and path == LOGIN_PATH:
                await self._login(scope, receive, send)
            else:
                await self._request(scope, receive, send, method, path)
        except StorageError:
            # Raised only before the route runs (see _login's counted). Without its storage the limiter
            # cannot tell a flood from a trickle: refuse rather than serve unlimited.
            log.exception("rate limiter storage unavailable")
            unavailable = _refusal(
                503, "rate_limiter_unavailable", "the rate limiter is unavailable", None, {}
            )
            await unavailable(scope, receive, send)

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        address = _client_address(scope)
        body, receive = await _buffered_body(receive)
        username = await _login_username(scope, body)
        window = await self.limits.login_window(address, username)
        if window is None:
            await self.app(scope, receive, send)
            return
        if window.remaining <= 0:
            headers = {**window.headers(), "Retry-After": str(window.retry_after())}
            refusal = _refusal(429, "rate_limited", "too many failed logins; try again later", None, headers)
            await refusal(scope, receive, send)
            return

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                try:
                    if message["status"] == 401:
                        await self.limits.record_login_failure(address, username)
                    after = await self.limits.login_window(address, username)
                except StorageError:  # the route has answered: deliver that answer, uncounted
                    log.exception("rate limiter storage unavailable; a login failure went uncounted")
                    after = None
                if after is not None:
                    message["headers"] = [
                        *message.get("headers", []),
                        *((k.lower().encode(), v.encode()) for k, v in after.headers().items()),
                    ]
            await send(message)

        await self.app(scope, receive, counted)

    async def _request(self, scope: Scope, receive: Receive, send: Send, method: str, path: str) -> None:
        state = scope["app"].state
        claims = _bearer_claims(scope, state.jwt_secret)
        user_id, role = claims if claims else (None, "")
        who = f"user:{user_id}" if user_id is not None else f"address:{_client_address(scope)}"
        # An API key is not a JWT: without a database lookup the limiter cannot tell whose it is, so each key
        # gets a window of its own at the user limit (an admin's key too).
        key_hash = _api_key_hash(scope) if claims is None else None
        if key_hash is not None:
            who, role = f"key:{key_hash}", Role.user
        spent = await self.limits.spend_request(who, role, ROUTE_COSTS.get((method, path), 1))
        headers = spent[1].headers() if spent else {}
        if spent and not spent[0]:
            window = spent[1]
            refusal = _refusal(
                429,
                "rate_limited",
                f"rate limit of {window.limit} requests per {self.limits.settings.rate_limit_window} s "
                "exceeded",
                {"limit": window.limit, "window_s": self.limits.settings.rate_limit_window},
                {**headers, "Retry-After": str(window.retry_after())},
            )
            await refusal(scope, receive, send)
            return
        if key_hash is not None and (method, path) in BUDGETED_ROUTES:
            # The budget is its user's: worth one lookup on the routes that already read the database.
            owner = await key_owner(state.sessions, key_hash)
            if owner is not None:
                user_id, role = owner
        if user_id is not None and (method, path) in BUDGETED_ROUTES:
            refusal, receive = await self._over_budget(state.sessions, user_id, role, headers, path, receive)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, _with_headers(send, headers) if headers else send)

    async def _over_budget(
        self, sessions: Any, user_id: int, role: str, headers: dict[str, str], path: str, receive: Receive
    ) -> tuple[JSONResponse | None, Receive]:
        """A refusal when the day's budget is spent or the request may spend more than is left; and the
        receive that hands the route its body (read here to count the request's tokens)."""
        settings = self.limits.settings
        budget = budget_for(settings, role)
        if budget <= 0:
            return None, receive
        used = await tokens_used_today(sessions, user_id)
        _, resets = utc_day_bounds()
        retry_after = max(1, math.ceil((resets - datetime.now(UTC)).total_seconds()))
        refusal_headers = {**headers, "Retry-After": str(retry_after)}
        if used >= budget:
            return _refusal(
                429,
                "quota_exceeded",
                f"the daily budget of {budget} tokens is spent; it resets at {resets.isoformat()}",
                {"budget": budget, "used": used, "resets_at": resets.isoformat()},
                refusal_headers,
            ), receive
        body, receive = await _buffered_body(receive)
        # In a thread: the first count in a process loads tiktoken's vocabulary (about two seconds).
        cost = await asyncio.to_thread(requested_tokens, path, body, settings)
        if cost is None or used + cost.total <= budget:
            return None, receive
        remaining = budget - used
        return _refusal(
            429,
            "quota_exceeded",
            f"this request may use up to {cost.total} tokens ({cost.prompt_tokens} of prompt, up to "
            f"{cost.max_tokens} of answer) and {remaining} of the daily budget of {budget} remain; ask for "
            f"fewer max_tokens or send a shorter prompt, or wait until {resets.isoformat()}",
            {
                "budget": budget,
                "used": used,
                "remaining": remaining,
                "requested": cost.total,
                "prompt_tokens": cost.prompt_tokens,
                "max_tokens": cost.max_tokens,
                "resets_at": resets.isoformat(),
            },
            refusal_headers,
        ), receive
