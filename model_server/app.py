"""The model server: local models behind an OpenAI-compatible HTTP API.

Routes: POST /v1/chat/completions (whole or `stream: true` as server-sent events in OpenAI's chunk
format), POST /v1/embeddings (the default English embedder or the multilingual one, by `model`),
GET /v1/models, GET /health, GET /metrics. Errors use OpenAI's shape,
{"error": {"message", "type", "param", "code"}}, so OpenAI clients report them as they would OpenAI's.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse

from core.settings import Settings
from model_server import metrics
from model_server.engine import (
    ChatModel,
    E5EmbeddingModel,
    EmbeddingModel,
    Generation,
    PromptTooLong,
    Sampling,
    SentenceEmbeddingModel,
)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart] | None = None

    def as_template_message(self) -> dict[str, str]:
        content = (
            self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        )
        # Chat templates know system, user and assistant; OpenAI's newer "developer" is a system turn.
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def sampling(self) -> Sampling:
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return Sampling(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_completion_tokens or self.max_tokens or 512,
            seed=self.seed,
            stop=tuple(s for s in stop if s),
        )


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    input: str | list[str] = Field(min_length=1)
    # The OpenAI SDK asks for base64 unless told otherwise, and decodes it back into floats itself.
    encoding_format: Literal["float", "base64"] = "float"
    # Not OpenAI's: what the texts are for. E5 models embed a search query and a stored passage with
    # different prefixes; other models ignore it. "document" is accepted as another name for a passage,
    # as some clients call it. From the OpenAI SDK: extra_body={"input_type": "query"}.
    input_type: Literal["query", "passage", "document"] = "passage"


class OpenAIError(HTTPException):
    def __init__(self, status: int, message: str, type_: str, code: str, param: str | None = None) -> None:
        super().__init__(status, message)
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}


def create_app(settings: Settings) -> FastAPI:
    models: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.model_server_threads > 0:
            import torch

            torch.set_num_threads(settings.model_server_threads)
        chat_name = settings.model_path(settings.local_chat_model).name
        embed_name = settings.model_path(settings.local_embedding_model).name
        models["chat"] = ChatModel(chat_name, settings.model_path(settings.local_chat_model))
        models["embedding"] = SentenceEmbeddingModel(
            embed_name, settings.model_path(settings.local_embedding_model)
        )
        if settings.local_multilingual_embedding_model:
            # Loaded at start, not on first use: it maps a 72 MB file in about 10 ms, and a broken
            # install then fails the start instead of a user's first request.
            models["multilingual_embedding"] = E5EmbeddingModel(
                settings.local_multilingual_embedding_model, settings.model_server_threads
            )
        try:
            yield
        finally:
            for model in models.values():
                if isinstance(model, EmbeddingModel):
                    model.close()

    app = FastAPI(title="ai-assistant model server", lifespan=lifespan)
    Instrumentator().instrument(app).expose(app, include_in_schema=False)

    @app.exception_handler(OpenAIError)
    async def _openai_error(_: Request, exc: OpenAIError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status_code)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        body = {
            "error": {
                "message": str(exc.detail),
                "type": "invalid_request_error",
                "param": None,
                "code": str(exc.status_code),
            }
        }
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": "invalid_request",
            }
        }
        return JSONResponse(body, status_code=400)

    def chat_model(name: str) -> ChatModel:
        model: ChatModel = models["chat"]
        if name != model.name:
            raise OpenAIError(
                404,
                f"The model '{name}' does not exist; this server has '{model.name}'.",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        return model

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": [m.name for m in models.values()]}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": m.name, "object": "model", "created": 0, "owned_by": "local"} for m in models.values()
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):  # type: ignore[no-untyped-def]
        model = chat_model(body.model)
        messages = [m.as_template_message() for m in body.messages]
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        try:
            if body.stream:
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                # The first piece is generated before the response starts, so a prompt that is too
                # long still gets a proper 400 instead of a broken stream.
                pieces = model.stream(messages, body.sampling())
                first = await anext(pieces)
                chunks = _stream_chunks(first, pieces, completion_id, created, model.name, include_usage)
                return EventSourceResponse(chunks, ping=15)
            # A caller that hangs up (a cancelled job's activity) frees the model at once.
            generation = await model.generate(messages, body.sampling(), abandoned=request.is_disconnected)
        except PromptTooLong as exc:
            raise OpenAIError(
                400, str(exc), "invalid_request_error", "context_length_exceeded", "messages"
            ) from exc
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": generation.text},
                    "finish_reason": generation.finish_reason,
                }
            ],
            "usage": _usage(generation),
        }

    def embedding_model(name: str) -> EmbeddingModel:
        embedders = {m.name: m for m in models.values() if isinstance(m, EmbeddingModel)}
        if name not in embedders:
            known = ", ".join(f"'{n}'" for n in embedders)
            raise OpenAIError(
                404,
                f"The model '{name}' does not exist; this server embeds with {known}.",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        return embedders[name]

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        model = embedding_model(body.model)
        texts = [body.input] if isinstance(body.input, str) else body.input
        embedded = await model.embed(texts, "query" if body.input_type == "query" else "passage")
        metrics.EMBEDDED_TEXTS.labels(model.name).inc(len(texts))
        if body.encoding_format == "base64":
            data = [_base64_floats(row) for row in embedded.vectors]
        else:
            data = embedded.vectors.tolist()
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(data)],
            "model": model.name,
            "usage": {"prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens},
        }

    return app


def _base64_floats(vector: np.ndarray) -> str:
    # OpenAI's base64 embeddings are little-endian float32 values.
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")


def _usage(generation: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.prompt_tokens + generation.completion_tokens,
    }


async def _stream_chunks(
    first: str | Generation,
    rest: AsyncIterator[str | Generation],
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, str], finish_reason: str | None = None, usage: dict | None = None) -> str:
        choices = [] if usage is not None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return json.dumps(body)

    yield chunk({"role": "assistant", "content": ""})
    piece = first
    while True:
        if isinstance(piece, Generation):
            yield chunk({}, finish_reason=piece.finish_reason)
            if include_usage:
                yield chunk({}, usage=_usage(piece))
            break
        yield chunk({"content": piece})
        piece = await anext(rest)
    yield "[DONE]"
