"""A fake OpenAI server for tests and benchmarks, speaking OpenAI's chat-completions wire format.

Run it as `python -m tests.fakes.openai_server --port N [--first-token-ms M]`. It serves GET /v1/models
and POST /v1/chat/completions for any model name, whole or `stream: true` as server-sent events of
`chat.completion.chunk` objects (with a usage chunk when `stream_options.include_usage` is set),
ending with `data: [DONE]`. JSON mode (`response_format: {"type": "json_object"}`) answers JSON.
POST /v1/embeddings answers one vector per input, in order, as floats or base64 (`encoding_format`),
of the model's real dimension (or `dimensions`): the same text always gets the same unit vector.
Faults on demand and the record of requests are described in tests/fakes/control.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import struct
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tests.fakes.control import (
    ANSWER_PIECES,
    ECHO_MODEL,
    JSON_ANSWER_PIECES,
    Control,
    echo_pieces,
    error_response,
    serve,
    streamed,
    whole,
)

ANSWER = "".join(ANSWER_PIECES)
MODEL = "fake-model"


def _tokens(text: str) -> int:
    # A word count is close enough: clients only need plausible, non-zero usage.
    return max(1, len(text.split()))


# Dimensions of OpenAI's embedding models; other names get DEFAULT_DIMENSION.
DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
DEFAULT_DIMENSION = 256


def fake_vector(text: str, dimension: int) -> list[float]:
    """A unit vector that depends only on the text and the dimension (the other fakes use it too)."""
    rng = random.Random(hashlib.sha256(f"{dimension}:{text}".encode()).digest())
    values = [rng.gauss(0.0, 1.0) for _ in range(dimension)]
    norm = sum(v * v for v in values) ** 0.5
    return [v / norm for v in values]


def _error(fault: str, model: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """OpenAI's error bodies, as its API sends them."""
    status, message, kind, code = {
        "server_error": (
            500,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
        "bad_key": (
            401,
            "Incorrect API key provided: sk-fake. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        ),
        "unknown_model": (
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        ),
        "rate_limited": (
            429,
            f"Rate limit reached for {model} on requests per min (RPM): Limit 3, Used 3, "
            "Requested 1. Please try again in 7s.",
            "requests",
            "rate_limit_exceeded",
        ),
    }[fault]
    return status, {"error": {"message": message, "type": kind, "param": None, "code": code}}, {}


def create_app(first_token_delay_s: float = 0.0) -> FastAPI:
    app = FastAPI(title="fake OpenAI")
    control = Control(first_token_delay_s)
    control.install(app)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "fake"}],
        }

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        body, fault = await control.receive(request)
        model = str(body.get("model", ""))
        failed = error_response(fault, model, _error)
        if failed is not None:
            return failed
        await control.wait(fault)
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            # The real API takes token arrays too; nothing here sends them.
            message = "'input' : input must be a non-empty string or a list of non-empty strings"
            error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
            return JSONResponse({"error": error}, 400)
        dimension = int(body.get("dimensions") or DIMENSIONS.get(model, DEFAULT_DIMENSION))
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = fake_vector(text, dimension)
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{dimension}f", *vector)).decode() if as_base64 else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(_tokens(text) for text in texts)
        return whole(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            fault,
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body, fault = await control.receive(request)
        model = str(body.get("model", ""))
        failed = error_response(fault, model, _error)
        if failed is not None:
            return failed
        await control.wait(fault)
        json_mode = (body.get("response_format") or {}).get("type") == "json_object"
        pieces = JSON_ANSWER_PIECES if json_mode else ANSWER_PIECES
        if model == ECHO_MODEL:
            pieces = echo_pieces(body.get("messages", []))
        answer = "".join(pieces)
        prompt_tokens = sum(_tokens(str(m.get("content") or "")) for m in body.get("messages", []))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": _tokens(answer),
            "total_tokens": prompt_tokens + _tokens(answer),
        }
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not body.get("stream"):
            return whole(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
                fault,
            )

        def event(delta: dict[str, str], finish_reason: str | None = None, usage: Any = None) -> str:
            chunk: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            if usage:
                chunk["usage"] = usage
            return f"data: {json.dumps(chunk)}\n\n"

        events = [event({"role": "assistant", "content": ""})]
        events += [event({"content": piece}) for piece in pieces]
        events.append(event({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(event({}, usage=usage))
        events.append("data: [DONE]\n\n")
        return streamed(events, fault, "text/event-stream")

    return app


if __name__ == "__main__":
    serve(create_app, __doc__)
