"""The `save_completion` activity: keeps each completed chat as a record users can export."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from core.schemas import SaveCompletionInput
from core.tables import Completion

# Both databases can insert-unless-present in one statement; the record is written on a sync chat's
# critical path, so one round trip matters.
_INSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


class RecordActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    @activity.defn(name="save_completion")
    async def save_completion(self, record: SaveCompletionInput) -> None:
        result = record.result
        async with self.sessions() as session:
            insert = _INSERT[session.get_bind().dialect.name]
            statement = (
                insert(Completion)
                .values(
                    job_id=result.job_id,
                    owner_id=record.owner,
                    provider=result.provider,
                    model=result.model,
                    text=result.text,
                    latency_ms=result.latency_ms,
                    request=record.request.model_dump(mode="json", exclude={"stream_to", "local_calls"}),
                    usage=result.usage.model_dump(),
                    answers=[a.model_dump(mode="json") for a in result.answers],
                )
                # A retried attempt may find its own earlier write: one record per job, never two.
                .on_conflict_do_nothing(index_elements=[Completion.job_id])
            )
            await session.execute(statement)
            await session.commit()
