"""POST /chat/rag and /chat/rag/async through the whole stack: documents uploaded through the API, the
answer with citations, waiting and 202, owner scoping, validation."""

from __future__ import annotations

import asyncio

import httpx

from tests.api.routes.test_documents import text_file, upload, wait_for_document
from tests.conftest import new_user

FERRY = [
    "Timetable notes. Offices are closed on public holidays.",
    "The Brannock ferry crosses the Ostra sound in 25 minutes and carries up to 48 cars per trip.",
    "Tickets can be bought on board by card only.",
]
NOTHING_RELEVANT = "I found nothing in your documents that is relevant to this question."


async def ingest(api: httpx.AsyncClient, headers: dict, name: str, pages: list[str]) -> str:
    response = await upload(api, headers, name, text_file(pages))
    assert response.status_code in (200, 202), response.text
    document = await wait_for_document(api, response.json()["document_id"], headers)
    assert document["status"] == "completed", document
    return document["id"]


async def wait_for_job(api: httpx.AsyncClient, job_id: str, headers: dict, timeout_s: float = 300) -> dict:
    for _ in range(int(timeout_s * 10)):
        job = (await api.get(f"/jobs/{job_id}", headers=headers)).json()
        if job.get("status") not in ("pending", "running"):
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job}")


async def test_rag_answers_from_the_callers_document_citing_file_and_page(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    document_id = await ingest(api, user_headers, "ferry.txt", FERRY)
    body = {"question": "How many cars does the Brannock ferry carry?", "max_tokens": 24, "temperature": 0}
    response = await api.post("/chat/rag", json=body, headers=user_headers)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["job_id"].startswith("rag-") and result["text"] and result["provider"] == "local"
    assert [(s["document_id"], s["page"]) for s in result["sources"]] == [(document_id, 2)]
    assert [(c["document_id"], c["filename"], c["page"]) for c in result["citations"]] == [
        (document_id, "ferry.txt", 2)
    ]
    assert "48 cars" in result["citations"][0]["excerpt"]
    job = (await api.get(f"/jobs/{result['job_id']}", headers=user_headers)).json()
    assert job["kind"] == "rag" and job["status"] == "completed"
    assert job["result"]["citations"] == result["citations"]


async def test_a_question_no_document_covers_gets_a_plain_answer_and_no_sources(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    await ingest(api, user_headers, "ferry.txt", FERRY)
    response = await api.post(
        "/chat/rag", json={"prompt": "Who painted the Mona Lisa?"}, headers=user_headers
    )  # "prompt" is another name for the question
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["text"] == NOTHING_RELEVANT
    assert result["citations"] == [] and result["sources"] == [] and result["answer_job_id"] is None


async def test_past_wait_s_answers_202_and_the_job_completes(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    await ingest(api, user_headers, "ferry.txt", FERRY)
    body = {"question": "How long does the ferry crossing take?", "provider": "openai", "wait_s": 0}
    response = await api.post("/chat/rag", json=body, headers=user_headers)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert response.headers["location"] == f"/jobs/{job_id}" == response.json()["status_url"]
    job = await wait_for_job(api, job_id, user_headers)
    assert job["status"] == "completed" and job["result"]["citations"][0]["page"] == 2


async def test_async_rag_answers_with_a_job_id_at_once_and_keys_make_it_idempotent(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    await ingest(api, user_headers, "ferry.txt", FERRY)
    body = {"question": "How do I pay for a ferry ticket?", "provider": "openai"}
    headers = {**user_headers, "Idempotency-Key": "rag-ticket-question"}
    first = await api.post("/chat/rag/async", json=body, headers=headers)
    assert first.status_code == 202, first.text
    again = await api.post("/chat/rag/async", json=body, headers=headers)
    assert again.json()["job_id"] == first.json()["job_id"]
    assert first.json()["job_id"].startswith("rag-")
    job = await wait_for_job(api, first.json()["job_id"], user_headers)
    assert job["status"] == "completed"
    assert {c["page"] for c in job["result"]["citations"]} == {3}


async def test_only_the_callers_documents_are_searched_unless_an_admin_asks_for_all(
    api: httpx.AsyncClient, admin_headers: dict
) -> None:
    mine, _ = await new_user(api, admin_headers)
    theirs, _ = await new_user(api, admin_headers)
    my_document = await ingest(api, mine, "ferry.txt", FERRY)
    rival = ["The Brannock ferry carries up to 60 cars on its summer timetable."]
    their_document = await ingest(api, theirs, "summer-ferry.txt", rival)
    body = {"question": "How many cars does the Brannock ferry carry?", "provider": "openai"}

    result = (await api.post("/chat/rag", json=body, headers=mine)).json()
    assert {c["document_id"] for c in result["citations"]} == {my_document}
    result = (await api.post("/chat/rag", json=body, headers=theirs)).json()
    assert {c["document_id"] for c in result["citations"]} == {their_document}

    # Limited to another owner's document: nothing of it is found.
    scoped = {**body, "document_ids": [their_document]}
    assert (await api.post("/chat/rag", json=scoped, headers=mine)).json()["text"] == NOTHING_RELEVANT

    refused = await api.post("/chat/rag", json={**body, "all": True}, headers=mine)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    everyone = (
        await api.post("/chat/rag", json={**body, "all": True, "k": 20}, headers=admin_headers)
    ).json()
    assert {my_document, their_document} <= {s["document_id"] for s in everyone["sources"]}


async def test_invalid_requests_get_422_naming_the_field(api: httpx.AsyncClient, user_headers: dict) -> None:
    cases = {
        "question": {"question": ""},
        "k": {"question": "hi", "k": 21},
        "provider": {"question": "hi", "provider": "no-such-provider"},
        "temperature": {"question": "hi", "temperature": 3},
        "document_ids": {"question": "hi", "document_ids": []},
    }
    for field, body in cases.items():
        for path in ("/chat/rag", "/chat/rag/async"):
            response = await api.post(path, json=body, headers=user_headers)
            assert response.status_code == 422, (path, field, response.text)
            assert field in response.json()["error"]["message"], (path, field, response.text)
    assert (await api.post("/chat/rag", json={"k": 3}, headers=user_headers)).status_code == 422
    assert (await api.post("/chat/rag", json={"question": "hi"})).status_code == 401
