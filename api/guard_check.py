"""The check every route runs on a user's texts before it starts a model job.

In this order: a locked-out user is refused (403 locked_out, with Retry-After); a text past
max_prompt_length is refused (422 prompt_too_long), which is a limit, never a guard verdict; then
the guard reads each text as a prompt, and a refusal is a security event that counts toward the
user's lockout and a 400 guard_refused. Nothing is started for a refused request.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import UTC, datetime

from fastapi import Request

from api.errors import ApiError
from api.routes.guard import get_guard
from core.guard import Guard
from core.schemas import ChatRequest, GuardVerdict, RagRequest
from core.security_events import count_security_event, lockout_until, record_security_event
from core.settings import Settings
from core.tables import User

# (field, text): the field names the text's place in the request body, for the 422's details.
FieldText = tuple[str, str]


def chat_texts(body: ChatRequest) -> list[FieldText]:
    """What the user wrote: the prompt, or the conversation's user messages. A system message is the
    calling application's own instruction to the model: instructions are what it is for (an injection
    classifier would refuse it as one), and it may be long."""
    texts: list[FieldText] = []
    if body.prompt is not None:
        texts.append(("prompt", body.prompt))
    for i, message in enumerate(body.messages or []):
        if message.role == "user":
            texts.append((f"messages.{i}.content", message.content))
    return texts


def rag_texts(body: RagRequest) -> list[FieldText]:
    return [("question", body.question)]


def locked_out(until: datetime) -> ApiError:
    retry_after = max(1, math.ceil((until - datetime.now(UTC)).total_seconds()))
    return ApiError(
        403,
        "locked_out",
        f"too many refused requests: locked out until {until.isoformat()}",
        {"until": until},
        headers={"Retry-After": str(retry_after)},
    )


def refuse_long_texts(texts: Sequence[FieldText], settings: Settings) -> None:
    limit = settings.max_prompt_length
    for field, text in texts:
        if len(text) > limit:
            raise ApiError(
                422,
                "prompt_too_long",
                f"{field} is {len(text)} characters long; the limit is {limit}",
                {"field": field, "length": len(text), "limit": limit},
            )


def worst_refusal(guard: Guard, texts: Sequence[FieldText]) -> tuple[GuardVerdict, str] | None:
    """The refused text with the highest score and its verdict, or None when every text is allowed."""
    worst: tuple[GuardVerdict, str] | None = None
    for _, text in texts:
        verdict = guard.check(text, "prompt")
        if not verdict.allowed and (worst is None or verdict.score > worst[0].score):
            worst = verdict, text
    return worst


async def check_user_input(request: Request, user: User, texts: Sequence[FieldText]) -> None:
    """Raises the ApiError that refuses the request, or returns and the job may start."""
    settings: Settings = request.app.state.settings
    guard = get_guard(request)
    async with request.app.state.sessions() as session:
        until = await lockout_until(session, settings, user.id)
        if until is not None:
            raise locked_out(until)
        refuse_long_texts(texts, settings)
        # Off the event loop: many long messages take the guard milliseconds each.
        refusal = await asyncio.to_thread(worst_refusal, guard, texts)
        if refusal is None:
            return
        verdict, text = refusal
        event = record_security_event(
            session,
            user_id=user.id,
            route=request.url.path,
            kind="prompt",
            reasons=verdict.reasons,
            score=verdict.score,
            text=text,
        )
        await session.commit()
    count_security_event(event)
    raise ApiError(
        400,
        "guard_refused",
        f"the prompt guard refused the request ({', '.join(verdict.reasons) or 'score'})",
        {"reasons": verdict.reasons, "score": verdict.score},
    )
