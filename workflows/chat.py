"""ChatWorkflow: one chat answer from one provider, as a durable job.

generate -> result. Later steps (guards, retrieval, fallback) are added as further awaited calls.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.generation import GenerationActivities
    from core.schemas import ChatInput, ChatResult, GenerateInput, Message

# Provider faults are retried for seconds, not hours: a provider that is down ends the job failed,
# with its reason, well within a minute. Non-retryable errors (4xx) end it at once.
PROVIDER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=4,
)
GENERATE_TIMEOUT = timedelta(minutes=5)
# The activity heartbeats every second; a worker that died is noticed after this, not after minutes.
GENERATE_HEARTBEAT_TIMEOUT = timedelta(seconds=10)


def chat_messages(request: ChatInput) -> list[Message]:
    messages = [Message(role="system", content=request.system)] if request.system else []
    return [*messages, Message(role="user", content=request.prompt)]


@workflow.defn
class ChatWorkflow:
    @workflow.run
    async def run(self, request: ChatInput) -> ChatResult:
        answer = await workflow.execute_activity_method(
            GenerationActivities.generate,
            GenerateInput(
                provider=request.provider,
                model=request.model,
                messages=chat_messages(request),
                params=request.params,
            ),
            start_to_close_timeout=GENERATE_TIMEOUT,
            heartbeat_timeout=GENERATE_HEARTBEAT_TIMEOUT,
            retry_policy=PROVIDER_RETRY,
        )
        return ChatResult(
            job_id=workflow.info().workflow_id,
            provider=answer.provider,
            model=answer.model,
            text=answer.text,
            usage=answer.usage,
            latency_ms=answer.latency_ms,
        )
