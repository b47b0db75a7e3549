"""The `save_completion` activity: keeps each completed chat as a record users can export."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from core.schemas import SaveCompletionInput
from core.tables import Completion


class RecordActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    @activity.defn(name="save_completion")
    async def save_completion(self, record: SaveCompletionInput) -> None:
        result = record.result
        async with self.sessions() as session:
            # A retried attempt may find its own earlier write: one record per job, never two.
            if await session.scalar(select(Completion.id).where(Completion.job_id == result.job_id)):
                return
            session.add(
                Completion(
                    job_id=result.job_id,
                    owner_id=record.owner,
                    provider=result.provider,
                    model=result.model,
                    text=result.text,
                    latency_ms=result.latency_ms,
                    request=record.request.model_dump(mode="json", exclude={"stream_to"}),
                    usage=result.usage.model_dump(),
                    answers=[a.model_dump(mode="json") for a in result.answers],
                )
            )
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()  # the same job's record, written by a concurrent attempt
