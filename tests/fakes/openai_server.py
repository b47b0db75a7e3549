"""A fake OpenAI-compatible server for tests and benchmarks: answers at once, with a fixed reply.

Run it as `python -m tests.fakes.openai_server --port N`; it serves GET /health, GET /v1/models and a
non-streamed POST /v1/chat/completions for any model name.
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

ANSWER = "Hello from the fake server."
MODEL = "fake-model"


class ChatCompletionRequest(BaseModel):
    # Clients send many optional fields (temperature, top_p, stop, seed, ...); none changes the answer.
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[dict[str, Any]]


def _tokens(text: str) -> int:
    # A word count is close enough: clients only need plausible, non-zero usage.
    return max(1, len(text.split()))


def create_app() -> FastAPI:
    app = FastAPI(title="fake OpenAI")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "fake"}],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatCompletionRequest) -> dict[str, Any]:
        prompt_tokens = sum(_tokens(str(m.get("content") or "")) for m in request.messages)
        completion_tokens = _tokens(ANSWER)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
