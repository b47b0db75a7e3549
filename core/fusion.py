"""Fusing ranked result lists (dense, sparse, ...) into one ranking.

Weighted reciprocal rank fusion: an id at 1-based rank r of list i earns weights[i] / (k + r); an id
absent from a list earns nothing from it. Ties are broken by id, so the order never depends on the
order of dict iteration or of the input lists.
"""

from __future__ import annotations

import math

# RRF's rank offset: larger flattens the difference between the first ranks and the later ones.
RRF_K = 60
# Weights of the hybrid search's two lists (bench/retrieval_quality.py --tune, on dev queries).
DENSE_WEIGHT = 1.0
SPARSE_WEIGHT = 1.0
# Pseudo-relevance feedback: the dense query is moved toward the vectors of the first PRF_DOCS fused
# hits (weight PRF_WEIGHT against the query's own 1) and searched again; 0 docs turns it off.
PRF_DOCS = 3
PRF_WEIGHT = 1.0


def fuse(
    ranked_lists: list[list[tuple[str, float]]], weights: list[float], k: int
) -> list[tuple[str, float]]:
    """One ranking of every id in `ranked_lists` (each best first), as (id, fused score) best first.

    `k` is RRF's rank offset (RRF_K unless tuned). Within one list, a repeated id keeps its best rank.
    """
    if len(ranked_lists) != len(weights):
        raise ValueError(f"{len(ranked_lists)} ranked lists but {len(weights)} weights")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    fused: dict[str, float] = {}
    for ranked, weight in zip(ranked_lists, weights, strict=True):
        seen: set[str] = set()
        for rank, (doc_id, _score) in enumerate(ranked, start=1):
            if doc_id in seen:
                continue
            seen.add(doc_id)
            fused[doc_id] = fused.get(doc_id, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def fuse_scores(ranked_lists: list[list[tuple[str, float]]], weights: list[float]) -> list[tuple[str, float]]:
    """Weighted sum of each list's scores scaled to [0, 1] by that list's own min and max.

    Unlike rank fusion this keeps how far apart the scores are: a clear winner in one list stays a
    clear winner. An id absent from a list gets 0 from it; a list whose scores are all equal gives 1.
    """
    if len(ranked_lists) != len(weights):
        raise ValueError(f"{len(ranked_lists)} ranked lists but {len(weights)} weights")
    fused: dict[str, float] = {}
    for ranked, weight in zip(ranked_lists, weights, strict=True):
        if not ranked:
            continue
        best: dict[str, float] = {}
        for doc_id, score in ranked:
            best[doc_id] = max(score, best.get(doc_id, score))
        low, high = min(best.values()), max(best.values())
        for doc_id, score in best.items():
            scaled = (score - low) / (high - low) if high > low else 1.0
            fused[doc_id] = fused.get(doc_id, 0.0) + weight * scaled
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def feedback_vector(query: list[float], hits: list[list[float]], weight: float = PRF_WEIGHT) -> list[float]:
    """The query vector moved toward the mean of the top hits' vectors, unit length (Rocchio).

    Searching again with it finds documents like the best first answers, which the query's own
    wording may have missed. With no hits the query comes back normalised.
    """
    moved = list(query)
    if hits:
        for vector in hits:
            if len(vector) != len(query):
                raise ValueError(f"hit vector has {len(vector)} dimensions, query has {len(query)}")
            for i, value in enumerate(vector):
                moved[i] += weight * value / len(hits)
    norm = math.sqrt(sum(v * v for v in moved))
    return [v / norm for v in moved] if norm > 0 else moved
