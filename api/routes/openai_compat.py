"""An OpenAI-compatible front: POST /v1/chat/completions (with `stream`) and GET /v1/models.

Tools built on the official openai SDK use this service by changing base_url and passing a bearer
token. Each request runs the same ChatWorkflow as POST /chat/, so it is a durable job too; its
job id is the completion's id.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal, get_args

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette import EventSourceResponse
from temporalio.client import WorkflowFailureError

from api.deps import CurrentUser, SettingsDep, TemporalDep
from api.errors import ApiError
from api.guard_check import chat_texts, check_user_input
from api.job_requests import IdempotencyKey, failed_job_error
from api.routes.chat import _start_chat, start_chat_stream
from api.streams import Delta, JobStream
from core.schemas import ChatRequest, ChatResult, JobError, Message, ProviderName
from core.settings import Settings

router = APIRouter(prefix="/v1", tags=["openai-compatible"])


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object"]


class StreamOptions(BaseModel):
    include_usage: bool = False


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we have no use for

    model: str = Field(description='"provider/model", a provider name, or a model of the local provider')
    messages: list[Message] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    response_format: ResponseFormat | None = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def to_chat_request(self, settings: Settings) -> ChatRequest:
        provider, _, model = self.model.partition("/")
        if provider not in get_args(ProviderName):
            provider, model = "local", self.model  # a bare model name: the local model server's
        try:
            return ChatRequest(
                messages=self.messages,
                provider=provider,
                model=model or None,
                temperature=self.temperature,
                top_p=self.top_p,
                max_tokens=self.max_completion_tokens or self.max_tokens or 256,
                stop=[self.stop] if isinstance(self.stop, str) else self.stop,
                seed=self.seed,
                presence_penalty=self.presence_penalty,
                frequency_penalty=self.frequency_penalty,
                response_format=self.response_format.type if self.response_format else None,
                timeout_s=settings.chat_timeout_s,
                wait_s=settings.chat_timeout_s,  # OpenAI clients know no 202: wait for the answer
            )
        except ValidationError as exc:
            raise ApiError(422, "invalid_request", str(exc.errors()[0]["msg"])) from None


def _usage(result: ChatResult) -> dict[str, int]:
    return result.usage.model_dump()


def _completion(result: ChatResult, created: int) -> dict[str, Any]:
    return {
        "id": result.job_id,
        "object": "chat.completion",
        "created": created,
        "model": f"{result.provider}/{result.model}",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": result.finish_reason or "stop",
            }
        ],
        "usage": _usage(result),
    }


@router.post("/chat/completions")
async def chat_completions(  # type: ignore[no-untyped-def]
    body: CompletionRequest,
    request: Request,
    user: CurrentUser,
    temporal: TemporalDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
):
    chat = body.to_chat_request(settings)
    await check_user_input(request, user, chat_texts(chat))
    created = int(time.time())
    if body.stream:
        stream = await start_chat_stream(chat, request, user, temporal, settings, idempotency_key)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventSourceResponse(_chunks(stream, body.model, created, include_usage), ping=15)
    handle = await _start_chat(chat, user, temporal, settings, idempotency_key, local_calls=True)
    try:
        result = ChatResult.model_validate(await handle.result())
    except WorkflowFailureError as exc:
        raise failed_job_error(handle.id, exc) from None
    return _completion(result, created)


async def _chunks(stream: JobStream, model: str, created: int, include_usage: bool):  # type: ignore[no-untyped-def]
    def chunk(delta: dict[str, str], finish_reason: str | None = None, **extra: Any) -> str:
        choices = [] if "usage" in extra else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
        body = {"id": stream.job_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": choices, **extra}  # fmt: skip
        return json.dumps(body)

    yield chunk({"role": "assistant", "content": ""})
    async for event in stream.events():
        match event:
            case Delta(text=text):
                yield chunk({"content": text})
            case ChatResult():
                yield chunk({}, finish_reason=event.finish_reason or "stop")
                if include_usage:
                    yield chunk({}, usage=_usage(event))
            case JobError():
                # OpenAI's way to report a failure after the stream began.
                yield json.dumps(
                    {"error": {"message": event.message, "type": event.code, "code": event.code}}
                )
    yield "[DONE]"


@router.get("/models")
async def list_models(_: CurrentUser, settings: SettingsDep) -> dict[str, Any]:
    """The local model; other providers' models are named "provider/model" in requests."""
    local = settings.model_path(settings.local_chat_model).name
    return {
        "object": "list",
        "data": [{"id": f"local/{local}", "object": "model", "created": 0, "owned_by": "local"}],
    }
