"""Documents through the whole stack: upload, the ingestion job, search, dedupe, scoping, deletion."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import UploadFile
from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

from api.errors import ApiError
from api.routes.documents import receive
from core.settings import PROJECT_ROOT, Settings
from tests.api.routes.test_chat import wait_for_job
from tests.conftest import RunningStack, new_user

PAGES = [
    "The lighthouse on Skerry Point was built in 1852 from granite quarried on the island.",
    "Its keeper, Agnes Murray, kept the lamp burning through the great storm of 1881.",
    "Today the tower is automated and the keeper's cottage is a small museum of ropes and lenses.",
]


def text_file(pages: list[str]) -> bytes:
    return "\f".join(pages).encode()  # a form feed separates pages


def pdf_file(pages: list[str]) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


async def upload(
    api: httpx.AsyncClient, headers: dict, name: str, content: bytes, **form: str
) -> httpx.Response:
    return await api.post("/documents", files={"file": (name, content)}, data=form, headers=headers)


async def wait_for_document(api: httpx.AsyncClient, document_id: str, headers: dict) -> dict:
    for _ in range(1800):
        document = (await api.get(f"/documents/{document_id}", headers=headers)).json()
        if document.get("status") in ("completed", "failed"):
            return document
        await asyncio.sleep(0.1)
    raise AssertionError(f"document {document_id} still {document}")


async def test_a_text_document_is_ingested_searchable_and_deleted(
    api: httpx.AsyncClient, user_headers: dict, admin_headers: dict
) -> None:
    response = await upload(api, user_headers, "skerry.txt", text_file(PAGES), title="Skerry Point")
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert response.headers["location"] == f"/documents/{accepted['document_id']}"
    document = await wait_for_document(api, accepted["document_id"], user_headers)
    assert document["status"] == "completed", document
    assert document["filename"] == "skerry.txt" and document["title"] == "Skerry Point"
    assert document["page_count"] == 3 and document["chunk_count"] == 3
    job = (await api.get(f"/jobs/{accepted['job_id']}", headers=user_headers)).json()
    assert job["status"] == "completed"

    hits = (await api.get("/search/", params={"q": "who kept the lamp in the storm", "k": 3},
                          headers=user_headers)).json()  # fmt: skip
    assert hits[0]["document_id"] == accepted["document_id"]
    assert hits[0]["page"] == 2 and "Agnes Murray" in hits[0]["text"]
    body = {"query": "granite quarried", "k": 1, "document_ids": [accepted["document_id"]]}
    [hit] = (await api.post("/embeddings/search", json=body, headers=user_headers)).json()
    assert hit["page"] == 1 and hit["filename"] == "skerry.txt"

    # The same file again is the same document: no second job.
    again = await upload(api, user_headers, "copy.txt", text_file(PAGES))
    assert again.status_code == 200
    assert again.json()["duplicate"] and again.json()["document_id"] == accepted["document_id"]
    assert again.json()["job_id"] == accepted["job_id"]

    # Nobody else sees it, by id or by search.
    stranger, _ = await new_user(api, admin_headers)
    assert (await api.get(f"/documents/{accepted['document_id']}", headers=stranger)).status_code == 404
    assert (await api.get("/search/", params={"q": "Agnes Murray"}, headers=stranger)).json() == []

    listed = (await api.get("/documents", headers=user_headers)).json()
    assert [d["id"] for d in listed["documents"]] == [accepted["document_id"]] and listed["total"] == 1

    assert (
        await api.delete(f"/documents/{accepted['document_id']}", headers=user_headers)
    ).status_code == 204
    assert (await api.get(f"/documents/{accepted['document_id']}", headers=user_headers)).status_code == 404
    assert (await api.get("/search/", params={"q": "Agnes Murray"}, headers=user_headers)).json() == []


async def test_an_offset_beyond_64_bits_is_refused_not_an_error(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    response = await api.get("/documents", params={"offset": 2**63}, headers=user_headers)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "query.offset"
    largest = await api.get("/documents", params={"offset": 2**63 - 1}, headers=user_headers)
    assert largest.status_code == 200
    assert largest.json()["documents"] == []


async def test_a_pdf_keeps_its_page_numbers(api: httpx.AsyncClient, user_headers: dict) -> None:
    response = await upload(api, user_headers, "skerry.pdf", pdf_file(PAGES))
    assert response.status_code == 202, response.text
    document = await wait_for_document(api, response.json()["document_id"], user_headers)
    assert document["status"] == "completed" and document["page_count"] == 3, document["error"]
    hits = (
        await api.get("/search/", params={"q": "museum of ropes and lenses"}, headers=user_headers)
    ).json()
    assert hits[0]["page"] == 3


async def test_bad_uploads_fail_with_a_reason(api: httpx.AsyncClient, user_headers: dict) -> None:
    refused = await upload(api, user_headers, "notes.docx", b"PK\x03\x04 not a supported format")
    assert refused.status_code == 415
    assert refused.json()["error"]["code"] == "unsupported_media_type"
    assert (await upload(api, user_headers, "a.txt", b"x", metadata="[1]")).status_code == 422

    for name, content, reason in (
        ("empty.txt", b"", "empty"),
        ("fake.pdf", b"<html>this is not a pdf</html>", "not a PDF"),
        ("cut.pdf", pdf_file(PAGES)[:400], "damaged"),
    ):
        response = await upload(api, user_headers, name, content)
        assert response.status_code == 202, response.text
        document = await wait_for_document(api, response.json()["document_id"], user_headers)
        assert document["status"] == "failed", (name, document)
        assert reason in document["error"], (name, document["error"])
        job = (await api.get(f"/jobs/{response.json()['job_id']}", headers=user_headers)).json()
        assert job["status"] == "failed" and reason in job["error"]["message"], job


RUSSIAN = [
    "Маяк на мысе Скерри построили в 1852 году из гранита, добытого на острове.",
    "Смотрительница Агнес Мюррей поддерживала огонь всю великую бурю 1881 года.",
]
E5 = "local/multilingual-e5-small"


async def test_a_russian_document_indexed_by_the_multilingual_embedder(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    response = await upload(api, user_headers, "mayak.txt", text_file(RUSSIAN), embedder=E5)
    assert response.status_code == 202, response.text
    document = await wait_for_document(api, response.json()["document_id"], user_headers)
    assert document["status"] == "completed" and document["embedder"] == E5, document
    params = {"q": "кто поддерживал огонь во время бури", "k": 1, "embedder": E5}
    [hit] = (await api.get("/search/", params=params, headers=user_headers)).json()
    assert hit["page"] == 2 and "Агнес" in hit["text"]
    refused = await upload(api, user_headers, "x.txt", b"text", embedder="local/no-such-embedder")
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "unknown_embedder"


async def test_reindex_moves_a_document_to_another_embedder(
    api: httpx.AsyncClient, user_headers: dict, stack: RunningStack
) -> None:
    pages = ["Reindexing note: the Brannock lighthouse lens came from Paris in 1869."]
    response = await upload(api, user_headers, "brannock.txt", text_file(pages))
    document_id = response.json()["document_id"]
    assert (await wait_for_document(api, document_id, user_headers))["status"] == "completed"

    command = [sys.executable, "-m", "assistant", "reindex", "--to", E5, "--document", document_id]
    done = await asyncio.to_thread(
        subprocess.run, command, env=stack.env, cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    [job_id] = [line for line in done.stdout.splitlines() if line.startswith("ingest-")]
    job = await wait_for_job(api, job_id, user_headers, timeout_s=300)
    assert job["status"] == "completed", job

    document = (await api.get(f"/documents/{document_id}", headers=user_headers)).json()
    assert document["embedder"] == E5 and document["job_id"] == job_id and document["chunk_count"] == 1
    query = {"q": "Brannock lighthouse lens", "k": 5}
    found = (await api.get("/search/", params={**query, "embedder": E5}, headers=user_headers)).json()
    assert [h["document_id"] for h in found] == [document_id]
    # The old collection no longer holds it.
    assert (await api.get("/search/", params=query, headers=user_headers)).json() == []


def encrypted_pdf(pages: list[str], password: str) -> bytes:
    reader = PdfReader(io.BytesIO(pdf_file(pages)))
    writer = PdfWriter()
    for page in reader.pages:
        writer.add_page(page)
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


async def test_an_encrypted_pdf_needs_its_password(api: httpx.AsyncClient, user_headers: dict) -> None:
    content = encrypted_pdf(PAGES, "s3cret")
    locked = await upload(api, user_headers, "locked.pdf", content)
    document = await wait_for_document(api, locked.json()["document_id"], user_headers)
    assert document["status"] == "failed" and "give its password" in document["error"], document

    # The same file with its password: the failed document is ingested again, now readable.
    opened = await upload(api, user_headers, "locked.pdf", content, password="s3cret")
    assert opened.status_code == 202 and opened.json()["document_id"] == locked.json()["document_id"]
    document = await wait_for_document(api, opened.json()["document_id"], user_headers)
    assert document["status"] == "completed" and document["page_count"] == 3, document["error"]


async def test_an_upload_over_the_size_limit_is_refused_whole(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, var_dir=tmp_path, upload_max_bytes=1000)  # type: ignore[call-arg]
    big = UploadFile(io.BytesIO(b"x" * 1001), filename="big.txt")
    with pytest.raises(ApiError) as refused:
        await receive(big, settings)
    assert refused.value.status == 413 and "1000 bytes" in refused.value.message
    assert not any((tmp_path / "uploads" / "incoming").iterdir())  # nothing left behind
