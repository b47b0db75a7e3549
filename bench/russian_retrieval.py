"""Which local embedder serves Russian retrieval best: nDCG@10 and MRR@10 on XQuAD-ru, side by side.

  minilm        all-MiniLM-L6-v2 (the default embedder), dense, cosine
  e5            multilingual-e5-small, dense, "query: " on questions and "passage: " on passages, as
                the model server applies them for input_type "query" and "passage"
  e5-noprefix   e5 with the passage prefix on the questions too (a client that leaves out input_type)
  bm25          core.text_terms sparse vectors (Russian stems, stop words dropped), scored as Qdrant
                scores them: its IDF modifier times the stored BM25 saturation
  minilm+bm25   rank fusion of the two (core.fusion.fuse, equal weights, k=60)
  e5+bm25       the same with e5

Two collections from the same 1190 questions: `xquad-ru`, the 240 paragraphs they were asked on, and
`xquad-ru-sentences`, those paragraphs cut into 1217 sentences where only the sentence holding the
answer counts, so that neighbours from the same paragraph compete.

The embeddings come from model_server.engine, the code the model server runs, in the server's
batches; they are cached under var/bench (or $BENCH_CACHE), so a second run only scores. Each run
times both embedders on the same 24 paragraphs. The data lives in $BENCH_DATA_DIR/russian (default
var/bench-data/russian), outside this repository; where it comes from: bench/data/russian/README.md.
Run it as `python -m bench.russian_retrieval`; `--convert xquad.ru.json` rebuilds both collections from
the published file first.

Measured (2 cores, load average 4-5), nDCG@10 on paragraphs / sentences:
  minilm 0.217 / 0.213, e5 0.954 / 0.847, e5-noprefix 0.945 / 0.810, bm25 0.951 / 0.825,
  minilm+bm25 0.588 / 0.509, e5+bm25 0.962 / 0.860.
So a Russian (or mixed-language) collection should record the embedder "local/multilingual-e5-small":
MiniLM reads Cyrillic as fragments and drags even BM25 down when fused with it. e5 alone edges out
BM25 alone, and e5 fused with BM25 is best on both. Searches must send input_type "query": without
it e5 loses 0.04 nDCG@10 on sentences.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core import text_terms
from core.fusion import RRF_K, fuse

if TYPE_CHECKING:
    from model_server.engine import EmbeddingModel, InputType

ROOT = Path(__file__).resolve().parents[1]
# The data comes from another public repository and stays out of this one (bench/data/russian/README.md).
DATA = Path(os.environ.get("BENCH_DATA_DIR", ROOT / "var" / "bench-data")) / "russian"
MINILM_DIR = ROOT / "models" / "all-MiniLM-L6-v2"
CACHE = Path(os.environ.get("BENCH_CACHE", ROOT / "var" / "bench"))
AT = 10  # nDCG@AT, MRR@AT, recall@AT
DEPTH = 100  # each ranking is cut here before fusion and scoring
SPEED_SAMPLE = 24  # paragraphs timed per embedder
# (passages, queries, judgements) of each collection, checked on load so a truncated file cannot pass.
# XQuAD publishes 240 paragraphs and 1190 questions; the sentence count is our splitter's.
EXPECTED = {"xquad-ru": (240, 1190, 1190), "xquad-ru-sentences": (1217, 1190, 1190)}

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


@dataclass
class Collection:
    name: str
    passages: dict[str, str]
    queries: dict[str, str]
    qrels: Qrels


# ---------------------------------------------------------------- data

# A sentence ends at . ! ? or … (and any closing quotes) before white space and a capital, digit or
# opening quote, but not after a lone capital: "С. Ф. Бондарчук" is one name, not three sentences.
_SENTENCE_END = re.compile(r"(?<![\s.][А-ЯЁA-Z])[.!?…]+[»\"')]*(?=\s+[«\"(]?[А-ЯЁA-Z0-9])")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the sentences of text, covering all of it."""
    spans, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        spans.append((start, end.end()))
        start = end.end()
    spans.append((start, len(text)))
    return spans


def _clean(text: str) -> str:
    return " ".join(text.replace("\ufeff", "").split())


def _write_gzip(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime 0: the same input gives the same bytes, so the files only change when the data does.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped:
        zipped.write(("\n".join(lines) + "\n").encode("utf-8"))


def _write_collection(
    folder: Path, passages: list[tuple[str, str]], queries: list[str], qrels: list[str]
) -> None:
    corpus = [
        json.dumps({"_id": pid, "title": "", "text": text}, ensure_ascii=False) for pid, text in passages
    ]
    _write_gzip(folder / "corpus.jsonl.gz", corpus)
    _write_gzip(folder / "queries.jsonl.gz", queries)
    _write_gzip(folder / "qrels" / "test.tsv.gz", ["query-id\tcorpus-id\tscore", *qrels])


def convert_xquad(source: Path, target: Path = DATA) -> None:
    """XQuAD's SQuAD-format JSON to BEIR's layout, as the two collections (see the module's doc).

    The English article titles are left out: they are not Russian and would hand the English model a
    clue that the Russian text does not."""
    articles = json.loads(source.read_text(encoding="utf-8"))["data"]
    paragraphs: list[tuple[str, str]] = []
    sentences: list[tuple[str, str]] = []
    queries: list[str] = []
    paragraph_qrels: list[str] = []
    sentence_qrels: list[str] = []
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article["paragraphs"]):
            context = paragraph["context"]
            pid = f"a{a:02d}p{p}"
            paragraphs.append((pid, _clean(context)))
            spans = sentence_spans(context)
            sentences.extend(
                (f"{pid}s{s}", _clean(context[start:end])) for s, (start, end) in enumerate(spans)
            )
            for question in paragraph["qas"]:
                qid = question["id"]
                text = question["question"].strip()
                queries.append(json.dumps({"_id": qid, "text": text}, ensure_ascii=False))
                paragraph_qrels.append(f"{qid}\t{pid}\t1")
                # Offsets are into the raw context; the first answer is the one the translators placed.
                answer = question["answers"][0]["answer_start"]
                s = next(s for s, (start, end) in enumerate(spans) if start <= answer < end)
                sentence_qrels.append(f"{qid}\t{pid}s{s}\t1")
    _write_collection(target / "xquad-ru", paragraphs, queries, paragraph_qrels)
    _write_collection(target / "xquad-ru-sentences", sentences, queries, sentence_qrels)
    print(f"converted: {len(paragraphs)} paragraphs, {len(sentences)} sentences, {len(queries)} queries")


def _jsonl(path: Path) -> Iterable[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        yield from (json.loads(line) for line in lines if line.strip())


def load(name: str) -> Collection:
    folder = DATA / name
    passages = {d["_id"]: d["text"] for d in _jsonl(folder / "corpus.jsonl.gz")}
    queries = {q["_id"]: q["text"] for q in _jsonl(folder / "queries.jsonl.gz")}
    qrels: Qrels = {}
    with gzip.open(folder / "qrels" / "test.tsv.gz", "rt", encoding="utf-8") as rows:
        next(rows)  # header
        for row in rows:
            if row.strip():
                qid, pid, score = row.rstrip("\n").split("\t")
                qrels.setdefault(qid, {})[pid] = int(score)
    found = (len(passages), len(queries), sum(len(judged) for judged in qrels.values()))
    if found != EXPECTED[name]:
        raise SystemExit(
            f"{folder}: found {found} (passages, queries, judgements), expected {EXPECTED[name]}"
        )
    return Collection(name, passages, queries, qrels)


# ---------------------------------------------------------------- retrievers


class Embedder:
    """One of the model server's embedders, loaded on first use; vectors are cached per model, input
    type and texts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.model: EmbeddingModel | None = None

    def _load(self) -> EmbeddingModel:
        from model_server.engine import E5EmbeddingModel, SentenceEmbeddingModel

        if self.model is None:
            if self.name == "minilm":
                self.model = SentenceEmbeddingModel("all-MiniLM-L6-v2", MINILM_DIR)
            else:
                self.model = E5EmbeddingModel("multilingual-e5-small")
        return self.model

    def encode(self, texts: list[str], input_type: InputType) -> tuple[np.ndarray, int]:
        """In the server's batches, through the blocking call its worker thread makes."""
        model = self._load()
        rows, tokens = [], 0
        for start in range(0, len(texts), model.batch_size):
            batch, read = model.encode(texts[start : start + model.batch_size], input_type)
            rows.append(batch)
            tokens += read
        return np.vstack(rows), tokens

    def vectors(self, texts: list[str], input_type: InputType) -> np.ndarray:
        digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
        path = CACHE / f"russian-{self.name}-{input_type}-{digest}.npy"
        if path.exists():
            return np.load(path)
        vectors, _ = self.encode(texts, input_type)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
        return vectors

    def speed(self, texts: list[str]) -> tuple[float, float]:
        """(passages per second, tokens per passage as the model reads them) on texts, after a warm-up."""
        self.encode(texts[:2], "passage")
        started = time.perf_counter()
        _, tokens = self.encode(texts, "passage")
        return len(texts) / (time.perf_counter() - started), tokens / len(texts)

    def close(self) -> None:
        if self.model is not None:
            self.model.close()


def dense_run(collection: Collection, passages: np.ndarray, queries: np.ndarray) -> Run:
    ids = list(collection.passages)
    rows = zip(collection.queries, queries @ passages.T, strict=True)
    return {qid: dict(ranked(dict(zip(ids, map(float, row), strict=True)))) for qid, row in rows}


def bm25_run(collection: Collection) -> Run:
    """Qdrant's sparse score: over the query's terms, query weight x stored saturation x
    ln(1 + (N - df + 0.5) / (df + 0.5))."""
    ids = list(collection.passages)
    documents = [
        dict(zip(*text_terms.document_sparse(text), strict=True)) for text in collection.passages.values()
    ]
    df: dict[int, int] = {}
    for document in documents:
        for term in document:
            df[term] = df.get(term, 0) + 1
    n = len(documents)
    run: Run = {}
    for qid, text in collection.queries.items():
        indices, values = text_terms.query_sparse(text)
        weights = {
            term: value * math.log(1.0 + (n - df[term] + 0.5) / (df[term] + 0.5))
            for term, value in zip(indices, values, strict=True)
            if term in df
        }
        scores = [sum(w * doc.get(term, 0.0) for term, w in weights.items()) for doc in documents]
        run[qid] = dict(ranked({pid: s for pid, s in zip(ids, scores, strict=True) if s > 0}))
    return run


def ranked(hits: dict[str, float], depth: int = DEPTH) -> list[tuple[str, float]]:
    return sorted(hits.items(), key=lambda item: (-item[1], item[0]))[:depth]


def fused(first: Run, second: Run) -> Run:
    return {
        qid: dict(fuse([ranked(first[qid]), ranked(second.get(qid, {}))], [1.0, 1.0], RRF_K)[:DEPTH])
        for qid in first
    }


# ---------------------------------------------------------------- metrics


def ndcg(run: Run, qrels: Qrels) -> float:
    """Mean nDCG@AT by pytrec_eval (trec_eval's ndcg_cut), so the number is not our own reading."""
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{AT}"})
    per_query = evaluator.evaluate({qid: run.get(qid, {}) for qid in qrels})
    return sum(per_query.get(qid, {}).get(f"ndcg_cut_{AT}", 0.0) for qid in qrels) / len(qrels)


def mrr_and_recall(run: Run, qrels: Qrels) -> tuple[float, float]:
    reciprocal, found = 0.0, 0
    for qid, judged in qrels.items():
        top = [pid for pid, _ in ranked(run.get(qid, {}), AT)]
        ranks = [rank for rank, pid in enumerate(top, start=1) if judged.get(pid, 0) > 0]
        if ranks:
            reciprocal += 1.0 / ranks[0]
            found += 1
    return reciprocal / len(qrels), found / len(qrels)


# ---------------------------------------------------------------- report


def runs_of(collection: Collection, embedders: dict[str, Embedder]) -> dict[str, Run]:
    passages = list(collection.passages.values())
    questions = list(collection.queries.values())
    runs: dict[str, Run] = {}
    for name, embedder in embedders.items():
        runs[name] = dense_run(
            collection, embedder.vectors(passages, "passage"), embedder.vectors(questions, "query")
        )
    e5 = embedders["e5"]
    runs["e5-noprefix"] = dense_run(
        collection, e5.vectors(passages, "passage"), e5.vectors(questions, "passage")
    )
    runs["bm25"] = bm25_run(collection)
    runs["minilm+bm25"] = fused(runs["minilm"], runs["bm25"])
    runs["e5+bm25"] = fused(runs["e5"], runs["bm25"])
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--convert", type=Path, help="rebuild the collections from XQuAD's xquad.ru.json first"
    )
    args = parser.parse_args()
    if args.convert:
        convert_xquad(args.convert)
    collections = [load(name) for name in EXPECTED]
    load_average = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average {load_average} (numbers from a busy machine do not compare)")

    embedders = {"minilm": Embedder("minilm"), "e5": Embedder("e5")}
    try:
        results = {c.name: runs_of(c, embedders) for c in collections}
        sample = list(collections[0].passages.values())[:SPEED_SAMPLE]
        speeds = {name: embedder.speed(sample) for name, embedder in embedders.items()}
    finally:
        for embedder in embedders.values():
            embedder.close()

    header = " ".join(f"{c.name + f' ({len(c.passages)})':>26}" for c in collections)
    print(f"\n{'':<12} {header}")
    print(f"{'retriever':<12} " + " ".join(f"{'nDCG@10':>9} {'MRR@10':>8} {'R@10':>7}" for _ in collections))
    for name in results[collections[0].name]:
        cells = []
        for collection in collections:
            run = results[collection.name][name]
            mrr, recall = mrr_and_recall(run, collection.qrels)
            cells.append(f"{ndcg(run, collection.qrels):>9.4f} {mrr:>8.4f} {recall:>7.3f}")
        print(f"{name:<12} " + " ".join(cells))
    print(f"\nembedding speed on {SPEED_SAMPLE} paragraphs (one process, the server's batches):")
    for name, (per_second, tokens) in speeds.items():
        print(f"  {name:<8} {per_second:6.2f} passages/s, {tokens:.0f} tokens each as the model reads them")


if __name__ == "__main__":
    main()
