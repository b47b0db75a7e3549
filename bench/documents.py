"""Documents through the whole stack, measured side by side in one run:

1. ingestion of a 100-page text PDF, upload to searchable, against the raw embedder's throughput on
   the same chunks (the model server's /v1/embeddings, called directly in batches);
2. many small .txt uploads: documents completed per second, sustained;
3. search latency through the API (query embedding included) on a store of 10k chunks.

Run it as `python -m bench.documents`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.chat_overhead import percentile
from core.chunking import read_chunks
from core.embeddings import embed_texts
from core.schemas import ChunkPoint
from core.vector_store import VectorStore, collection_name
from tests.api.routes.test_documents import pdf_file, upload, wait_for_document
from tests.conftest import ADMIN_PASSWORD, RunningStack, settings_for, stack_env, start_stack

WORDS = (
    "harbour keeper lantern storm granite tide rope lens island beacon cliff river stone ship sail "
    "north wind winter light tower night sea wave rock boat fisher village bell road map"
).split()
STORE_CHUNKS = 10_000
SEARCHES = 100
SMALL_DOCS = 40
SMALL_CLIENTS = 4


def prose(rng: random.Random, words: int) -> str:
    sentences, left = [], words
    while left > 0:
        n = min(left, rng.randint(8, 18))
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + ".")
        left -= n
    return " ".join(sentences)


def fill_store(settings_env: dict[str, str], owner: str, count: int) -> None:
    """10k chunks of generated text with random unit vectors, written before the API opens the store:
    search cost depends on the number of points, not on what the vectors mean."""
    settings = settings_for(settings_env)
    rng = np.random.default_rng(7)
    text_rng = random.Random(7)
    model, dim = settings.embedding_model, 384
    collection = collection_name(model, dim)
    with VectorStore.open(settings) as store:
        store.ensure_collection(collection, model, dim)
        for start in range(0, count, 500):
            vectors = rng.normal(size=(500, dim)).astype("float32")
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            store.upsert(
                collection,
                [
                    ChunkPoint(
                        document_id=f"bench-{(start + i) // 50}",
                        chunk_index=(start + i) % 50,
                        owner=owner,
                        filename=f"bench-{(start + i) // 50}.txt",
                        page=1,
                        text=prose(text_rng, 120),
                        language="en",
                        vector=vectors[i].tolist(),
                    )
                    for i in range(500)
                ],
            )


async def measure(running: RunningStack) -> dict[str, float]:
    settings = running.settings
    results: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=running.api_url, timeout=600) as api:
        response = await api.post("/auth/login", data={"username": "admin", "password": ADMIN_PASSWORD})
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}

        # 1. A 100-page PDF, upload to searchable, then the raw embedder on the same chunks.
        rng = random.Random(1)
        content = pdf_file([prose(rng, 330) for _ in range(100)])
        started = time.perf_counter()
        accepted = (await upload(api, headers, "hundred.pdf", content)).json()
        document = await wait_for_document(api, accepted["document_id"], headers)
        pipeline_s = time.perf_counter() - started
        assert document["status"] == "completed", document
        steps = (await api.get(f"/jobs/{accepted['job_id']}/steps", headers=headers)).json()["steps"]
        for step in steps:
            name = step["name"]
            results[f"step {name} s"] = results.get(f"step {name} s", 0.0) + (step["duration_ms"] or 0) / 1000
        chunks_file = next((settings.var_dir / "uploads").rglob("*.chunks-*.jsonl"))
        texts = [chunk.text for chunk in read_chunks(chunks_file)]
        started = time.perf_counter()
        for offset in range(0, len(texts), settings.embed_batch_size):
            await embed_texts(
                settings, settings.embedding_model, texts[offset : offset + settings.embed_batch_size]
            )
        raw_s = time.perf_counter() - started
        results.update(chunks=len(texts), pipeline_s=pipeline_s, raw_s=raw_s)

        # 2. Small .txt documents from a few clients at once, until all have completed.
        queue = list(range(SMALL_DOCS))

        async def client() -> None:
            while queue:
                n = queue.pop()
                text = f"Note {n}: " + prose(random.Random(n), 60)
                accepted = (await upload(api, headers, f"note-{n}.txt", text.encode())).json()
                done = await wait_for_document(api, accepted["document_id"], headers)
                assert done["status"] == "completed", done

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(SMALL_CLIENTS)))
        results["small_docs_per_s"] = SMALL_DOCS / (time.perf_counter() - started)

        # 3. Searches through the API over the 10k chunks filled in before the start (plus the above).
        query_rng = random.Random(3)
        latencies = []
        for i in range(SEARCHES + 5):
            q = " ".join(query_rng.choice(WORDS) for _ in range(4))
            started = time.perf_counter()
            response = await api.get("/search/", params={"q": q, "k": 10}, headers=headers)
            if i >= 5:  # warm-up
                latencies.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200 and response.json(), response.text
        results["search_p50_ms"] = percentile(latencies, 50)
        results["search_p95_ms"] = percentile(latencies, 95)
    return results


def report(results: dict[str, float], load: tuple[float, float]) -> None:
    print("documents: ingestion and search through the whole stack")
    print(f"cpus {os.cpu_count()}  load average (1 min) {load[0]:.2f} at start, {load[1]:.2f} after\n")
    chunks, pipeline_s, raw_s = int(results["chunks"]), results["pipeline_s"], results["raw_s"]
    print(f"100-page PDF, {chunks} chunks")
    print(f"  upload to searchable      {pipeline_s:8.1f} s   {chunks / pipeline_s:6.1f} chunks/s")
    print(f"  raw embedder, same chunks {raw_s:8.1f} s   {chunks / raw_s:6.1f} chunks/s")
    print(f"  ratio (raw time / pipeline time) {raw_s / pipeline_s:.2f}   (goal: at least 0.8)")
    steps = {
        k.removeprefix("step ").removesuffix(" s"): v for k, v in results.items() if k.startswith("step ")
    }
    print("  the job's steps, summed: " + ", ".join(f"{name} {s:.1f} s" for name, s in steps.items()) + "\n")
    print(f"small .txt documents, {SMALL_CLIENTS} clients: {results['small_docs_per_s']:.2f} completed/s"
          "   (goal: at least 2)\n")  # fmt: skip
    print(f"GET /search/ on {STORE_CHUNKS} chunks, {SEARCHES} queries, query embedding included:")
    p50, p95 = results["search_p50_ms"], results["search_p95_ms"]
    print(f"  p50 {p50:.1f} ms   p95 {p95:.1f} ms   (goal: p95 under 100 ms)")


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        var_dir = Path(tmp)
        env = stack_env(var_dir)
        # The first admin gets user id 1 when the stack starts: its chunks are the ones searched.
        print("filling the store ...", file=sys.stderr, flush=True)
        fill_store(env, owner="1", count=STORE_CHUNKS)
        print("starting the stack ...", file=sys.stderr, flush=True)
        running = start_stack(var_dir, env)
        try:
            results = asyncio.run(measure(running))
        finally:
            running.stack.stop()
    report(results, (load_before, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
