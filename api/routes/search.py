"""Search of the caller's documents: hybrid (the query's embedding and its terms, fused).

A search is a read: this process holds the vector store, so the route reads it directly rather than
through a workflow (writes still go through the ingestion job's activities). The query is embedded by
the same embedder that made the collection. No model answers a search, so the prompt guard does not
apply to it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from temporalio.exceptions import ApplicationError

from activities.retrieval import search
from api.deps import CurrentUser, SettingsDep
from api.errors import ApiError
from api.routes.documents import chosen_embedder
from core.schemas import SearchRequest
from core.tables import Role, User

router = APIRouter(tags=["search"])


class SearchBody(BaseModel):
    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(5, ge=1, le=100)
    document_ids: list[str] | None = None
    filters: dict[str, str | int | list[str] | list[int]] | None = Field(
        None, description="Equalities on filename, title, page, chunk_index or language; a list matches any."
    )
    all: bool = Field(False, description="Admins: search everyone's documents.")
    embedder: str | None = Field(None, description="Search the documents indexed by this embedder.")


class Hit(BaseModel):
    document_id: str
    filename: str
    title: str | None = None
    page: int | None = None
    chunk_index: int
    score: float
    text: str


async def run_search(request: Request, user: User, body: SearchBody) -> list[Hit]:
    embedder = chosen_embedder(request.app.state.settings, body.embedder)
    owner = None if body.all and user.role == Role.admin else str(user.id)
    query = SearchRequest(
        query=body.query,
        k=body.k,
        owner=owner,
        document_ids=body.document_ids,
        filters=body.filters,
        embedder=embedder,
    )
    try:
        result = await search(request.app.state.settings, request.app.state.vectors, query)
    except ApplicationError as exc:
        raise ApiError(502, "embedder_error", exc.message) from None
    except ValueError as exc:  # a filter on a key that cannot be filtered on
        raise ApiError(422, "invalid_filter", str(exc)) from None
    return [Hit.model_validate(hit.model_dump()) for hit in result.hits]


@router.post("/embeddings/search", response_model=list[Hit])
async def search_post(
    body: SearchBody, request: Request, user: CurrentUser, settings: SettingsDep
) -> list[Hit]:
    return await run_search(request, user, body)


@router.get("/search/", response_model=list[Hit])
async def search_get(
    request: Request,
    user: CurrentUser,
    settings: SettingsDep,
    q: Annotated[str, Query(min_length=1, max_length=4000)],
    k: Annotated[int, Query(ge=1, le=100)] = 5,
    all: bool = False,
    embedder: str | None = None,
) -> list[Hit]:
    return await run_search(request, user, SearchBody(query=q, k=k, all=all, embedder=embedder))
