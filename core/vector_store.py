"""Document chunks in Qdrant: one collection per embedder, hybrid (dense + BM25) search per owner.

Two backends with one behaviour: the Qdrant server through qdrant-client when `qdrant_url` is set
(":memory:" gives qdrant-client's in-process mode, which speaks the server's client API), otherwise
Qdrant's in-process engine (qdrant-edge) on disk under `var_dir/qdrant`, one shard directory per
collection. The engine's files admit one process at a time, so opening takes a lock file and a second
process gets `VectorStoreLocked` at once instead of a WAL error on its first write.

Each chunk has a dense vector (cosine) and a sparse BM25 term vector (core.text_terms) on which Qdrant
applies its IDF modifier. A search runs the dense and the keyword search inside Qdrant, each restricted
by the owner/document filter, and fuses the two rankings with core.fusion.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

import qdrant_edge as edge
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import UnexpectedResponse

from core.fusion import PRF_DOCS, PRF_WEIGHT, RRF_K, feedback_vector, fuse
from core.schemas import ChunkPoint, SearchHit
from core.settings import Settings
from core.text_terms import detect_language, document_sparse, query_sparse

DENSE = "dense"
SPARSE = "sparse"
# Ids are derived, not random, so a retried upsert overwrites the chunks it wrote before.
POINT_NAMESPACE = uuid.UUID("5f0c1b5e-4f3a-4c53-9a53-2d0c6a1f7e21")
# Payload keys a search may filter on by equality (owner and document ids have their own arguments).
FILTER_KEYS = frozenset({"document_id", "filename", "title", "page", "chunk_index", "language"})
_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

FilterValue = str | int
Conditions = list[tuple[str, FilterValue | list[str] | list[int]]]


class VectorStoreError(Exception):
    pass


class EmbedderMismatch(VectorStoreError):
    def __init__(self, collection: str, existing: str, wanted: str) -> None:
        super().__init__(
            f"collection {collection!r} was made by embedder {existing}, not {wanted}: its vectors are "
            "not comparable; use another collection (one per embedder) or re-ingest into a new one"
        )
        self.collection = collection
        self.existing = existing
        self.wanted = wanted


class CollectionNotFound(VectorStoreError):
    def __init__(self, collection: str) -> None:
        super().__init__(f"collection {collection!r} does not exist: ensure_collection() creates it")
        self.collection = collection


class VectorStoreLocked(VectorStoreError):
    pass


def collection_name(model: str, dim: int) -> str:
    """The collection for an embedder: its name made safe for a directory and for Qdrant."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    return f"chunks-{slug}-{dim}"


def point_id(document_id: str, chunk_index: int) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{document_id}:{chunk_index}"))


@dataclass(frozen=True)
class Embedder:
    model: str
    dim: int

    def __str__(self) -> str:
        return f"{self.model} ({self.dim} dimensions)"


@dataclass
class _Row:
    """A point in backend-neutral form."""

    id: str
    dense: list[float]
    sparse: tuple[list[int], list[float]]
    payload: dict[str, Any]


@dataclass
class _Found:
    id: str
    score: float
    payload: dict[str, Any]


class VectorStore(ABC):
    """The store's public face; a backend supplies the few primitives at the bottom."""

    def __init__(self, serialized: bool) -> None:
        self._embedders: dict[str, Embedder] = {}
        self._closed = False
        # Reads and writes run side by side, as the engine and the server are thread-safe: one lock
        # around them made searches queue behind upserts (p95 75 ms instead of 14 ms, 4 threads
        # searching while one upserts). A backend that is not thread-safe is serialized. Creating,
        # dropping and closing a collection wait for the running operations and hold new ones off.
        self._serialized = serialized
        self._state = threading.Condition(threading.RLock())
        self._running = 0
        self._exclusive_waiting = 0

    @staticmethod
    def open(settings: Settings) -> VectorStore:
        if settings.qdrant_url == ":memory:":
            return ClientVectorStore(QdrantClient(location=":memory:"), local=True)
        if settings.qdrant_url:
            key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
            return ClientVectorStore(QdrantClient(url=settings.qdrant_url, api_key=key), local=False)
        return EdgeVectorStore(settings.var_dir / "qdrant")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- public API -----------------------------------------------------------------------------

    def ensure_collection(self, name: str, model: str, dim: int) -> None:
        """Creates the collection for this embedder, or checks that the existing one was made by it."""
        if not _COLLECTION_NAME.match(name):
            raise ValueError(f"invalid collection name {name!r}: letters, digits, '_', '.', '-'")
        if dim < 1:
            raise ValueError(f"dimension must be positive, got {dim}")
        wanted = Embedder(model, dim)
        with self._exclusive():
            existing = self._embedder(name) or self._create(name, wanted)
            if existing != wanted:
                raise EmbedderMismatch(name, str(existing), str(wanted))
            self._prepare(name)

    def upsert(self, collection: str, points: Sequence[ChunkPoint]) -> None:
        """Writes the chunks; writing the same chunks again changes nothing (ids come from document
        id and chunk index). A re-ingested document with fewer chunks needs delete_document first."""
        if not points:
            return
        rows = [self._row(point) for point in points]
        with self._shared(collection) as embedder:
            if embedder is None:
                raise CollectionNotFound(collection)
            for row in rows:
                _check_dim(collection, embedder, row.dense)
            self._upsert(collection, rows)

    def delete_document(self, collection: str, document_id: str) -> None:
        with self._shared(collection) as embedder:
            if embedder is not None:
                self._delete(collection, [("document_id", document_id)])

    def count(self, collection: str, document_id: str | None = None) -> int:
        conditions: Conditions = [] if document_id is None else [("document_id", document_id)]
        with self._shared(collection) as embedder:
            if embedder is None:
                return 0
            return self._count(collection, conditions)

    def search(
        self,
        collection: str,
        query_vector: list[float] | None,
        query_text: str,
        k: int,
        owner: str | None,
        document_ids: list[str] | None = None,
        filters: dict[str, FilterValue | list[str] | list[int]] | None = None,
        dense_weight: float = 1.0,
        sparse_weight: float = 1.0,
        rrf_k: int = RRF_K,
    ) -> list[SearchHit]:
        """The k best chunks for the query, best first, among `owner`'s chunks (None: everyone's).

        `document_ids` restricts to those documents (an empty list finds nothing); `filters` are
        equalities on payload keys (a list value matches any of its items). The dense and the keyword
        ranking are fused with the given weights; a weight of 0, or no vector / no terms in the text,
        leaves that side out.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if dense_weight < 0 or sparse_weight < 0:
            raise ValueError("fusion weights must not be negative")
        conditions = _conditions(owner, document_ids, filters)
        if conditions is None:
            return []
        dense = query_vector if query_vector is not None and dense_weight > 0 else None
        sparse = None
        if sparse_weight > 0 and query_text.strip():
            language = filters.get("language") if filters else None
            indices, values = query_sparse(query_text, language if isinstance(language, str) else None)
            sparse = (indices, values) if indices else None
        if dense is None and sparse is None:
            if dense_weight == 0 and sparse_weight == 0:
                raise ValueError("at least one fusion weight must be positive")
            return []
        # Fusion needs more than k from each side: a chunk ranked 30th by both can beat a 1st by one.
        candidates = max(k * 4, 50)
        with self._shared(collection) as embedder:
            if embedder is None:
                return []
            if dense is not None:
                _check_dim(collection, embedder, dense)
            dense_found, sparse_found = self._query(collection, dense, sparse, conditions, candidates)
            # Similarity to the question itself, whatever ranks the chunks: it is what relevance floors
            # (RAG) and readers of dense_score compare.
            similar = dense_found
            if dense is not None and sparse is not None and PRF_DOCS:
                # Pseudo-relevance feedback: the dense query moves toward the best fused first answers
                # (the keyword side's exact matches among them) and searches again, finding chunks like
                # them that the question's own words missed (+0.013 nDCG@10 on NFCorpus,
                # bench/retrieval_quality.py). A search of one side only stays plain.
                first = fuse(
                    [[(f.id, f.score) for f in dense_found], [(f.id, f.score) for f in sparse_found]],
                    [dense_weight, sparse_weight],
                    rrf_k,
                )[:PRF_DOCS]
                vectors = self._dense_vectors(collection, [chunk_id for chunk_id, _ in first])
                if vectors:
                    moved = feedback_vector(dense, vectors, PRF_WEIGHT)
                    dense_found, _ = self._query(collection, moved, None, conditions, candidates)
        return _fused_hits(dense_found, sparse_found, similar, dense_weight, sparse_weight, rrf_k, k)

    def drop_collection(self, name: str) -> None:
        """Deletes the collection and every chunk in it (e.g. once its embedder is retired)."""
        with self._exclusive():
            if self._embedder(name) is not None:
                self._drop(name)
            self._embedders.pop(name, None)

    def close(self) -> None:
        with self._exclusive(closing=True):
            if not self._closed:
                self._closed = True
                self._close()

    # --- shared helpers ---------------------------------------------------------------------------

    @contextmanager
    def _shared(self, collection: str) -> Iterator[Embedder | None]:
        """Runs alongside other shared uses; yields the collection's embedder (None: no collection)."""
        if self._serialized:
            with self._exclusive():
                yield self._embedder(collection)
            return
        with self._state:
            # A waiting create/drop/close goes first, so a steady stream of searches cannot starve it.
            self._state.wait_for(lambda: self._exclusive_waiting == 0)
            self._check_open()
            embedder = self._embedder(collection)
            self._running += 1
        try:
            yield embedder
        finally:
            with self._state:
                self._running -= 1
                self._state.notify_all()

    @contextmanager
    def _exclusive(self, closing: bool = False) -> Iterator[None]:
        """Waits for the running operations to end and holds new ones off until done."""
        with self._state:
            self._exclusive_waiting += 1
            try:
                self._state.wait_for(lambda: self._running == 0)
            finally:
                self._exclusive_waiting -= 1
            try:
                if not closing:
                    self._check_open()
                yield
            finally:
                self._state.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise VectorStoreError("the vector store is closed")

    def _embedder(self, name: str) -> Embedder | None:
        if name not in self._embedders:
            found = self._read_embedder(name)
            if found is None:
                return None
            self._embedders[name] = found
        return self._embedders[name]

    def _create(self, name: str, embedder: Embedder) -> Embedder:
        created = self._create_collection(name, embedder)
        self._embedders[name] = created
        return created

    @staticmethod
    def _row(point: ChunkPoint) -> _Row:
        language = point.language or detect_language(f"{point.title or ''}\n{point.text}")
        payload = {
            "owner": point.owner,
            "document_id": point.document_id,
            "filename": point.filename,
            "title": point.title,
            "page": point.page,
            "chunk_index": point.chunk_index,
            "text": point.text,
            "language": language,
        }
        return _Row(
            id=point_id(point.document_id, point.chunk_index),
            dense=point.vector,
            sparse=document_sparse(point.text, point.title, language),
            payload=payload,
        )

    # --- backend primitives (under _shared or _exclusive) -------------------------------------

    @abstractmethod
    def _read_embedder(self, name: str) -> Embedder | None: ...

    @abstractmethod
    def _create_collection(self, name: str, embedder: Embedder) -> Embedder:
        """Creates it, or returns the embedder of the one another process created meanwhile."""

    @abstractmethod
    def _prepare(self, name: str) -> None:
        """Makes sure an existing collection is ready for use (e.g. has its payload indexes)."""

    @abstractmethod
    def _upsert(self, name: str, rows: list[_Row]) -> None: ...

    @abstractmethod
    def _delete(self, name: str, conditions: Conditions) -> None: ...

    @abstractmethod
    def _count(self, name: str, conditions: Conditions) -> int: ...

    @abstractmethod
    def _query(
        self,
        name: str,
        dense: list[float] | None,
        sparse: tuple[list[int], list[float]] | None,
        conditions: Conditions,
        limit: int,
    ) -> tuple[list[_Found], list[_Found]]: ...

    @abstractmethod
    def _dense_vectors(self, name: str, point_ids: list[str]) -> list[list[float]]: ...

    @abstractmethod
    def _drop(self, name: str) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...


def _check_dim(collection: str, embedder: Embedder, vector: list[float]) -> None:
    if len(vector) != embedder.dim:
        raise ValueError(f"a {len(vector)}-dimensional vector for collection {collection!r} of {embedder}")


def _conditions(
    owner: str | None,
    document_ids: list[str] | None,
    filters: dict[str, FilterValue | list[str] | list[int]] | None,
) -> Conditions | None:
    """All conditions a point must meet; None when they can match nothing."""
    conditions: Conditions = []
    if owner is not None:
        conditions.append(("owner", owner))
    if document_ids is not None:
        if not document_ids:
            return None
        conditions.append(("document_id", list(document_ids)))
    for key, value in (filters or {}).items():
        if key not in FILTER_KEYS:
            raise ValueError(f"cannot filter on {key!r}; filterable: {', '.join(sorted(FILTER_KEYS))}")
        if isinstance(value, list):
            if not value:
                return None
            if not all(isinstance(item, str) for item in value) and not all(
                isinstance(item, int) and not isinstance(item, bool) for item in value
            ):
                raise ValueError(f"filter {key!r}: a list must hold only strings or only integers")
        elif isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError(f"filter {key!r}: {type(value).__name__} values cannot be matched exactly")
        conditions.append((key, value))
    return conditions


def _fused_hits(
    dense_found: list[_Found],
    sparse_found: list[_Found],
    similar: list[_Found],
    dense_weight: float,
    sparse_weight: float,
    rrf_k: int,
    k: int,
) -> list[SearchHit]:
    """The k best of the fused rankings; dense_score is each chunk's cosine in `similar` (the question's
    own nearest chunks), None for a chunk that was not among them."""
    dense_scores = {found.id: found.score for found in similar}
    sparse_scores = {found.id: found.score for found in sparse_found}
    payloads = {found.id: found.payload for found in [*dense_found, *sparse_found]}
    fused = fuse(
        [[(f.id, f.score) for f in dense_found], [(f.id, f.score) for f in sparse_found]],
        [dense_weight, sparse_weight],
        rrf_k,
    )
    hits = []
    for chunk_id, score in fused[:k]:
        payload = payloads[chunk_id]
        hits.append(
            SearchHit(
                document_id=payload["document_id"],
                filename=payload["filename"],
                title=payload.get("title"),
                page=payload.get("page"),
                chunk_index=payload["chunk_index"],
                text=payload["text"],
                language=payload.get("language"),
                score=score,
                dense_score=dense_scores.get(chunk_id),
                sparse_score=sparse_scores.get(chunk_id),
            )
        )
    return hits


# --- Qdrant's in-process engine ---------------------------------------------------------------------


class EdgeVectorStore(VectorStore):
    """One qdrant-edge shard per collection under `root/<collection>/shard`, its embedder recorded in
    `root/<collection>/embedder.json`, written after the shard so it marks a finished creation."""

    def __init__(self, root: Path) -> None:
        super().__init__(serialized=False)
        self._root = root
        self._shards: dict[str, edge.EdgeShard] = {}
        root.mkdir(parents=True, exist_ok=True)
        self._lock_file = _hold_lock(root / ".lock")

    def _read_embedder(self, name: str) -> Embedder | None:
        meta = self._root / name / "embedder.json"
        if not meta.exists():
            return None
        data = json.loads(meta.read_text())
        # Loaded here, under the state lock, so two threads never open one shard twice.
        self._shards[name] = edge.EdgeShard.load(str(self._root / name / "shard"))
        return Embedder(data["model"], data["dim"])

    def _create_collection(self, name: str, embedder: Embedder) -> Embedder:
        directory = self._root / name
        # A shard without embedder.json is what a failed creation leaves: it holds no data yet.
        failed = self._shards.pop(name, None)
        if failed is not None:
            failed.close()
        shutil.rmtree(directory / "shard", ignore_errors=True)
        config = edge.EdgeConfig(
            vectors={DENSE: edge.EdgeVectorParams(size=embedder.dim, distance=edge.Distance.Cosine)},
            sparse_vectors={SPARSE: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)},
        )
        shard = edge.EdgeShard.create(str(directory / "shard"), config)
        shard.update(
            edge.UpdateOperation.create_field_index("owner", edge.KeywordIndexParams(is_tenant=True))
        )
        shard.update(edge.UpdateOperation.create_field_index("document_id", edge.PayloadSchemaType.Keyword))
        shard.flush()
        self._shards[name] = shard
        _write_atomically(
            directory / "embedder.json", json.dumps({"model": embedder.model, "dim": embedder.dim})
        )
        return embedder

    def _prepare(self, name: str) -> None:
        # The shard gets its indexes before embedder.json marks it created: nothing is left to do.
        return None

    def _shard(self, name: str) -> edge.EdgeShard:
        return self._shards[name]

    def _upsert(self, name: str, rows: list[_Row]) -> None:
        points = []
        for row in rows:
            vectors: dict[str, Any] = {DENSE: row.dense}
            if row.sparse[0]:
                vectors[SPARSE] = edge.SparseVector(*row.sparse)
            points.append(edge.Point(row.id, vectors, row.payload))
        self._shard(name).update(edge.UpdateOperation.upsert_points(points))

    def _delete(self, name: str, conditions: Conditions) -> None:
        self._shard(name).update(edge.UpdateOperation.delete_points_by_filter(_edge_filter(conditions)))

    def _count(self, name: str, conditions: Conditions) -> int:
        return self._shard(name).count(edge.CountRequest(exact=True, filter=_edge_filter(conditions)))

    def _query(
        self,
        name: str,
        dense: list[float] | None,
        sparse: tuple[list[int], list[float]] | None,
        conditions: Conditions,
        limit: int,
    ) -> tuple[list[_Found], list[_Found]]:
        where = _edge_filter(conditions)
        nearest = []
        if dense is not None:
            nearest.append(edge.Query.Nearest(dense, using=DENSE))
        if sparse is not None:
            nearest.append(edge.Query.Nearest(edge.SparseVector(*sparse), using=SPARSE))
        queries = [edge.QueryRequest(limit=limit, query=q, filter=where, with_payload=True) for q in nearest]
        # One batch: the engine plans both searches together over the same segments.
        results = iter(self._shard(name).query_batch(edge.QueryBatchRequest(queries)))
        dense_found = _edge_found(next(results)) if dense is not None else []
        sparse_found = _edge_found(next(results)) if sparse is not None else []
        return dense_found, sparse_found

    def _dense_vectors(self, name: str, point_ids: list[str]) -> list[list[float]]:
        records = self._shard(name).retrieve(point_ids, with_payload=False, with_vector=[DENSE])
        return [list(record.vector[DENSE]) for record in records if record.vector]

    def _drop(self, name: str) -> None:
        shard = self._shards.pop(name, None)
        if shard is not None:
            shard.close()
        # The marker goes first: a crash midway leaves a directory that creation cleans up.
        (self._root / name / "embedder.json").unlink()
        shutil.rmtree(self._root / name)

    def _close(self) -> None:
        for shard in self._shards.values():
            shard.flush()
            shard.close()
        self._shards.clear()
        self._lock_file.close()


def _edge_filter(conditions: Conditions) -> edge.Filter | None:
    if not conditions:
        return None
    must: list[Any] = []
    for key, value in conditions:
        match = edge.MatchAny(value) if isinstance(value, list) else edge.MatchValue(value)
        must.append(edge.FieldCondition(key, match=match))
    return edge.Filter(must=must)


def _edge_found(points: list[edge.ScoredPoint]) -> list[_Found]:
    return [_Found(str(point.id), point.score, point.payload or {}) for point in points]


def _hold_lock(path: Path) -> IO[str]:
    """An exclusive lock on path for as long as the returned file stays open."""
    file = path.open("a+")
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        holder = file.read().strip() or "another process"
        file.close()
        raise VectorStoreLocked(
            f"the vector store under {path.parent} is open in {holder}; Qdrant's in-process engine admits "
            "one process: route vector work to it (vector_task_queue) or set QDRANT_URL to a server"
        ) from None
    file.truncate(0)
    file.write(f"process {os.getpid()}\n")
    file.flush()
    return file


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


# --- Qdrant server (or qdrant-client's in-process mode) -----------------------------------------------

_MODEL_KEY = "embedding_model"
_DIM_KEY = "embedding_dim"


class ClientVectorStore(VectorStore):
    def __init__(self, client: QdrantClient, local: bool) -> None:
        # The in-process mode keeps plain Python structures; the server's HTTP client is thread-safe.
        super().__init__(serialized=local)
        self._client = client
        self._local = local
        self._indexed: set[str] = set()

    def _read_embedder(self, name: str) -> Embedder | None:
        if not self._client.collection_exists(name):
            return None
        config = self._client.get_collection(name).config
        meta = config.metadata or {}
        if _MODEL_KEY not in meta or _DIM_KEY not in meta:
            vectors = config.params.vectors
            size = vectors[DENSE].size if isinstance(vectors, dict) and DENSE in vectors else 0
            return Embedder("an unrecorded embedder", size)
        return Embedder(str(meta[_MODEL_KEY]), int(meta[_DIM_KEY]))

    def _create_collection(self, name: str, embedder: Embedder) -> Embedder:
        try:
            self._client.create_collection(
                name,
                vectors_config={DENSE: qm.VectorParams(size=embedder.dim, distance=qm.Distance.COSINE)},
                sparse_vectors_config={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
                metadata={_MODEL_KEY: embedder.model, _DIM_KEY: embedder.dim},
            )
        except UnexpectedResponse as error:
            # Another worker created it between our check and our create: theirs stands.
            if error.status_code != 409:
                raise
            created = self._read_embedder(name)
            if created is None:
                raise
            return created
        return embedder

    def _prepare(self, name: str) -> None:
        # Once per process rather than right after creation: a creator that died in between, or lost
        # the race to create, still leaves a collection with its indexes. Creating one is idempotent.
        # The in-process mode has no payload indexes (it filters by scanning) and warns if asked.
        if self._local or name in self._indexed:
            return
        self._client.create_payload_index(
            name, "owner", qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, is_tenant=True)
        )
        self._client.create_payload_index(name, "document_id", qm.PayloadSchemaType.KEYWORD)
        self._indexed.add(name)

    def _upsert(self, name: str, rows: list[_Row]) -> None:
        points = []
        for row in rows:
            vectors: dict[str, Any] = {DENSE: row.dense}
            if row.sparse[0]:
                vectors[SPARSE] = qm.SparseVector(indices=row.sparse[0], values=row.sparse[1])
            points.append(qm.PointStruct(id=row.id, vector=vectors, payload=row.payload))
        self._client.upsert(name, points, wait=True)

    def _delete(self, name: str, conditions: Conditions) -> None:
        selector = qm.FilterSelector(filter=_client_filter(conditions) or qm.Filter())
        self._client.delete(name, selector, wait=True)

    def _count(self, name: str, conditions: Conditions) -> int:
        return self._client.count(name, count_filter=_client_filter(conditions), exact=True).count

    def _query(
        self,
        name: str,
        dense: list[float] | None,
        sparse: tuple[list[int], list[float]] | None,
        conditions: Conditions,
        limit: int,
    ) -> tuple[list[_Found], list[_Found]]:
        where = _client_filter(conditions)
        requests = []
        if dense is not None:
            requests.append(
                qm.QueryRequest(query=dense, using=DENSE, filter=where, limit=limit, with_payload=True)
            )
        if sparse is not None:
            vector = qm.SparseVector(indices=sparse[0], values=sparse[1])
            requests.append(
                qm.QueryRequest(query=vector, using=SPARSE, filter=where, limit=limit, with_payload=True)
            )
        results = iter(self._client.query_batch_points(name, requests))
        dense_found = _client_found(next(results)) if dense is not None else []
        sparse_found = _client_found(next(results)) if sparse is not None else []
        return dense_found, sparse_found

    def _dense_vectors(self, name: str, point_ids: list[str]) -> list[list[float]]:
        records = self._client.retrieve(name, point_ids, with_payload=False, with_vectors=[DENSE])
        return [list(record.vector[DENSE]) for record in records if isinstance(record.vector, dict)]

    def _drop(self, name: str) -> None:
        self._client.delete_collection(name)
        self._indexed.discard(name)

    def _close(self) -> None:
        self._client.close()


def _client_filter(conditions: Conditions) -> qm.Filter | None:
    if not conditions:
        return None
    must: list[qm.Condition] = []
    for key, value in conditions:
        match = qm.MatchAny(any=value) if isinstance(value, list) else qm.MatchValue(value=value)
        must.append(qm.FieldCondition(key=key, match=match))
    return qm.Filter(must=must)


def _client_found(response: qm.QueryResponse) -> list[_Found]:
    return [_Found(str(point.id), point.score, point.payload or {}) for point in response.points]
