"""The guard's steps inside workflows: a user's texts checked again (the API checked them before the
job started, but a job can be started by other clients too), and retrieved sources screened before they
enter a prompt. Each refusal is a security event; a refused prompt counts toward its user's lockout, a
flagged source does not (its author may not be the user).

Both run as local activities: the guard is pure CPU (about a millisecond a text) and needs no
round trip through the server. The model's answer is screened inside `generate` itself, delta by
delta (core/output_screen.py), since only there can a stream be stopped before it reaches the client.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from core.guard import get_guard
from core.schemas import FlaggedSource, GuardKind, GuardVerdict, PromptCheck, SourcesCheck, SourcesVerdict
from core.security_events import record_security_event


async def record_in_job(
    sessions: async_sessionmaker[AsyncSession],
    user_id: int | None,
    kind: GuardKind,
    found: list[tuple[str, GuardVerdict]],
) -> None:
    """The security events of the running activity's job, one per text. Only a refused prompt counts
    toward its user's lockout: a flagged source or a blocked answer may not be the user's doing."""
    info = activity.info()
    async with sessions() as session:
        for text, verdict in found:
            record_security_event(
                session, user_id=user_id, route=f"workflow:{info.workflow_type}", kind=kind,
                reasons=verdict.reasons, score=verdict.score, text=text, job_id=info.workflow_id,
                counts_toward_lockout=kind == "prompt",
            )  # fmt: skip
        await session.commit()


class GuardActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    @activity.defn(name="check_prompt")
    async def check_prompt(self, request: PromptCheck) -> GuardVerdict:
        """The verdict on the most suspicious of the user's texts."""
        guard = get_guard()
        verdicts = [(guard.check(text, "prompt"), text) for text in request.texts if text]
        if not verdicts:
            return GuardVerdict(allowed=True, score=0.0)
        verdict, text = max(verdicts, key=lambda pair: (not pair[0].allowed, pair[0].score))
        if not verdict.allowed:
            await record_in_job(self.sessions, request.owner, "prompt", [(text, verdict)])
        return verdict

    @activity.defn(name="screen_sources")
    async def screen_sources(self, request: SourcesCheck) -> SourcesVerdict:
        """The retrieved chunks that read as instructions to the model, each recorded."""
        guard = get_guard()
        flagged = []
        for hit in request.hits:
            verdict = guard.check(hit.text, "document")
            if not verdict.allowed:
                flagged.append((hit, verdict))
        if flagged:
            await record_in_job(
                self.sessions, request.owner, "document", [(hit.text, verdict) for hit, verdict in flagged]
            )
        return SourcesVerdict(
            flagged=[
                FlaggedSource(
                    document_id=hit.document_id,
                    filename=hit.filename,
                    page=hit.page,
                    chunk_index=hit.chunk_index,
                    score=verdict.score,
                    reasons=verdict.reasons,
                )
                for hit, verdict in flagged
            ]
        )
