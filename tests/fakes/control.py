"""What every fake provider shares: faults on demand, a record of the requests it received, /health.

A request suffers a fault when its model is named `fault-<kind>` (always, so a whole workflow with its
retries sees it), or else when a test queued one with `POST /_faults {"faults": ["server_error"]}`
(each request takes the next queued fault; "500 then success" is one queued fault). Kinds:

- server_error   500 with the provider's error body
- bad_key        the provider's answer to a wrong API key (401; Gemini says 400 API_KEY_INVALID)
- unknown_model  404 with the provider's "model not found" message
- rate_limited   429 with `Retry-After: 7`
- slow           the answer starts after SLOW_S seconds, past any client timeout a test sets
- cut            half the answer, then the connection is dropped (no end of the chunked body)
- truncated      half a stream, then a clean end without the provider's end marker

GET /_requests returns every request received (method, path, query, headers, json body), oldest first;
POST /_reset forgets the requests and the queued faults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

FAULTS = ("server_error", "bad_key", "unknown_model", "rate_limited", "slow", "cut", "truncated")
ERROR_FAULTS = ("server_error", "bad_key", "unknown_model", "rate_limited")
SLOW_S = 30.0
RETRY_AFTER_S = 7
MODEL_FAULT_PREFIX = "fault-"

# The answer every fake gives, in the pieces a stream delivers; JSON mode gets JSON.
ANSWER_PIECES = ["Hello", " from", " the", " fake", " server."]
JSON_ANSWER_PIECES = ['{"answer":', ' "Hello from', " the fake", ' server."}']

# A model of this name answers with the last user message (word by word when streamed), so a test can
# make the model say what it needs, such as an answer the output guard must block.
ECHO_MODEL = "echo"


def echo_pieces(messages: list[dict[str, Any]]) -> list[str]:
    said = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
    return re.findall(r"\s*\S+", said) or [""]


# (status, body, headers) for an error fault, in one provider's own shape.
ErrorRenderer = Callable[[str, str], tuple[int, Any, dict[str, str]]]


class FaultQueue(BaseModel):
    faults: list[str]


class Control:
    def __init__(self, first_token_delay_s: float = 0.0) -> None:
        self.queued: deque[str] = deque()
        self.requests: list[dict[str, Any]] = []
        # A fixed delay before the first byte of every answer (a provider's time to first token).
        self.first_token_delay_s = first_token_delay_s

    async def receive(self, request: Request, model: str | None = None) -> tuple[dict[str, Any], str | None]:
        """Records the request; returns its JSON body and the fault it must suffer, if any.
        `model` is for wire formats that carry the model in the path rather than the body."""
        raw = await request.body()
        body = json.loads(raw) if raw else {}
        self.requests.append(
            {
                "method": request.method,
                "path": request.url.path,
                "query": dict(request.query_params),
                "headers": dict(request.headers),
                "json": body,
            }
        )
        model = model if model is not None else str(body.get("model", ""))
        if model.startswith(MODEL_FAULT_PREFIX):
            return body, model.removeprefix(MODEL_FAULT_PREFIX)
        return body, self.queued.popleft() if self.queued else None

    async def wait(self, fault: str | None) -> None:
        await asyncio.sleep(SLOW_S if fault == "slow" else self.first_token_delay_s)

    def install(self, app: FastAPI) -> None:
        @app.get("/health")
        async def health() -> dict[str, str]:
            return {"status": "ok"}

        @app.post("/_faults")
        async def queue_faults(queue: FaultQueue) -> dict[str, list[str]]:
            unknown = [f for f in queue.faults if f not in FAULTS]
            if unknown:
                raise HTTPException(400, f"unknown faults {unknown}; known: {FAULTS}")
            self.queued.extend(queue.faults)
            return {"queued": list(self.queued)}

        @app.get("/_requests")
        async def received() -> list[dict[str, Any]]:
            return self.requests

        @app.post("/_reset")
        async def reset() -> dict[str, str]:
            self.queued.clear()
            self.requests.clear()
            return {"status": "reset"}


def error_response(fault: str | None, model: str, render: ErrorRenderer) -> Response | None:
    if fault not in ERROR_FAULTS:
        return None
    status, body, headers = render(fault, model)
    if fault == "rate_limited":
        headers = {**headers, "Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse(body, status, headers=headers)


async def _pieces(pieces: list[str], fault: str | None) -> AsyncIterator[str]:
    for index, piece in enumerate(pieces):
        if fault in ("cut", "truncated") and index == len(pieces) // 2:
            if fault == "cut":
                # Raising after the response started makes uvicorn drop the connection mid-body.
                raise ConnectionAbortedError("fault: stream cut halfway")
            return
        yield piece


def streamed(pieces: list[str], fault: str | None, media_type: str) -> Response:
    """Pieces of a body sent as they are produced (chunked), suffering a `cut` or `truncated` fault."""
    return StreamingResponse(_pieces(pieces, fault), media_type=media_type)


def whole(body: dict[str, Any], fault: str | None) -> Response:
    """A JSON answer in one piece; a `cut` (or `truncated`) one stops halfway through its bytes."""
    if fault not in ("cut", "truncated"):
        return JSONResponse(body)
    text = json.dumps(body)
    half = len(text) // 2
    return streamed([text[:half], text[half:]], "cut", "application/json")


def serve(create_app: Callable[[float], FastAPI], doc: str | None) -> None:
    """The command line of every fake: `python -m tests.fakes.<name> --port N [--first-token-ms M]`."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--first-token-ms", type=float, default=0.0, help="delay before every answer")
    args = parser.parse_args()
    app = create_app(args.first_token_ms / 1000)
    # A short grace: a `slow` request still sleeping must not hold up the test run's teardown.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=1)
