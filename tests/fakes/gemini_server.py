"""A fake Gemini API for tests, speaking the wire format of generativelanguage.googleapis.com.

Run it as `python -m tests.fakes.gemini_server --port N [--first-token-ms M]`. It serves
GET /v1beta/models, POST /v1beta/models/{model}:generateContent and
POST /v1beta/models/{model}:streamGenerateContent?alt=sse (server-sent events, each a whole
GenerateContentResponse; the last has finishReason and the full usageMetadata), for any model name.
`generationConfig.responseMimeType: application/json` answers JSON. POST
/v1beta/models/{model}:batchEmbedContents (and :embedContent) answer one vector per request, in order,
of the model's real dimension (or `outputDimensionality`). Faults on demand and the record of
requests are described in tests/fakes/control.py.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from tests.fakes.control import (
    ANSWER_PIECES,
    JSON_ANSWER_PIECES,
    Control,
    error_response,
    serve,
    streamed,
    whole,
)
from tests.fakes.openai_server import fake_vector

MODELS = ("gemini-2.0-flash", "gemini-2.5-flash")
EMBEDDING_DIMENSIONS = {"gemini-embedding-001": 3072, "text-embedding-004": 768}
TASK_TYPES = (
    "RETRIEVAL_QUERY",
    "RETRIEVAL_DOCUMENT",
    "SEMANTIC_SIMILARITY",
    "CLASSIFICATION",
    "CLUSTERING",
    "QUESTION_ANSWERING",
    "FACT_VERIFICATION",
    "CODE_RETRIEVAL_QUERY",
)


def _error(fault: str, model: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Gemini's error bodies (google.rpc.Status), as its API sends them."""
    status, message, code = {
        "server_error": (
            500,
            "An internal error has occurred. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting",
            "INTERNAL",
        ),
        # Gemini answers a wrong key with 400, not 401.
        "bad_key": (400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT"),
        "unknown_model": (
            404,
            f"models/{model} is not found for API version v1beta, or is not supported "
            "for generateContent. Call ListModels to see the list of available models and "
            "their supported methods.",
            "NOT_FOUND",
        ),
        "rate_limited": (
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            "RESOURCE_EXHAUSTED",
        ),
    }[fault]
    return status, {"error": {"code": status, "message": message, "status": code}}, {}


def _words(contents: list[dict[str, Any]]) -> int:
    return sum(len(str(part.get("text", "")).split()) for c in contents for part in c.get("parts", []))


def create_app(first_token_delay_s: float = 0.0) -> FastAPI:
    app = FastAPI(title="fake Gemini")
    control = Control(first_token_delay_s)
    control.install(app)

    @app.get("/v1beta/models")
    async def models() -> dict[str, Any]:
        return {
            "models": [
                {
                    "name": f"models/{name}",
                    "displayName": name,
                    "supportedGenerationMethods": ["generateContent", "countTokens"],
                }
                for name in MODELS
            ]
        }

    def embedding(model: str, request: dict[str, Any]) -> dict[str, Any] | str:
        """One EmbedContentRequest's embedding, or what is wrong with the request."""
        if request.get("model") not in (None, f"models/{model}"):
            return f"request model {request.get('model')!r} differs from the batch's models/{model}"
        text = "".join(str(part.get("text", "")) for part in (request.get("content") or {}).get("parts", []))
        if not text:
            return "* BatchEmbedContentsRequest.requests[].content: contents must not be empty"
        if request.get("taskType", "RETRIEVAL_DOCUMENT") not in TASK_TYPES:
            return f"Invalid value at 'requests[].task_type' ({request.get('taskType')})"
        dimension = int(request.get("outputDimensionality") or EMBEDDING_DIMENSIONS.get(model, 768))
        return {"values": fake_vector(text, dimension)}

    def invalid(message: str) -> Response:
        error = {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}
        return JSONResponse(error, 400)

    # Registered before the generic route below, which would otherwise take these paths.
    @app.post("/v1beta/models/{model}:batchEmbedContents")
    async def batch_embed(model: str, request: Request) -> Response:
        body, fault = await control.receive(request, model)
        failed = error_response(fault, model, _error)
        if failed is not None:
            return failed
        await control.wait(fault)
        requests = body.get("requests") or []
        if not requests or len(requests) > 100:
            return invalid("* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch")
        embeddings = [embedding(model, item) for item in requests]
        for found in embeddings:
            if isinstance(found, str):
                return invalid(found)
        return whole({"embeddings": embeddings}, fault)

    @app.post("/v1beta/models/{model}:embedContent")
    async def embed(model: str, request: Request) -> Response:
        body, fault = await control.receive(request, model)
        failed = error_response(fault, model, _error)
        if failed is not None:
            return failed
        await control.wait(fault)
        found = embedding(model, body)
        return invalid(found) if isinstance(found, str) else whole({"embedding": found}, fault)

    # A colon separates the model from the method: /v1beta/models/gemini-2.0-flash:generateContent
    @app.post("/v1beta/models/{target}")
    async def generate(target: str, request: Request) -> Response:
        model, _, method = target.rpartition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            raise HTTPException(404, f"unknown method {method!r}")
        body, fault = await control.receive(request, model)
        failed = error_response(fault, model, _error)
        if failed is not None:
            return failed
        await control.wait(fault)
        config = body.get("generationConfig") or {}
        pieces = JSON_ANSWER_PIECES if config.get("responseMimeType") == "application/json" else ANSWER_PIECES
        prompt_tokens = _words(body.get("contents", []))
        answer_tokens = len("".join(pieces).split())
        usage = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": answer_tokens,
            "totalTokenCount": prompt_tokens + answer_tokens,
        }
        response_id = uuid.uuid4().hex[:20]

        def response(text: str, last: bool) -> dict[str, Any]:
            candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
            if last:
                candidate["finishReason"] = "STOP"
            return {
                "candidates": [candidate],
                # Streams report the prompt's count on every chunk and the whole count on the last.
                "usageMetadata": usage if last else {"promptTokenCount": prompt_tokens},
                "modelVersion": model,
                "responseId": response_id,
            }

        if method == "generateContent":
            return whole(response("".join(pieces), last=True), fault)
        if request.query_params.get("alt") != "sse":
            raise HTTPException(400, "this fake streams server-sent events only (alt=sse)")
        events = [
            f"data: {json.dumps(response(piece, last=i == len(pieces) - 1))}\r\n\r\n"
            for i, piece in enumerate(pieces)
        ]
        return streamed(events, fault, "text/event-stream")

    return app


if __name__ == "__main__":
    serve(create_app, __doc__)
