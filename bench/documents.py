"""Documents through the whole stack, measured side by side in one run:

1. ingestion of a 100-page text PDF, upload to searchable, against the raw embedder's throughput on
   the same chunks (the model server's /v1/embeddings, called directly in batches);
2. many small .txt uploads: documents completed per second, sustained;
3. search latency through the API (query embedding included) on a store of 10k chunks.

Run it as `python -m bench.documents`; `--repeat 3 --sections ingest` measures only the first part, three
times, alternating which of the two paths goes first (the raw path needs the chunks before the pipeline
has made them: the bench cuts them itself with the same code and settings, and checks they are the ones the
pipeline indexed). The pipeline's time runs from sending the upload to the moment the job marked the
document completed, by the job's own record; the client polls every `--poll-s` seconds meanwhile. Each round
prints the job's steps on that time line and the CPU seconds each process of the stack spent: on two cores,
whatever the pipeline spends beside the embedder is time the embedder waits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np

from activities.documents import ParseLimits, parse_file
from bench.chat_overhead import percentile
from core.chunking import Chunker, read_chunks
from core.embeddings import embed_texts
from core.schemas import ChunkPoint
from core.settings import Settings
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
SECTIONS = ("ingest", "small", "search")


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


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its descendants, living or exited (the parsers are children of a
    forkserver, a child of the worker)."""
    ticks = os.sysconf("SC_CLK_TCK")

    def own(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # utime, stime and the exited children's cutime, cstime: fields 14-17 of stat, here from field 3.
        return sum(int(value) for value in fields[11:15]) / ticks

    total = own(pid)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(pid) and pid in _ancestors(int(entry.name)):
            total += own(int(entry.name))
    return total


def _ancestors(pid: int) -> list[int]:
    found = []
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        found.append(pid)
    return found


class CpuMeter:
    """CPU seconds each process of the stack (and this one) spends between two readings."""

    def __init__(self, running: RunningStack) -> None:
        self.pids = {part.name: part.process.pid for part in running.stack.parts if part.process is not None}

    def read(self) -> dict[str, float]:
        readings = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        readings["bench"] = time.process_time()
        return readings

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: after[name] - before[name] for name in before}


def local_chunks(settings: Settings, pdf: Path) -> list[str]:
    """The chunk texts the pipeline will index for this PDF, cut here with its code and default settings."""
    parsed = parse_file(pdf, "application/pdf", None, ParseLimits.from_settings(settings))
    chunker = Chunker.from_file(
        settings.model_path(settings.local_embedding_model) / "tokenizer.json",
        max_chunk_tokens=settings.max_chunk_tokens,
        overlap_tokens=settings.chunk_overlap_tokens,
        max_embed_tokens=settings.max_embed_tokens,
    )
    chunked = chunker.chunk_pages(parsed.pages, max_chunks=settings.max_embed_chunks)
    return [chunk.text for chunk in chunked.chunks]


async def raw_embedding(
    settings: Settings, texts: list[str], cpu: CpuMeter
) -> tuple[float, dict[str, float]]:
    """Seconds to embed the texts in the embedder's batches, one request at a time, and the CPU spent."""
    before = cpu.read()
    started = time.perf_counter()
    for offset in range(0, len(texts), settings.embed_batch_size):
        batch = texts[offset : offset + settings.embed_batch_size]
        await embed_texts(settings, settings.embedding_model, batch)
    return time.perf_counter() - started, cpu.spent(before, cpu.read())


async def wait_completed(
    api: httpx.AsyncClient, document_id: str, headers: dict[str, str], poll_s: float
) -> dict[str, object]:
    """Polls the document as a client would. Each poll of a document in progress queries its job, which
    costs the server CPU the embedder would otherwise have: the bench polls no more than it must, and
    times the pipeline by the job's own clock, not by when a poll happened to notice."""
    while True:
        document = (await api.get(f"/documents/{document_id}", headers=headers)).json()
        if document.get("status") in ("completed", "failed"):
            return document
        await asyncio.sleep(poll_s)


async def pipeline_run(
    api: httpx.AsyncClient,
    headers: dict[str, str],
    settings: Settings,
    name: str,
    content: bytes,
    cpu: CpuMeter,
    poll_s: float,
) -> dict[str, object]:
    """Upload to searchable: seconds (by the job's clock, and as the polling client saw it), the CPU spent,
    the chunk texts indexed, and the job's timeline."""
    before = set((settings.var_dir / "uploads").rglob("*.chunks-*.jsonl"))
    cpu_before = cpu.read()
    wall_start = datetime.now().astimezone()
    started = time.perf_counter()
    accepted = (await upload(api, headers, name, content)).json()
    document = await wait_completed(api, accepted["document_id"], headers, poll_s)
    seen_s = time.perf_counter() - started
    spent = cpu.spent(cpu_before, cpu.read())
    assert document["status"] == "completed", document
    steps = (await api.get(f"/jobs/{accepted['job_id']}/steps", headers=headers)).json()["steps"]
    # The document is searchable once its row says so: the last step records when that was.
    [finished] = [step["finished_at"] for step in steps if step["name"] == "finish_document"]
    [chunks_file] = set((settings.var_dir / "uploads").rglob("*.chunks-*.jsonl")) - before

    def since_upload(stamp: str) -> float:
        return (datetime.fromisoformat(stamp) - wall_start).total_seconds()

    embeds = [step for step in steps if step["name"] == "embed_chunks"]
    return {
        "first_embed_s": min(since_upload(step["started_at"]) for step in embeds),
        "last_embed_s": max(since_upload(step["finished_at"]) for step in embeds),
        "pipeline_s": since_upload(finished),
        "seen_s": seen_s,
        "pipeline_cpu": spent,
        "texts": [chunk.text for chunk in read_chunks(chunks_file)],
        "timeline": timeline(steps, wall_start),
    }


def timeline(steps: list[dict], wall_start: datetime) -> list[str]:
    """Each step as scheduled / started / finished, in seconds after the upload was sent."""

    def at(stamp: str | None) -> str:
        if stamp is None:
            return "   -  "
        return f"{(datetime.fromisoformat(stamp) - wall_start).total_seconds():6.2f}"

    lines = []
    for step in steps:
        lines.append(
            f"    {step['name']:<18} {at(step['scheduled_at'])} {at(step['started_at'])} "
            f"{at(step['finished_at'])}"
        )
    return lines


async def measure_ingestion(
    api: httpx.AsyncClient,
    headers: dict[str, str],
    settings: Settings,
    repeat: int,
    cpu: CpuMeter,
    poll_s: list[float],
) -> dict[str, object]:
    """A 100-page PDF, upload to searchable, against the raw embedder on the same chunks; a new PDF each
    round (uploads are deduplicated), with the raw path first in every other round. With several polling
    intervals, each takes two rounds in turn (one in each order)."""
    runs: list[dict[str, object]] = []
    for round_ in range(repeat):
        rng = random.Random(1 + round_)
        content = pdf_file([prose(rng, 330) for _ in range(100)])
        pdf = settings.var_dir / f"bench-{round_}.pdf"
        pdf.write_bytes(content)
        texts = local_chunks(settings, pdf)
        raw_first = round_ % 2 == 1
        if raw_first:
            raw_s, raw_cpu = await raw_embedding(settings, texts, cpu)
        poll = poll_s[(round_ // 2) % len(poll_s)]
        run = await pipeline_run(api, headers, settings, f"hundred-{round_}.pdf", content, cpu, poll)
        assert run.pop("texts") == texts, "the bench's chunks are not the ones the pipeline indexed"
        if not raw_first:
            raw_s, raw_cpu = await raw_embedding(settings, texts, cpu)
        runs.append(
            {**run, "chunks": len(texts), "raw_s": raw_s, "raw_cpu": raw_cpu, "raw_first": raw_first,
             "poll_s": poll}
        )  # fmt: skip
    return {"runs": runs}


async def measure(
    running: RunningStack, sections: list[str], repeat: int, poll_s: list[float]
) -> dict[str, object]:
    settings = running.settings
    results: dict[str, object] = {}
    async with httpx.AsyncClient(base_url=running.api_url, timeout=600) as api:
        response = await api.post("/auth/login", data={"username": "admin", "password": ADMIN_PASSWORD})
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}

        # 1. A 100-page PDF, upload to searchable, and the raw embedder on the same chunks.
        if "ingest" in sections:
            results.update(await measure_ingestion(api, headers, settings, repeat, CpuMeter(running), poll_s))

        # 2. Small .txt documents from a few clients at once, until all have completed.
        if "small" in sections:
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
        if "search" in sections:
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


def report(results: dict[str, object], load: tuple[float, float]) -> None:
    print("documents: ingestion and search through the whole stack")
    print(f"cpus {os.cpu_count()}  load average (1 min) {load[0]:.2f} at start, {load[1]:.2f} after\n")
    runs: list[dict] = results.get("runs", [])  # type: ignore[assignment]
    for number, run in enumerate(runs, 1):
        chunks, pipeline_s, raw_s = run["chunks"], run["pipeline_s"], run["raw_s"]
        order = "raw first" if run["raw_first"] else "pipeline first"
        poll = f"client polling every {run['poll_s']:g} s"
        print(f"100-page PDF, {chunks} chunks (round {number}, {order}, {poll})")
        print(f"  upload to searchable      {pipeline_s:8.2f} s   {chunks / pipeline_s:6.1f} chunks/s"
              f"   (the polling client saw it at {run['seen_s']:.2f} s)")  # fmt: skip
        print(f"  raw embedder, same chunks {raw_s:8.2f} s   {chunks / raw_s:6.1f} chunks/s")
        print(f"  ratio (raw time / pipeline time) {raw_s / pipeline_s:.2f}   (goal: at least 0.8)")
        first, last = run["first_embed_s"], run["last_embed_s"]
        print(f"  where its time went: {first:.2f} s before the first embedding, {last - first:.2f} s "
              f"embedding (raw: {raw_s:.2f} s), {pipeline_s - last:.2f} s after the last")  # fmt: skip
        for label, key in (("pipeline", "pipeline_cpu"), ("raw", "raw_cpu")):
            spent = ", ".join(f"{name} {seconds:.2f}" for name, seconds in run[key].items())
            print(f"  CPU seconds, {label:<8}: {spent}")
        print("  the job's steps, seconds after the upload was sent: scheduled, started, finished")
        print("\n".join(run["timeline"]))
    for poll in dict.fromkeys(run["poll_s"] for run in runs):
        ratios = [run["raw_s"] / run["pipeline_s"] for run in runs if run["poll_s"] == poll]
        if len(ratios) > 1:
            median = statistics.median(ratios)
            print(f"ratio over {len(ratios)} rounds polling every {poll:g} s: median {median:.2f}, "
                  f"min {min(ratios):.2f}, max {max(ratios):.2f}")  # fmt: skip
    if runs:
        print()
    if "small_docs_per_s" in results:
        print(f"small .txt documents, {SMALL_CLIENTS} clients: {results['small_docs_per_s']:.2f} completed/s"
              "   (goal: at least 2)\n")  # fmt: skip
    if "search_p50_ms" in results:
        print(f"GET /search/ on {STORE_CHUNKS} chunks, {SEARCHES} queries, query embedding included:")
        p50, p95 = results["search_p50_ms"], results["search_p95_ms"]
        print(f"  p50 {p50:.1f} ms   p95 {p95:.1f} ms   (goal: p95 under 100 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated, of {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the 100-page PDF (default: 1)")
    parser.add_argument(
        "--poll-s",
        default="0.5",
        help="how often the client polls the document, in seconds (default: 0.5); several, comma-separated, "
        "are taken in turn, two rounds each",
    )
    args = parser.parse_args()
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        var_dir = Path(tmp)
        env = stack_env(var_dir)
        if "search" in sections:
            # The first admin gets user id 1 when the stack starts: its chunks are the ones searched.
            print("filling the store ...", file=sys.stderr, flush=True)
            fill_store(env, owner="1", count=STORE_CHUNKS)
        print("starting the stack ...", file=sys.stderr, flush=True)
        running = start_stack(var_dir, env)
        try:
            polls = [float(value) for value in args.poll_s.split(",")]
            results = asyncio.run(measure(running, sections, max(1, args.repeat), polls))
        finally:
            running.stack.stop()
    report(results, (load_before, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
