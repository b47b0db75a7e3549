"""A fake Ollama server for tests, speaking Ollama's REST wire format.

Run it as `python -m tests.fakes.ollama_server --port N [--first-token-ms M]`. It serves GET /api/tags
and POST /api/chat for any model name, whole (`stream: false`) or streamed as newline-delimited JSON
(Ollama's default): one object per piece with `done: false`, then one with `done: true`, the
done_reason and the token counts. `format: "json"` answers JSON. POST /api/embed answers one vector
per input, in order, of the model's real dimension (or `dimensions`). Faults on demand and the record
of requests are described in tests/fakes/control.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, Response
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

MODELS = ("mistral:7b-instruct-q4_K_M", "llama3.2:latest")
# Embedding models as pulled (a bare name means its :latest tag), and their dimensions.
EMBEDDING_DIMENSIONS = {"nomic-embed-text": 768, "mxbai-embed-large": 1024, "all-minilm": 384}


def _error(fault: str, model: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Ollama's error bodies: {"error": "..."}."""
    status, message = {
        "server_error": (500, "llama runner process has terminated: exit status 2"),
        # A local Ollama has no keys; one behind an authenticating proxy (or ollama.com) answers this.
        "bad_key": (401, "unauthorized"),
        "unknown_model": (404, f'model "{model}" not found, try pulling it first'),
        "rate_limited": (429, "too many requests, please retry later"),
    }[fault]
    return status, {"error": message}, {}


def create_app(first_token_delay_s: float = 0.0) -> FastAPI:
    app = FastAPI(title="fake Ollama")
    control = Control(first_token_delay_s)
    control.install(app)

    @app.get("/api/tags")
    async def tags() -> dict[str, Any]:
        return {
            "models": [
                {
                    "name": name,
                    "model": name,
                    "modified_at": "2024-06-01T12:00:00.000000000Z",
                    "size": 4_109_865_159,
                    "digest": "f" * 64,
                    "details": {
                        "format": "gguf",
                        "family": "llama",
                        "parameter_size": "7.2B",
                        "quantization_level": "Q4_K_M",
                    },
                }
                for name in MODELS
            ]
        }

    @app.post("/api/embed")
    async def embed(request: Request) -> Response:
        body, fault = await control.receive(request)
        model = str(body.get("model", ""))
        failed = error_response(fault, model, _error)
        if failed is not None:
            return failed
        await control.wait(fault)
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
            return JSONResponse({"error": "invalid input type"}, 400)
        name = model.removesuffix(":latest")
        if model in MODELS or f"{name}:latest" in MODELS:
            # What Ollama answers when asked to embed with a chat-only model.
            return JSONResponse({"error": "this model does not support embeddings"}, 400)
        dimension = int(body.get("dimensions") or EMBEDDING_DIMENSIONS.get(name, 768))
        return whole(
            {
                "model": model,
                "embeddings": [fake_vector(text, dimension) for text in texts],
                "total_duration": 1_000_000,
                "load_duration": 100_000,
                "prompt_eval_count": sum(len(text.split()) for text in texts),
            },
            fault,
        )

    @app.post("/api/chat")
    async def chat(request: Request) -> Response:
        body, fault = await control.receive(request)
        model = str(body.get("model", ""))
        failed = error_response(fault, model, _error)
        if failed is not None:
            return failed
        await control.wait(fault)
        pieces = JSON_ANSWER_PIECES if body.get("format") == "json" else ANSWER_PIECES
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))

        def part(content: str, done: bool) -> dict[str, Any]:
            created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            message = {"role": "assistant", "content": content}
            line: dict[str, Any] = {"model": model, "created_at": created, "message": message, "done": done}
            if done:
                line |= {
                    "done_reason": "stop",
                    "total_duration": 1_000_000,
                    "load_duration": 100_000,
                    "prompt_eval_count": prompt_tokens,
                    "prompt_eval_duration": 200_000,
                    "eval_count": len("".join(pieces).split()),
                    "eval_duration": 700_000,
                }
            return line

        # Ollama streams unless told not to.
        if body.get("stream", True) is False:
            return whole(part("".join(pieces), done=True), fault)
        lines = [json.dumps(part(piece, done=False)) + "\n" for piece in pieces]
        lines.append(json.dumps(part("", done=True)) + "\n")
        return streamed(lines, fault, "application/x-ndjson")

    return app


if __name__ == "__main__":
    serve(create_app, __doc__)
