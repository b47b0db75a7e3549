"""The vector store behaves the same on Qdrant's in-process engine, qdrant-client's in-memory mode and,
when QDRANT_URL is set, a real Qdrant server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.schemas import ChunkPoint
from core.settings import PROJECT_ROOT, Settings
from core.vector_store import (
    CollectionNotFound,
    EmbedderMismatch,
    VectorStore,
    VectorStoreError,
    VectorStoreLocked,
    collection_name,
    point_id,
)
from tests.conftest import require

QDRANT_URL = os.environ.get("QDRANT_URL")
BACKENDS = [
    "edge",
    "memory",
    pytest.param("server", marks=pytest.mark.skipif(not QDRANT_URL, reason="QDRANT_URL is not set")),
]
DIM = 4
MODEL = "test/four-dims"
EMBEDDER_DIR = PROJECT_ROOT / "models" / "all-MiniLM-L6-v2"


def settings_for(backend: str, var_dir: Path) -> Settings:
    url = {"edge": None, "memory": ":memory:", "server": QDRANT_URL}[backend]
    return Settings(_env_file=None, var_dir=var_dir, qdrant_url=url)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(backend: str, tmp_path: Path) -> Iterator[VectorStore]:
    store = VectorStore.open(settings_for(backend, tmp_path))
    yield store
    store.close()


@pytest.fixture
def collection(store: VectorStore) -> Iterator[str]:
    # Unique, so tests sharing one Qdrant server never see each other's chunks.
    name = f"test-{uuid.uuid4().hex[:12]}"
    store.ensure_collection(name, MODEL, DIM)
    yield name
    store.drop_collection(name)


def chunk(
    document_id: str,
    index: int,
    vector: list[float],
    text: str = "plain text",
    owner: str = "alice",
    **fields: object,
) -> ChunkPoint:
    values: dict[str, object] = {
        "filename": f"{document_id}.pdf",
        "page": index + 1,
        "language": "en",
        **fields,
    }
    return ChunkPoint(
        document_id=document_id, chunk_index=index, owner=owner, text=text, vector=vector, **values
    )


def test_upserting_the_same_chunks_twice_keeps_one_copy(store: VectorStore, collection: str) -> None:
    points = [chunk("doc-1", i, [1.0, float(i), 0.0, 0.0]) for i in range(5)]
    store.upsert(collection, points)
    store.upsert(collection, points)
    assert store.count(collection) == 5
    assert store.count(collection, document_id="doc-1") == 5
    # A retried batch with changed text overwrites, never duplicates.
    store.upsert(collection, [chunk("doc-1", 0, [1.0, 0.0, 0.0, 0.0], text="corrected")])
    assert store.count(collection) == 5
    hits = store.search(collection, [1.0, 0.0, 0.0, 0.0], "corrected", 1, owner="alice")
    assert (hits[0].chunk_index, hits[0].text) == (0, "corrected")


def test_point_ids_depend_only_on_document_and_chunk() -> None:
    assert point_id("doc-1", 3) == point_id("doc-1", 3)
    assert len({point_id("doc-1", 3), point_id("doc-1", 4), point_id("doc-13", 3)}) == 3
    assert str(uuid.UUID(point_id("doc-1", 3))) == point_id("doc-1", 3)


def test_delete_document_removes_only_its_chunks(store: VectorStore, collection: str) -> None:
    store.upsert(collection, [chunk("doc-1", i, [1.0, 0.0, 0.0, 0.0]) for i in range(3)])
    store.upsert(collection, [chunk("doc-2", i, [1.0, 0.0, 0.0, 0.0]) for i in range(2)])
    store.delete_document(collection, "doc-1")
    assert store.count(collection, document_id="doc-1") == 0
    assert store.count(collection) == 2
    hits = store.search(collection, [1.0, 0.0, 0.0, 0.0], "plain text", 10, owner=None)
    assert {hit.document_id for hit in hits} == {"doc-2"}
    store.delete_document(collection, "doc-1")  # deleting again is harmless
    assert store.count(collection) == 2


def test_search_never_returns_another_owners_chunks(store: VectorStore, collection: str) -> None:
    # Bob's chunks match the query better on both the vector and the words.
    store.upsert(collection, [chunk("alice-doc", i, [0.2, 1.0, 0.0, 0.0], "budget notes") for i in range(3)])
    store.upsert(
        collection,
        [chunk("bob-doc", i, [1.0, 0.0, 0.0, 0.0], "quarterly revenue", owner="bob") for i in range(60)],
    )
    query = [1.0, 0.0, 0.0, 0.0]
    alice_hits = store.search(collection, query, "quarterly revenue", 10, owner="alice")
    assert [hit.document_id for hit in alice_hits] == ["alice-doc"] * 3
    assert store.search(collection, query, "quarterly revenue", 10, owner="carol") == []
    # An admin searches everyone's.
    everyone = store.search(collection, query, "quarterly revenue", 100, owner=None)
    assert {hit.document_id for hit in everyone} == {"alice-doc", "bob-doc"}


def test_document_ids_and_payload_filters_restrict_the_search(store: VectorStore, collection: str) -> None:
    store.upsert(collection, [chunk("doc-1", i, [1.0, 0.0, 0.0, 0.0], "shared words") for i in range(4)])
    store.upsert(collection, [chunk("doc-2", i, [1.0, 0.1, 0.0, 0.0], "shared words") for i in range(4)])
    store.upsert(
        collection,
        [chunk("doc-3", 0, [1.0, 0.0, 0.0, 0.0], "gemeinsame Wörter", language="de", filename="notes.pdf")],
    )
    query = [1.0, 0.0, 0.0, 0.0]

    def found(**kwargs: object) -> set[tuple[str, int]]:
        hits = store.search(collection, query, "shared words", 20, owner="alice", **kwargs)  # type: ignore[arg-type]
        return {(hit.document_id, hit.chunk_index) for hit in hits}

    assert {doc for doc, _ in found(document_ids=["doc-2"])} == {"doc-2"}
    assert {doc for doc, _ in found(document_ids=["doc-2", "doc-3"])} == {"doc-2", "doc-3"}
    assert found(document_ids=[]) == set()
    assert found(filters={"page": 2}) == {("doc-1", 1), ("doc-2", 1)}
    assert found(filters={"page": [1, 2], "document_id": "doc-1"}) == {("doc-1", 0), ("doc-1", 1)}
    assert found(filters={"language": "de"}) == {("doc-3", 0)}
    assert found(filters={"filename": "notes.pdf"}) == {("doc-3", 0)}
    with pytest.raises(ValueError, match="owner"):
        found(filters={"owner": "bob"})


def test_hits_carry_what_a_citation_needs(store: VectorStore, collection: str) -> None:
    store.upsert(
        collection,
        [chunk("doc-7", 2, [0.0, 0.0, 1.0, 0.0], "The warranty lasts two years.", title="Warranty", page=9)],
    )
    [hit] = store.search(collection, [0.0, 0.0, 1.0, 0.0], "warranty years", 5, owner="alice")
    assert (hit.document_id, hit.filename, hit.page, hit.chunk_index) == ("doc-7", "doc-7.pdf", 9, 2)
    assert (hit.text, hit.title, hit.language) == ("The warranty lasts two years.", "Warranty", "en")
    assert hit.dense_score == pytest.approx(1.0, abs=1e-5)
    assert hit.sparse_score is not None and hit.sparse_score > 0
    assert hit.score > 0


def test_one_side_of_the_search_can_be_left_out(store: VectorStore, collection: str) -> None:
    store.upsert(collection, [chunk("doc-1", 0, [1.0, 0.0, 0.0, 0.0], "apples")])
    store.upsert(collection, [chunk("doc-2", 0, [0.0, 1.0, 0.0, 0.0], "pears")])
    dense_only = store.search(collection, [1.0, 0.0, 0.0, 0.0], "pears", 1, owner="alice", sparse_weight=0)
    sparse_only = store.search(collection, [1.0, 0.0, 0.0, 0.0], "pears", 1, owner="alice", dense_weight=0)
    assert [hit.document_id for hit in dense_only] == ["doc-1"]
    assert [hit.document_id for hit in sparse_only] == ["doc-2"]
    assert sparse_only[0].dense_score is None
    # No vector and only stop words: nothing to search with.
    assert store.search(collection, None, "the and of", 5, owner="alice") == []
    with pytest.raises(ValueError, match="weight"):
        store.search(
            collection, [1.0, 0.0, 0.0, 0.0], "pears", 1, owner="alice", dense_weight=0, sparse_weight=0
        )


def test_a_collection_made_by_another_embedder_is_refused(store: VectorStore, collection: str) -> None:
    store.ensure_collection(collection, MODEL, DIM)  # same embedder: fine, and idempotent
    with pytest.raises(EmbedderMismatch) as mismatch:
        store.ensure_collection(collection, "other/model", DIM)
    assert MODEL in str(mismatch.value) and "other/model" in str(mismatch.value)
    with pytest.raises(EmbedderMismatch, match="8 dimensions"):
        store.ensure_collection(collection, MODEL, 8)
    with pytest.raises(ValueError, match="8-dimensional"):
        store.upsert(collection, [chunk("doc-1", 0, [1.0] * 8)])


def test_a_dropped_collection_can_be_made_again_for_another_embedder(store: VectorStore) -> None:
    name = f"test-{uuid.uuid4().hex[:12]}"
    store.ensure_collection(name, MODEL, DIM)
    store.upsert(name, [chunk("doc-1", 0, [1.0, 0.0, 0.0, 0.0])])
    store.drop_collection(name)
    assert store.count(name) == 0
    store.ensure_collection(name, "other/model", 8)
    store.upsert(name, [chunk("doc-1", 0, [1.0] * 8)])
    assert store.count(name) == 1
    store.drop_collection(name)


def test_a_closed_store_refuses_work(backend: str, tmp_path: Path) -> None:
    store = VectorStore.open(settings_for(backend, tmp_path))
    store.close()
    store.close()  # closing twice is harmless
    with pytest.raises(VectorStoreError, match="closed"):
        store.count("anything")


def test_missing_collections_are_empty_but_cannot_be_written(store: VectorStore) -> None:
    assert store.count("no-such-collection") == 0
    assert store.search("no-such-collection", [1.0, 0.0, 0.0, 0.0], "text", 5, owner=None) == []
    with pytest.raises(CollectionNotFound):
        store.upsert("no-such-collection", [chunk("doc-1", 0, [1.0, 0.0, 0.0, 0.0])])


def test_collection_names_are_safe_for_every_backend() -> None:
    assert collection_name("local/all-MiniLM-L6-v2", 384) == "chunks-local-all-minilm-l6-v2-384"


def test_searches_from_threads_while_another_thread_upserts(store: VectorStore, collection: str) -> None:
    errors: list[BaseException] = []
    done = threading.Event()

    def guarded(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as error:
                errors.append(error)

        return run

    def write() -> None:
        for batch in range(20):
            points = [chunk(f"doc-{batch}", i, [1.0, float(i), 0.0, 0.0], "alpha beta") for i in range(25)]
            store.upsert(collection, points)
        done.set()

    def search() -> None:
        while not done.is_set():
            for hit in store.search(collection, [1.0, 0.0, 0.0, 0.0], "alpha", 5, owner="bob"):
                raise AssertionError(f"alice's chunk {hit} reached bob")
            store.search(collection, [1.0, 0.0, 0.0, 0.0], "alpha", 5, owner="alice")

    threads = [threading.Thread(target=guarded(write))] + [
        threading.Thread(target=guarded(search)) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert store.count(collection) == 500


# --- the in-process engine's files ------------------------------------------------------------------


def test_edge_store_keeps_its_chunks_after_a_reopen(tmp_path: Path) -> None:
    settings = settings_for("edge", tmp_path)
    with VectorStore.open(settings) as store:
        store.ensure_collection("chunks", MODEL, DIM)
        store.upsert("chunks", [chunk("doc-1", i, [1.0, 0.0, float(i), 0.0], f"text {i}") for i in range(7)])
    with VectorStore.open(settings) as store:
        assert store.count("chunks") == 7
        with pytest.raises(EmbedderMismatch):
            store.ensure_collection("chunks", "other/model", DIM)
        hits = store.search("chunks", [1.0, 0.0, 0.0, 0.0], "text", 3, owner="alice", sparse_weight=0)
        assert [hit.chunk_index for hit in hits] == [0, 1, 2]


CHILD = """
import os, sys
from core.schemas import ChunkPoint
from core.settings import Settings
from core.vector_store import VectorStore, VectorStoreLocked
try:
    store = VectorStore.open(Settings(_env_file=None, var_dir=sys.argv[1], qdrant_url=None))
except VectorStoreLocked as error:
    print(error)
    sys.exit(3)
store.ensure_collection("chunks", "test/four-dims", 4)
store.upsert("chunks", [
    ChunkPoint(document_id="doc-1", chunk_index=i, owner="alice", filename="a.pdf", text="w", vector=[1] * 4)
    for i in range(5)
])
os._exit(0)  # no close, no flush: as if the process were killed
"""


def run_child(var_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(var_dir)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_edge_chunks_written_by_a_process_that_died_are_kept(tmp_path: Path) -> None:
    child = run_child(tmp_path)
    assert child.returncode == 0, child.stderr
    with VectorStore.open(settings_for("edge", tmp_path)) as store:
        assert store.count("chunks") == 5


def test_a_second_process_cannot_open_the_edge_store(tmp_path: Path) -> None:
    with VectorStore.open(settings_for("edge", tmp_path)):
        child = run_child(tmp_path)
        assert child.returncode == 3, child.stderr
        assert f"process {os.getpid()}" in child.stdout
        with pytest.raises(VectorStoreLocked):
            VectorStore.open(settings_for("edge", tmp_path))
    # Closed: the next process may open it.
    assert run_child(tmp_path).returncode == 0


# --- retrieval quality on real embeddings ------------------------------------------------------------

CORPUS = [
    "Ticket INC-4471: the mail gateway dropped attachments; it was fixed by a restart.",
    "Why did my email attachments disappear? Incidents 4417 and 7144 explain how the mail gateway strips "
    "them.",
    "Email attachments larger than 20 MB are removed by the mail gateway.",
    "Restarting the mail gateway clears its queue of stuck messages.",
    "The VPN client needs a new certificate every year; the helpdesk sends it by e-mail.",
    "Printers on the third floor are replaced in June.",
]


QUERIES = ["INC-4471", "what happened in INC-4471", "INC-4471 attachments"]


@pytest.fixture(scope="module")
def embedded() -> dict[str, list[float]]:
    """Real embeddings of the corpus and the queries, computed once."""
    require(EMBEDDER_DIR.exists(), f"no embedder at {EMBEDDER_DIR} (make models puts it there)")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(EMBEDDER_DIR), device="cpu")
    texts = CORPUS + QUERIES
    return dict(zip(texts, model.encode(texts, normalize_embeddings=True).tolist(), strict=True))


@pytest.mark.parametrize("query", QUERIES)
def test_hybrid_finds_the_exact_identifier_that_dense_search_misses(
    store: VectorStore, embedded: dict[str, list[float]], query: str
) -> None:
    name = f"test-{uuid.uuid4().hex[:12]}"
    store.ensure_collection(name, "all-MiniLM-L6-v2", 384)
    try:
        store.upsert(name, [chunk("tickets", i, embedded[text], text) for i, text in enumerate(CORPUS)])
        dense = store.search(name, embedded[query], query, 3, owner="alice", sparse_weight=0)
        hybrid = store.search(name, embedded[query], query, 3, owner="alice")
        assert dense[0].chunk_index != 0, "the corpus no longer shows dense search missing the identifier"
        assert hybrid[0].chunk_index == 0
    finally:
        store.drop_collection(name)
