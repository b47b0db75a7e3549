"""Both embedders of the model server, the default English one and the multilingual one, through the
real server that the session `stack` started: shapes, the E5 query/passage prefixes, Russian retrieval,
errors, and the OpenAI SDK.
"""

from __future__ import annotations

import base64
import threading
import time

import httpx
import numpy as np
import openai
import pytest

from tests.model_server.conftest import EMBEDDING_MODEL

MULTILINGUAL_MODEL = "multilingual-e5-small"
BOTH = [EMBEDDING_MODEL, MULTILINGUAL_MODEL]

# A question with its answering passage and two passages on other subjects.
QUESTION = "Какой стране принадлежит остров Пасхи?"
ANSWER = (
    "Остров Пасхи — остров в южной части Тихого океана, принадлежащий Чили. Он знаменит каменными "
    "статуями моаи, которые вырезали древние жители острова."
)
OTHERS = [
    "Волга — крупнейшая река Европы; она впадает в Каспийское море, а на её берегах стоят Тверь, "
    "Нижний Новгород, Казань и Волгоград.",
    "Фотосинтез — процесс, при котором растения на свету превращают углекислый газ и воду в глюкозу "
    "и кислород.",
]


def embed(url: str, model: str, texts: list[str], **extra: str) -> np.ndarray:
    response = httpx.post(f"{url}/v1/embeddings", json={"model": model, "input": texts, **extra}, timeout=300)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == model
    assert [d["index"] for d in body["data"]] == list(range(len(texts)))
    return np.array([d["embedding"] for d in body["data"]])


def test_models_list_names_both_embedders(client: openai.OpenAI) -> None:
    assert set(BOTH) <= {m.id for m in client.models.list()}


@pytest.mark.parametrize("model", BOTH)
def test_embeddings_are_normalised_384_dimensional_with_usage(model: str, client: openai.OpenAI) -> None:
    response = client.embeddings.create(model=model, input=[QUESTION, ANSWER])

    assert response.model == model
    vectors = np.array([d.embedding for d in response.data])
    assert vectors.shape == (2, 384)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0, 1.0], abs=1e-4)
    assert response.usage.prompt_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens


def test_e5_query_and_passage_prefixes_give_different_vectors(model_server_url: str) -> None:
    query = embed(model_server_url, MULTILINGUAL_MODEL, [QUESTION], input_type="query")[0]
    passage = embed(model_server_url, MULTILINGUAL_MODEL, [QUESTION], input_type="passage")[0]
    unspecified = embed(model_server_url, MULTILINGUAL_MODEL, [QUESTION])[0]
    document = embed(model_server_url, MULTILINGUAL_MODEL, [QUESTION], input_type="document")[0]

    # Same text, another prefix: close but clearly not the same vector.
    assert 0.8 < float(query @ passage) < 0.995
    # Without input_type a text is a passage, as ingestion sends it; "document" names the same thing.
    assert unspecified == pytest.approx(passage, abs=1e-6)
    assert document == pytest.approx(passage, abs=1e-6)


def test_minilm_ignores_the_input_type(model_server_url: str) -> None:
    query = embed(model_server_url, EMBEDDING_MODEL, [QUESTION], input_type="query")[0]
    passage = embed(model_server_url, EMBEDDING_MODEL, [QUESTION], input_type="passage")[0]

    assert query == pytest.approx(passage, abs=1e-6)


def test_e5_ranks_the_russian_answer_first_and_by_a_margin(model_server_url: str) -> None:
    query = embed(model_server_url, MULTILINGUAL_MODEL, [QUESTION], input_type="query")[0]
    passages = embed(model_server_url, MULTILINGUAL_MODEL, [ANSWER, *OTHERS], input_type="passage")

    scores = passages @ query
    assert int(np.argmax(scores)) == 0, scores
    assert scores[0] > max(scores[1:]) + 0.05, scores


def test_a_long_request_is_embedded_in_input_order(model_server_url: str) -> None:
    # More texts than one engine batch: the batches must come back joined in the order sent.
    texts = [ANSWER, *OTHERS] * 3
    together = embed(model_server_url, MULTILINGUAL_MODEL, texts)
    alone = np.vstack([embed(model_server_url, MULTILINGUAL_MODEL, [t]) for t in [ANSWER, *OTHERS]])

    assert together == pytest.approx(np.vstack([alone] * 3), abs=1e-5)


def test_openai_sdk_passes_input_type_and_decodes_base64(
    model_server_url: str, client: openai.OpenAI
) -> None:
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    via_sdk = client.embeddings.create(
        model=MULTILINGUAL_MODEL, input=QUESTION, extra_body={"input_type": "query"}
    )
    raw = client.embeddings.create(
        model=MULTILINGUAL_MODEL,
        input=QUESTION,
        encoding_format="base64",
        extra_body={"input_type": "query"},
    )
    direct = embed(model_server_url, MULTILINGUAL_MODEL, [QUESTION], input_type="query")[0]

    assert via_sdk.data[0].embedding == direct.tolist()
    encoded = raw.data[0].embedding
    assert isinstance(encoded, str)
    assert np.frombuffer(base64.b64decode(encoded), dtype="<f4").tolist() == direct.tolist()


def test_unknown_model_is_not_found_in_openai_error_shape(model_server_url: str) -> None:
    response = httpx.post(
        f"{model_server_url}/v1/embeddings", json={"model": "multilingual-e5-large", "input": "x"}
    )

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert error["type"] == "invalid_request_error"
    assert "multilingual-e5-large" in error["message"]
    assert all(name in error["message"] for name in BOTH)


def test_unknown_input_type_is_a_bad_request_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=MULTILINGUAL_MODEL, input="x", extra_body={"input_type": "question"})

    assert caught.value.param == "input_type"


def test_server_answers_health_checks_while_e5_embeds(model_server_url: str) -> None:
    # Several seconds of work for the C engine; the event loop must stay free meanwhile.
    long_texts = [f"{ANSWER} {OTHERS[0]} {OTHERS[1]} " * 4 + str(i) for i in range(8)]
    finished = threading.Event()

    def embed_long_texts() -> None:
        try:
            embed(model_server_url, MULTILINGUAL_MODEL, long_texts)
        finally:
            finished.set()

    worker = threading.Thread(target=embed_long_texts)
    started = time.perf_counter()
    worker.start()
    latencies = []
    time.sleep(0.3)
    while not finished.is_set():
        asked = time.perf_counter()
        assert httpx.get(f"{model_server_url}/health", timeout=30).status_code == 200
        latencies.append(time.perf_counter() - asked)
        time.sleep(0.2)
    worker.join()
    elapsed = time.perf_counter() - started

    assert latencies, f"the request took only {elapsed:.1f} s: too short to check anything"
    assert max(latencies) < min(1.0, elapsed / 2), (latencies, elapsed)
