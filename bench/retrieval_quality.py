"""Retrieval quality of the documents search: nDCG@10 of four retrievers on a public test collection.

  (a) bm25   plain BM25 as BEIR's Elasticsearch baseline runs it: title and text as two fields,
             English analyzer (lower case, English stop words, Porter stems), best field + 0.5 x other.
  (b) dense  all-MiniLM-L6-v2, cosine over "title text".
  (c) rrf    reciprocal rank fusion (k=60) of (a) and (b).
  (d) ours   core.text_terms sparse vectors scored as Qdrant scores them (IDF modifier x stored
             BM25 saturation) fused with (b) by core.fusion.fuse.

  (e) endpoint  the product itself (--endpoint): the whole stack started on a fresh state directory,
             every document uploaded through POST /documents, each query sent to GET /search/ (k=100);
             a document scores as its best chunk among the hits.

"ours" and "endpoint" are both functions of (corpus, queries) -> run; any gap between them is a
difference between this re-implementation and the product.
Collections live in $BENCH_DATA_DIR/<name>/ (default var/bench-data) in BEIR's layout; they come from
other public repositories and are not kept in this one: bench/data/README.md says where each came from
and how it was converted. Run it as `python -m bench.retrieval_quality --collection cacm` (add --tune
to search the fusion and sparse settings on the dev queries first; the test queries are only scored;
add --endpoint to measure the running product beside them).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import httpx
import numpy as np
import Stemmer

from bench.chat_overhead import percentile
from core import text_terms
from core.fusion import (
    DENSE_WEIGHT,
    PRF_DOCS,
    PRF_WEIGHT,
    RRF_K,
    SPARSE_WEIGHT,
    feedback_vector,
    fuse,
    fuse_scores,
)

ROOT = Path(__file__).resolve().parents[1]
# The collections come from other public repositories and stay out of this one (bench/data/README.md
# says where each comes from and how it is converted).
DATA = Path(os.environ.get("BENCH_DATA_DIR", ROOT / "var" / "bench-data"))
MODEL_DIR = ROOT / "models" / "all-MiniLM-L6-v2"
CACHE = Path(os.environ.get("BENCH_CACHE", ROOT / "var" / "bench"))
TOP = 100  # each retriever's depth; fusion sees the top TOP of each list
NDCG_AT = 10
# Fastest of 16/32/64/128 on this 2-core CPU (--probe-batch: 96, 67, 22, 35 docs/s on CACM).
EMBED_BATCH = 16

# "ours" uses the product's constants (core.text_terms, core.fusion); --tune searches around them.
OURS_DENSE_WEIGHT = DENSE_WEIGHT
OURS_SPARSE_WEIGHT = SPARSE_WEIGHT
OURS_RRF_K = RRF_K
OURS_FUSION = "rrf"  # "rrf" (core.fusion.fuse) or "scores" (core.fusion.fuse_scores)
# Ingestion's chunking (settings.max_chunk_tokens / chunk_overlap_tokens); 0 keeps documents whole.
OURS_CHUNK_TOKENS = 200
CHUNK_OVERLAP_TOKENS = 40

# Counts published with each collection, checked on load so a truncated file cannot pass.
EXPECTED: dict[str, tuple[int, int, int]] = {
    "nfcorpus": (3633, 323, 12334),  # BEIR: documents, test queries, test judgements
    "cacm": (3204, 52, 796),  # documents, judged queries, judgements
    "cranfield": (1400, 225, 1837),
}


class Doc(TypedDict):
    title: str
    text: str


Corpus = dict[str, Doc]
Queries = dict[str, str]
Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]
Retriever = Callable[[Corpus, Queries], Run]


@dataclass
class Collection:
    name: str
    corpus: Corpus
    queries: Queries  # only judged queries
    qrels: Qrels
    dev: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    digest: str = ""


def _jsonl(path: Path) -> Iterable[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def load_collection(name: str) -> Collection:
    """A collection from bench/data/<name>/ (corpus.jsonl.gz, queries.jsonl.gz, qrels/test.tsv.gz)."""
    folder = DATA / name
    corpus_path = folder / "corpus.jsonl.gz"
    if not corpus_path.exists():
        raise SystemExit(f"{corpus_path} is missing: see bench/data/README.md for where it comes from")
    corpus: Corpus = {
        d["_id"]: {"title": d.get("title") or "", "text": d.get("text") or ""} for d in _jsonl(corpus_path)
    }
    qrels: Qrels = {}
    with gzip.open(folder / "qrels" / "test.tsv.gz", "rt", encoding="utf-8") as rows:
        next(rows)  # header
        for row in rows:
            if row.strip():
                qid, did, score = row.rstrip("\n").split("\t")
                qrels.setdefault(qid, {})[did] = int(score)
    queries = {q["_id"]: q["text"] for q in _jsonl(folder / "queries.jsonl.gz") if q["_id"] in qrels}
    found = (len(corpus), len(queries), sum(len(v) for v in qrels.values()))
    if name in EXPECTED and found != EXPECTED[name]:
        raise SystemExit(f"{name}: found {found} (docs, queries, judgements), published {EXPECTED[name]}")
    digest = hashlib.sha256(corpus_path.read_bytes()).hexdigest()[:16]
    ids = sorted(queries, key=_natural)
    dev_path = folder / "qrels" / "dev.tsv.gz"
    if dev_path.exists():
        dev: list[str] = []  # a published dev split would go here; none of ours has one yet
        test = ids
    else:
        # No published dev split: every other judged query (by id order) tunes, the rest is held out.
        dev, test = ids[0::2], ids[1::2]
    return Collection(name, corpus, queries, qrels, dev, test, digest)


def _natural(key: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", key)
    return (int(digits) if digits else 0, key)


# ---------------------------------------------------------------- metrics


def ndcg_per_query(run: Run, qrels: Qrels, qids: Iterable[str], k: int = NDCG_AT) -> list[float]:
    """nDCG@k of each query as trec_eval's ndcg_cut computes it: linear gains, log2(rank + 1)
    discount, ties in score broken by descending document id; a query with no results scores 0."""
    scores = []
    for qid in qids:
        judged = qrels.get(qid, {})
        by_id = sorted(run.get(qid, {}).items(), reverse=True)
        ranked = sorted(by_id, key=lambda item: -item[1])[:k]  # stable: equal scores keep id order
        dcg = sum(judged.get(did, 0) / math.log2(rank + 2) for rank, (did, _) in enumerate(ranked))
        ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
        idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
        scores.append(dcg / idcg if idcg > 0 else 0.0)
    return scores


def ndcg(run: Run, qrels: Qrels, qids: Iterable[str], k: int = NDCG_AT) -> float:
    scores = ndcg_per_query(run, qrels, qids, k)
    return sum(scores) / len(scores) if scores else 0.0


def paired_p(a: list[float], b: list[float], rounds: int = 20_000) -> float:
    """Two-sided p-value of a paired randomisation test (random sign flips of the per-query
    differences): how often chance alone gives a mean difference at least as large."""
    diffs = np.array(a) - np.array(b)
    observed = abs(diffs.mean())
    signs = np.random.default_rng(0).choice((-1.0, 1.0), size=(rounds, len(diffs)))
    return float((np.abs((signs * diffs).mean(axis=1)) >= observed - 1e-12).mean())


def ndcg_checked(run: Run, qrels: Qrels, qids: list[str]) -> float:
    """Our nDCG@10, refusing to report it if pytrec_eval disagrees."""
    import pytrec_eval

    mine = ndcg(run, qrels, qids)
    wanted = {q: qrels[q] for q in qids}
    evaluator = pytrec_eval.RelevanceEvaluator(wanted, {f"ndcg_cut.{NDCG_AT}"})
    per_query = evaluator.evaluate({q: run.get(q, {}) for q in qids})
    theirs = sum(per_query.get(q, {}).get(f"ndcg_cut_{NDCG_AT}", 0.0) for q in qids) / len(qids)
    if abs(mine - theirs) > 1e-6:
        raise AssertionError(f"nDCG@{NDCG_AT}: ours {mine:.6f}, pytrec_eval {theirs:.6f}")
    return mine


def top(scores: np.ndarray, ids: list[str], n: int = TOP) -> dict[str, float]:
    n = min(n, len(ids))
    best = np.argpartition(-scores, n - 1)[:n]
    return {ids[i]: float(scores[i]) for i in best if scores[i] > 0 or n == len(ids)}


def ranked(hits: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(hits.items(), key=lambda item: (-item[1], item[0]))


# ---------------------------------------------------------------- (a) BEIR's BM25


# Lucene's English stop set, which Elasticsearch's "english" analyzer uses.
LUCENE_ENGLISH_STOP = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with".split()
)
_porter = Stemmer.Stemmer("porter")


def english_analyzer(text: str) -> list[str]:
    tokens = re.findall(r"\w+(?:'\w+)?", text.lower())
    tokens = [t[:-2] if t.endswith("'s") else t for t in tokens]
    return _porter.stemWords([t for t in tokens if t not in LUCENE_ENGLISH_STOP])


def bm25_multifield(corpus: Corpus, queries: Queries) -> Run:
    """BM25 (k1=1.2, b=0.75, Lucene's formula) per field, combined as multi_match best_fields with
    tie_breaker 0.5, the query BEIR sends to Elasticsearch."""
    import bm25s

    ids = list(corpus)
    fields = []
    for name in ("title", "text"):
        index = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
        index.index([english_analyzer(corpus[i][name]) or [""] for i in ids], show_progress=False)
        fields.append(index)
    run: Run = {}
    for qid, text in queries.items():
        tokens = english_analyzer(text)
        per_field = []
        for index in fields:
            known = [t for t in tokens if t in index.vocab_dict]
            per_field.append(index.get_scores(known) if known else np.zeros(len(ids)))
        both = np.vstack(per_field)
        combined = both.max(axis=0) + 0.5 * (both.sum(axis=0) - both.max(axis=0))
        run[qid] = top(combined, ids)
    return run


# ---------------------------------------------------------------- (b) dense


def _embedder():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(MODEL_DIR), device="cpu")


def doc_text(doc: Doc) -> str:
    return f"{doc['title']} {doc['text']}".strip()


def corpus_embeddings(corpus: Corpus, digest: str, batch: int = EMBED_BATCH) -> np.ndarray:
    """Normalised embeddings of every document in corpus order, cached per corpus file and model."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"minilm-{digest}-{len(corpus)}.npy"
    if path.exists():
        return np.load(path)
    vectors = _embedder().encode(
        [doc_text(d) for d in corpus.values()],
        batch_size=batch,
        normalize_embeddings=True,
        convert_to_numpy=True,
    )
    np.save(path, vectors)
    return vectors


def query_embeddings(queries: Queries) -> dict[str, np.ndarray]:
    vectors = _embedder().encode(list(queries.values()), batch_size=EMBED_BATCH, normalize_embeddings=True)
    return dict(zip(queries, vectors, strict=True))


def dense_scores(corpus: Corpus, queries: Queries, digest: str) -> dict[str, np.ndarray]:
    docs = corpus_embeddings(corpus, digest)
    return {qid: docs @ vec for qid, vec in query_embeddings(queries).items()}


def dense_run(corpus: Corpus, scores: dict[str, np.ndarray]) -> Run:
    ids = list(corpus)
    return {qid: top(s, ids) for qid, s in scores.items()}


def probe_batch(
    corpus: Corpus, sizes: tuple[int, ...] = (16, 32, 64, 128), sample: int = 512
) -> dict[int, float]:
    """Documents per second of the embedder at each batch size, on a sample of the corpus."""
    model = _embedder()
    texts = [doc_text(d) for d in itertools.islice(corpus.values(), sample)]
    model.encode(texts[:32], batch_size=32)  # warm-up
    speed = {}
    for size in sizes:
        started = time.perf_counter()
        model.encode(texts, batch_size=size)
        speed[size] = len(texts) / (time.perf_counter() - started)
    return speed


# ---------------------------------------------------------------- (c) RRF of (a) and (b)


def rrf(runs: list[Run], k: int = 60) -> Run:
    qids = set().union(*runs)
    return {
        qid: dict(fuse([ranked(r.get(qid, {})) for r in runs], [1.0] * len(runs), k)[:TOP]) for qid in qids
    }


# ---------------------------------------------------------------- (d) ours


@dataclass(frozen=True)
class OursConfig:
    k1: float = text_terms.BM25_K1
    b: float = text_terms.BM25_B
    avg_length: float = text_terms.BM25_AVG_LENGTH
    title_weight: float = text_terms.TITLE_WEIGHT
    dense_weight: float = OURS_DENSE_WEIGHT
    sparse_weight: float = OURS_SPARSE_WEIGHT
    rrf_k: int = OURS_RRF_K
    fusion: str = OURS_FUSION
    chunk_tokens: int = OURS_CHUNK_TOKENS
    prf_docs: int = PRF_DOCS
    prf_weight: float = PRF_WEIGHT


@dataclass
class Chunked:
    """A corpus cut into chunks as ingestion cuts documents; a document scores as its best chunk."""

    chunks: Corpus  # "<doc id>#<n>" -> title and the chunk's text
    doc_ids: list[str]
    starts: np.ndarray  # index of each document's first chunk, chunks of one document being adjacent

    def per_doc(self, chunk_scores: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(chunk_scores, self.starts)


def chunk_corpus(corpus: Corpus, chunk_tokens: int, overlap: int = CHUNK_OVERLAP_TOKENS) -> Chunked:
    """Windows of `chunk_tokens` embedder tokens overlapping by `overlap`; 0 keeps documents whole."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    chunks: Corpus = {}
    starts = []
    for doc_id, doc in corpus.items():
        starts.append(len(chunks))
        offsets = tokenizer.encode(doc["text"], add_special_tokens=False).offsets if chunk_tokens else []
        if len(offsets) <= chunk_tokens or not chunk_tokens:
            chunks[f"{doc_id}#0"] = doc
            continue
        step = chunk_tokens - overlap
        for n, first in enumerate(range(0, max(len(offsets) - overlap, 1), step)):
            window = offsets[first : first + chunk_tokens]
            chunks[f"{doc_id}#{n}"] = {
                "title": doc["title"],
                "text": doc["text"][window[0][0] : window[-1][1]],
            }
    return Chunked(chunks, list(corpus), np.array(starts))


class SparseIndex:
    """The sparse side as Qdrant computes it: stored values times the IDF modifier's
    ln(1 + (N - df + 0.5) / (df + 0.5)), summed over the query's terms (each valued 1)."""

    def __init__(self, corpus: Corpus, config: OursConfig) -> None:
        from scipy.sparse import csc_matrix

        self.ids = list(corpus)
        columns: dict[int, int] = {}
        rows, cols, vals = [], [], []
        for row, doc in enumerate(corpus.values()):
            indices, values = text_terms.document_sparse(
                doc["text"],
                title=doc["title"] or None,
                k1=config.k1,
                b=config.b,
                avg_length=config.avg_length,
                title_weight=config.title_weight,
            )
            for index, value in zip(indices, values, strict=True):
                rows.append(row)
                cols.append(columns.setdefault(index, len(columns)))
                vals.append(value)
        self.columns = columns
        self.matrix = csc_matrix((vals, (rows, cols)), shape=(len(self.ids), len(columns)))
        n = len(self.ids)
        df = np.diff(self.matrix.indptr)
        self.idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def scores(self, query: str) -> np.ndarray:
        indices, values = text_terms.query_sparse(query)
        query_vector = np.zeros(len(self.columns))
        for index, value in zip(indices, values, strict=True):
            if index in self.columns:
                query_vector[self.columns[index]] = value
        return self.matrix @ (query_vector * self.idf)


def ours_from_parts(
    chunked: Chunked,
    queries: Queries,
    query_vectors: dict[str, np.ndarray],
    chunk_vectors: np.ndarray,
    config: OursConfig,
    sparse: SparseIndex,
) -> Run:
    ids = chunked.doc_ids
    weights = [config.dense_weight, config.sparse_weight]
    ends = np.append(chunked.starts[1:], len(chunked.chunks))
    position = {doc_id: i for i, doc_id in enumerate(ids)}

    def fused(
        dense_hits: list[tuple[str, float]], sparse_hits: list[tuple[str, float]]
    ) -> list[tuple[str, float]]:
        if config.fusion == "scores":
            return fuse_scores([dense_hits, sparse_hits], weights)
        return fuse([dense_hits, sparse_hits], weights, config.rrf_k)

    run: Run = {}
    for qid, text in queries.items():
        query = query_vectors[qid]
        sparse_hits = ranked(top(chunked.per_doc(sparse.scores(text)), ids))
        first = fused(ranked(top(chunked.per_doc(chunk_vectors @ query), ids)), sparse_hits)
        if config.prf_docs:
            # As the product does it: the vectors of the best chunks of the first hits.
            hits = []
            for doc_id, _ in first[: config.prf_docs]:
                lo, hi = chunked.starts[position[doc_id]], ends[position[doc_id]]
                hits.append(chunk_vectors[lo + int(np.argmax(chunk_vectors[lo:hi] @ query))].tolist())
            moved = np.array(feedback_vector(query.tolist(), hits, config.prf_weight))
            first = fused(ranked(top(chunked.per_doc(chunk_vectors @ moved), ids)), sparse_hits)
        run[qid] = dict(first[:TOP])
    return run


def make_ours(digest: str, config: OursConfig | None = None) -> Retriever:
    """The product's hybrid search, in process: (corpus, queries) -> run."""
    chosen = config or OursConfig()

    def ours(corpus: Corpus, queries: Queries) -> Run:
        chunked = chunk_corpus(corpus, chosen.chunk_tokens)
        vectors = corpus_embeddings(
            chunked.chunks, f"{digest}-c{chosen.chunk_tokens}" if chosen.chunk_tokens else digest
        )
        sparse = SparseIndex(chunked.chunks, chosen)
        return ours_from_parts(chunked, queries, query_embeddings(queries), vectors, chosen, sparse)

    return ours


class Prepared:
    """A collection's chunkings and embeddings, made once and shared by every configuration."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self.query_vectors = query_embeddings(collection.queries)
        self._chunked: dict[int, tuple[Chunked, np.ndarray]] = {}

    def chunked(self, chunk_tokens: int) -> tuple[Chunked, np.ndarray]:
        if chunk_tokens not in self._chunked:
            chunked = chunk_corpus(self.collection.corpus, chunk_tokens)
            key = f"{self.collection.digest}-c{chunk_tokens}" if chunk_tokens else self.collection.digest
            vectors = corpus_embeddings(chunked.chunks, key)
            self._chunked[chunk_tokens] = (chunked, vectors)
        return self._chunked[chunk_tokens]

    def run(self, config: OursConfig, qids: Iterable[str], sparse: SparseIndex | None = None) -> Run:
        chunked, vectors = self.chunked(config.chunk_tokens)
        sparse = sparse or SparseIndex(chunked.chunks, config)
        queries = {q: self.collection.queries[q] for q in qids}
        return ours_from_parts(chunked, queries, self.query_vectors, vectors, config, sparse)


# Searched by --tune around the product's constants. A first full pass (chunks 0/200, k1 1.2/1.5,
# b 0.5/0.75, avg length 100/200, title weight 1/2/3, 17 fusion settings, no feedback) had k1 1.5,
# b 0.5, avg length 100, title weight 3 and 200-token chunks in all of its five best settings.
TUNE_SPARSE = list(itertools.product((200,), (1.5,), (0.5,), (100.0, 200.0), (2.0, 3.0)))
TUNE_FUSION = [("rrf", w, k) for w in (0.5, 0.75, 1.0) for k in (30, 60)] + [("scores", 1.0, RRF_K)]
TUNE_FEEDBACK = [(0, 0.0), (3, 0.5), (3, 1.0), (5, 1.0)]
# The second pass (this grid) chose avg length 200, dense weight 1, RRF k 60, feedback from 3 hits at
# weight 1: dev gain over rrf +0.029 (CACM) and +0.025 (Cranfield); those are the product's defaults.


def tune(prepared: list[Prepared], baseline: dict[str, float]) -> OursConfig:
    """Grid search on the dev queries only. The objective is the smallest gain over `baseline` (each
    collection's dev nDCG@10 of (c)) across collections, so one collection cannot carry the choice."""
    per_collection: dict[OursConfig, dict[str, float]] = {}
    for chunk_tokens, k1, b, avg_length, title_weight in TUNE_SPARSE:
        base = OursConfig(
            k1=k1, b=b, avg_length=avg_length, title_weight=title_weight, chunk_tokens=chunk_tokens
        )
        for each in prepared:
            chunked, _ = each.chunked(chunk_tokens)
            sparse = SparseIndex(chunked.chunks, base)
            for fusion, dense_weight, rrf_k in TUNE_FUSION:
                config = OursConfig(
                    k1, b, avg_length, title_weight, dense_weight, 1.0, rrf_k, fusion, chunk_tokens
                )
                run = each.run(config, each.collection.dev, sparse)
                name = each.collection.name
                gain = ndcg(run, each.collection.qrels, each.collection.dev) - baseline[name]
                per_collection.setdefault(config, {})[name] = gain
    ranking = sorted(
        per_collection.items(), key=lambda item: (-min(item[1].values()), -sum(item[1].values()))
    )
    for config, gains in ranking[:5]:
        shown = ", ".join(f"{name} {gain:+.4f}" for name, gain in gains.items())
        print(f"dev gain over rrf: {shown}  {config}")
    return ranking[0][0]


# ---------------------------------------------------------------- (e) the product's search endpoint


UPLOADERS = 8  # uploads sent at once
IN_FLIGHT = 32  # documents being ingested at once: enough to keep the pipeline busy, few to poll
POLL_S = 1.0


@dataclass
class EndpointStats:
    """What the endpoint run measured besides the run itself."""

    uploaded: int = 0  # distinct documents (the product keeps one document per identical file)
    failed: list[str] = field(default_factory=list)  # "<doc id>: <error>"
    ingest_s: float = 0.0
    search_ms: list[float] = field(default_factory=list)
    docs_per_query: list[int] = field(default_factory=list)


async def send(api: httpx.AsyncClient, method: str, url: str, **kwargs: object) -> httpx.Response:
    """A request, sent again if the connection broke: uvicorn closes a keep-alive connection idle for
    5 s, and a client that reuses it at that moment reads nothing. Uploads are safe to repeat (the same
    file is the same document)."""
    for attempt in range(3):
        try:
            return await api.request(method, url, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError:
            if attempt == 2:
                raise
            await asyncio.sleep(1)
    raise AssertionError("unreachable")


def upload_body(doc: Doc) -> bytes:
    # A document with no text would be an empty file, which cannot be ingested: its title stands in.
    return (doc["text"] if doc["text"].strip() else doc["title"]).encode()


async def ingest_corpus(
    api: httpx.AsyncClient, headers: dict[str, str], corpus: Corpus, stats: EndpointStats
) -> dict[str, list[str]]:
    """Uploads every document as "<doc id>.txt" with its title, UPLOADERS at a time and at most
    IN_FLIGHT in the pipeline, and waits until none is processing. Returns the product's document id
    -> the corpus ids it stands for (identical files are one document)."""
    by_document: dict[str, list[str]] = {}
    queue = list(corpus)
    queue.reverse()
    processing: set[str] = set()
    slots = asyncio.Semaphore(IN_FLIGHT)
    uploads_done = asyncio.Event()

    async def uploader() -> None:
        while queue:
            doc_id = queue.pop()
            doc = corpus[doc_id]
            await slots.acquire()
            form = {"title": doc["title"][:255]} if doc["title"].strip() else {}
            file = (f"{doc_id}.txt", upload_body(doc))
            response = await send(api, "POST", "/documents", files={"file": file}, data=form, headers=headers)
            if response.status_code not in (200, 202):
                stats.failed.append(f"{doc_id}: upload {response.status_code} {response.text[:200]}")
                slots.release()
                continue
            accepted = response.json()
            by_document.setdefault(accepted["document_id"], []).append(doc_id)
            if accepted["status"] == "processing":
                processing.add(accepted["document_id"])
            else:
                slots.release()  # the same file as an earlier one, already done: nothing new is ingested

    async def poller() -> None:
        # One listing of the processing documents per poll, not one request per document: a read of a
        # document in progress queries its job, and that CPU is the embedder's.
        while not (uploads_done.is_set() and not processing):
            await asyncio.sleep(POLL_S)
            if not processing:
                continue
            page = await send(
                api, "GET", "/documents", params={"status": "processing", "limit": 200}, headers=headers
            )
            still = {document["id"] for document in page.json()["documents"]}
            for document_id in processing - still:
                processing.discard(document_id)
                slots.release()
            if time.perf_counter() - shown[0] > 60:
                shown[0] = time.perf_counter()
                left = len(queue) + len(processing)
                print(
                    f"  {time.perf_counter() - started:5.0f} s: {left} documents still to ingest", flush=True
                )

    started = time.perf_counter()
    shown = [started]
    watcher = asyncio.create_task(poller())
    await asyncio.gather(*(uploader() for _ in range(UPLOADERS)))
    uploads_done.set()
    await watcher
    stats.ingest_s = time.perf_counter() - started
    stats.uploaded = len(by_document)
    offset = 0
    while True:
        page = (
            await api.get(
                "/documents", params={"status": "failed", "limit": 200, "offset": offset}, headers=headers
            )
        ).json()
        for document in page["documents"]:
            ids = by_document.pop(document["id"], [document["filename"]])
            stats.failed.append(f"{', '.join(ids)}: {document['error']}")
        offset += 200
        if offset >= page["total"]:
            break
    return by_document


async def search_all(
    api: httpx.AsyncClient,
    headers: dict[str, str],
    queries: Queries,
    by_document: dict[str, list[str]],
    stats: EndpointStats,
) -> Run:
    """Each query through GET /search/ at k=TOP, one at a time; a document scores as its best chunk."""
    run: Run = {}
    warm = next(iter(queries.values()))
    await api.get("/search/", params={"q": warm, "k": TOP}, headers=headers)  # loads the query path
    for qid, text in queries.items():
        started = time.perf_counter()
        response = await send(api, "GET", "/search/", params={"q": text, "k": TOP}, headers=headers)
        stats.search_ms.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        hits: dict[str, float] = {}
        for hit in response.json():  # best first: a document's first chunk is its best
            for doc_id in by_document.get(hit["document_id"], []):
                hits.setdefault(doc_id, hit["score"])
        stats.docs_per_query.append(len({hit["document_id"] for hit in response.json()}))
        run[qid] = hits
    return run


def make_endpoint(stats: EndpointStats) -> Retriever:
    """The product's search as a retriever: a whole stack on a fresh state directory per call, stopped
    after. Nothing is reused between runs, so the numbers are those of the code as it is now."""
    from tests.conftest import ADMIN_PASSWORD, stack_env, start_stack

    def endpoint(corpus: Corpus, queries: Queries) -> Run:
        with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
            var_dir = Path(tmp)
            print("starting the stack ...", flush=True)
            running = start_stack(var_dir, stack_env(var_dir))
            try:

                async def measure() -> Run:
                    async with httpx.AsyncClient(base_url=running.api_url, timeout=600) as api:
                        login = await api.post(
                            "/auth/login", data={"username": "admin", "password": ADMIN_PASSWORD}
                        )
                        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
                        print(f"uploading {len(corpus)} documents ...", flush=True)
                        by_document = await ingest_corpus(api, headers, corpus, stats)
                        print(f"ingested in {stats.ingest_s:.0f} s; searching ...", flush=True)
                        return await search_all(api, headers, queries, by_document, stats)

                return asyncio.run(measure())
            except BaseException:
                kept = Path(tempfile.mkdtemp(prefix="bench-retrieval-logs-"))
                shutil.copytree(running.logs, kept, dirs_exist_ok=True)
                print(f"the stack's logs are kept in {kept}", flush=True)
                raise
            finally:
                running.stack.stop()

    return endpoint


# ---------------------------------------------------------------- report


def report(collection: Collection, runs: dict[str, Run]) -> None:
    """nDCG@10 per retriever; the ratio and the p-value (paired randomisation test on the test
    queries) compare each with bm25 and ours with rrf."""
    sizes = f"judged queries dev {len(collection.dev)} / test {len(collection.test)}"
    print(f"\n{collection.name}: {len(collection.corpus)} docs, {sizes}")
    print(
        f"{'retriever':<8} {'test':>7} {'vs bm25':>8} {'p':>6} {'vs rrf':>7} {'p':>6} {'dev':>7} {'all':>7}"
    )
    everything = sorted(collection.queries, key=_natural)
    per_query = {name: ndcg_per_query(run, collection.qrels, collection.test) for name, run in runs.items()}
    base = sum(per_query["bm25"]) / len(collection.test)
    rrf_test = sum(per_query["rrf"]) / len(collection.test) if "rrf" in runs else float("nan")
    for name, run in runs.items():
        test = ndcg_checked(run, collection.qrels, collection.test)
        dev = ndcg_checked(run, collection.qrels, collection.dev) if collection.dev else float("nan")
        every = ndcg_checked(run, collection.qrels, everything)
        p_bm25 = paired_p(per_query[name], per_query["bm25"]) if name != "bm25" else float("nan")
        versus_rrf = f"{test / rrf_test:>7.3f} {paired_p(per_query[name], per_query['rrf']):>6.3f}"
        if name in ("bm25", "rrf"):
            versus_rrf = f"{'':>7} {'':>6}"
        versus_bm25 = f"{test / base:>8.3f} {p_bm25:>6.3f}" if name != "bm25" else f"{1:>8.3f} {'':>6}"
        print(f"{name:<8} {test:>7.4f} {versus_bm25} {versus_rrf} {dev:>7.4f} {every:>7.4f}")


def report_endpoint(collection: Collection, runs: dict[str, Run], stats: EndpointStats) -> None:
    """The endpoint's ingestion and search times, and how far it is from the in-process "ours"."""
    docs = len(collection.corpus)
    failed = len(stats.failed)
    print(f"endpoint: {docs} documents as {stats.uploaded} distinct files, ingested in "
          f"{stats.ingest_s:.0f} s ({docs / stats.ingest_s:.2f} docs/s), {failed} failed")  # fmt: skip
    for failure in stats.failed[:10]:
        print(f"  failed: {failure}")
    searches = len(stats.search_ms)
    print(f"endpoint: GET /search/?k={TOP}, {searches} queries one at a time: p50 "
          f"{percentile(stats.search_ms, 50):.0f} ms, p95 {percentile(stats.search_ms, 95):.0f} ms; "
          f"distinct documents per answer: median {statistics.median(stats.docs_per_query):.0f}, "
          f"min {min(stats.docs_per_query)}")  # fmt: skip
    endpoint = ndcg_per_query(runs["endpoint"], collection.qrels, collection.test)
    ours = ndcg_per_query(runs["ours"], collection.qrels, collection.test)
    gap = (sum(endpoint) - sum(ours)) / len(collection.test)
    print(f"endpoint - ours (test): {gap:+.4f}, p {paired_p(endpoint, ours):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = sorted(p.parent.name for p in DATA.glob("*/queries.jsonl.gz"))
    complete = [n for n in names if (DATA / n / "corpus.jsonl.gz").exists()]
    parser.add_argument(
        "--collection", action="append", choices=names, help=f"default: {', '.join(complete)}"
    )
    parser.add_argument("--tune", action="store_true", help="grid-search ours on the dev queries first")
    parser.add_argument(
        "--endpoint",
        action="store_true",
        help="also start the stack, upload the corpus and score GET /search/ (minutes per thousand docs)",
    )
    parser.add_argument("--save-runs", type=Path, help="write each retriever's run to DIR/<collection>.json")
    parser.add_argument(
        "--probe-batch", action="store_true", help="print embedder speed per batch size, stop"
    )
    args = parser.parse_args()
    collections = [load_collection(name) for name in args.collection or complete]
    if args.probe_batch:
        for size, per_second in probe_batch(collections[0].corpus).items():
            print(f"batch {size:>4}: {per_second:7.1f} docs/s")
        return
    prepared = [Prepared(c) for c in collections]
    baselines: dict[str, dict[str, Run]] = {}
    for collection in collections:
        runs: dict[str, Run] = {}
        runs["bm25"] = bm25_multifield(collection.corpus, collection.queries)
        dense = dense_scores(collection.corpus, collection.queries, collection.digest)
        runs["dense"] = dense_run(collection.corpus, dense)
        runs["rrf"] = rrf([runs["bm25"], runs["dense"]], k=60)
        baselines[collection.name] = runs
    if args.tune:
        rrf_dev = {c.name: ndcg(baselines[c.name]["rrf"], c.qrels, c.dev) for c in collections}
        config = tune(prepared, rrf_dev)
    else:
        config = OursConfig()
    print(f"ours: {config}")
    for each in prepared:
        runs = baselines[each.collection.name]
        runs["ours"] = each.run(config, each.collection.queries)
        stats = EndpointStats()
        if args.endpoint:
            # After the in-process retrievers, so the stack has the machine to itself.
            runs["endpoint"] = make_endpoint(stats)(each.collection.corpus, each.collection.queries)
        report(each.collection, runs)
        if args.endpoint:
            report_endpoint(each.collection, runs, stats)
        if args.save_runs:
            args.save_runs.mkdir(parents=True, exist_ok=True)
            (args.save_runs / f"{each.collection.name}.json").write_text(json.dumps(runs))


if __name__ == "__main__":
    main()
