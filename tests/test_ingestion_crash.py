"""A process killed in the middle of embedding a multi-page PDF: once it is back, the document
completes with exactly the expected chunks, each stored once."""

from __future__ import annotations

import asyncio
import random

import httpx
from temporalio.client import Client

from activities.documents import ParseLimits, parse_file
from core.chunking import Chunker
from tests.api.routes.test_documents import pdf_file, upload, wait_for_document
from tests.conftest import RunningStack

WORDS = "river stone harbour lantern keeper storm granite tide rope lens island beacon cliff".split()


def long_pages(count: int) -> list[str]:
    rng = random.Random(7)
    return [
        f"Page {n} of the keeper's log. " + " ".join(rng.choice(WORDS) for _ in range(450)) + "."
        for n in range(1, count + 1)
    ]


async def test_ingestion_survives_a_process_killed_mid_embedding(
    api: httpx.AsyncClient, user_headers: dict, stack: RunningStack, temporal: Client, tmp_path
) -> None:
    content = pdf_file(long_pages(30))
    path = tmp_path / "log.pdf"
    path.write_bytes(content)
    settings = stack.settings
    parsed = parse_file(path, "application/pdf", None, ParseLimits.from_settings(settings))
    chunker = Chunker.from_file(
        settings.model_path(settings.local_embedding_model),
        max_chunk_tokens=settings.max_chunk_tokens,
        overlap_tokens=settings.chunk_overlap_tokens,
        max_embed_tokens=settings.max_embed_tokens,
    )
    expected = len(chunker.chunk_pages(parsed.pages, max_chunks=settings.max_embed_chunks).chunks)
    assert 64 < expected <= 100  # more than one embedding batch; every chunk fits in one search

    accepted = (await upload(api, user_headers, "log.pdf", content)).json()
    handle = temporal.get_workflow_handle(accepted["job_id"])
    identity = ""
    for _ in range(1200):
        pending = (await handle.describe()).raw_description.pending_activities
        running = [a for a in pending if a.activity_type.name == "embed_chunks" and a.last_worker_identity]
        if running:
            identity = running[0].last_worker_identity
            break
        await asyncio.sleep(0.05)
    assert identity, "the job never reached embed_chunks"
    await asyncio.sleep(1.0)  # inside the embedding call

    # Whichever process embeds (the worker, or the API's own worker) dies, and comes back.
    pid = int(identity.split("@", 1)[0])
    part = next(p for p in stack.stack.parts if p.process is not None and p.process.pid == pid)
    part.process.kill()  # type: ignore[union-attr]
    part.process.wait()  # type: ignore[union-attr]
    await asyncio.to_thread(stack.stack.start_one, part)

    document = await wait_for_document(api, accepted["document_id"], user_headers)
    assert document["status"] == "completed", document
    assert document["chunk_count"] == expected
    body = {"query": "keeper's log", "k": 100, "document_ids": [accepted["document_id"]]}
    hits = (await api.post("/embeddings/search", json=body, headers=user_headers)).json()
    assert sorted(h["chunk_index"] for h in hits) == list(range(expected))  # each chunk once
