"""The model server's operational routes: /health for the stack's readiness check, /metrics for
Prometheus.
"""

from __future__ import annotations

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from tests.model_server.conftest import CHAT_MODEL, EMBEDDING_MODEL, ESSAY


def samples(metrics_text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics_text)
        for s in family.samples
    }


def test_health_is_ok_and_names_the_loaded_models(model_server_url: str) -> None:
    response = httpx.get(f"{model_server_url}/health")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "models": [CHAT_MODEL, EMBEDDING_MODEL, "multilingual-e5-small"],
    }


def test_metrics_count_a_generation_and_its_tokens(model_server_url: str, client: openai.OpenAI) -> None:
    model = {"model": CHAT_MODEL}
    length = frozenset({**model, "finish_reason": "length"}.items())
    before = samples(httpx.get(f"{model_server_url}/metrics").text)

    reply = client.chat.completions.create(model=CHAT_MODEL, messages=ESSAY, temperature=0, max_tokens=3)

    response = httpx.get(f"{model_server_url}/metrics")
    assert response.status_code == 200
    after = samples(response.text)

    def grew(name: str, labels: frozenset) -> float:
        return after[(name, labels)] - before.get((name, labels), 0.0)

    assert reply.usage is not None
    assert grew("model_server_generations_total", length) == 1
    assert grew("model_server_prompt_tokens_total", frozenset(model.items())) == reply.usage.prompt_tokens
    assert grew("model_server_completion_tokens_total", frozenset(model.items())) == 3
    assert grew("model_server_generation_seconds_count", frozenset(model.items())) == 1
    # The instrumentator's request metrics are on the same endpoint.
    assert 'handler="/v1/chat/completions"' in response.text


def test_metrics_count_embedded_texts(model_server_url: str, client: openai.OpenAI) -> None:
    labels = frozenset({"model": EMBEDDING_MODEL}.items())
    before = samples(httpx.get(f"{model_server_url}/metrics").text)

    client.embeddings.create(model=EMBEDDING_MODEL, input=["one", "two"])

    after = samples(httpx.get(f"{model_server_url}/metrics").text)
    name = "model_server_embedded_texts_total"
    assert after[(name, labels)] - before.get((name, labels), 0.0) == 2
