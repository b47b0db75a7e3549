"""Prometheus metrics of the model server (served at GET /metrics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from model_server.engine import Generation

GENERATIONS = Counter("model_server_generations_total", "Finished generations", ["model", "finish_reason"])
PROMPT_TOKENS = Counter("model_server_prompt_tokens_total", "Prompt tokens read", ["model"])
COMPLETION_TOKENS = Counter("model_server_completion_tokens_total", "Tokens generated", ["model"])
GENERATION_SECONDS = Histogram(
    "model_server_generation_seconds",
    "Wall time of one generation",
    ["model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
EMBEDDED_TEXTS = Counter("model_server_embedded_texts_total", "Texts embedded", ["model"])


def observe_generation(model: str, seconds: float, generation: Generation) -> None:
    GENERATIONS.labels(model, generation.finish_reason).inc()
    PROMPT_TOKENS.labels(model).inc(generation.prompt_tokens)
    COMPLETION_TOKENS.labels(model).inc(generation.completion_tokens)
    GENERATION_SECONDS.labels(model).observe(seconds)
