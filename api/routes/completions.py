"""GET /completions/export: the caller's saved chat answers as JSON lines, for analysis and tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from api.deps import CurrentUser, SessionDep
from core.tables import Completion

router = APIRouter(tags=["completions"])


@router.get(
    "/completions/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "One JSON record per line."}},
)
async def export_completions(
    user: CurrentUser,
    session: SessionDep,
    since: Annotated[
        datetime | None, Query(description="Only records created at or after this time.")
    ] = None,
    until: Annotated[datetime | None, Query(description="Only records created before this time.")] = None,
    provider: Annotated[str | None, Query(max_length=32)] = None,
) -> StreamingResponse:
    query = (
        select(Completion)
        .where(Completion.owner_id == user.id)
        .order_by(Completion.created_at, Completion.id)
    )
    if since is not None:
        query = query.where(Completion.created_at >= since)
    if until is not None:
        query = query.where(Completion.created_at < until)
    if provider is not None:
        query = query.where(Completion.provider == provider)
    records = (await session.scalars(query)).all()

    async def lines() -> AsyncIterator[str]:
        for r in records:
            yield json.dumps({
                "job_id": r.job_id, "created_at": r.created_at.isoformat(), "provider": r.provider,
                "model": r.model, "text": r.text, "usage": r.usage, "latency_ms": r.latency_ms,
                "request": r.request, "answers": r.answers,
            }, ensure_ascii=False) + "\n"  # fmt: skip

    return StreamingResponse(lines(), media_type="application/x-ndjson")
