"""ChatWorkflow: a chat answer as a durable job.

check_prompt (the guard, again) -> generate with the first provider (its answer screened by the output
guard) -> on failure for good, the next in the fallback list -> result. With `compare`, every listed
provider is asked in parallel and all answers come back side by side. A refused prompt or a blocked
answer ends the job at once, with no fallback: another provider would be asked the same thing.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from activities.generation import GenerationActivities
    from activities.guard import GuardActivities
    from activities.records import RecordActivities
    from core.schemas import (
        Attempt,
        ChatAnswer,
        ChatInput,
        ChatResult,
        GenerateInput,
        GenerateResult,
        GuardVerdict,
        Message,
        PromptCheck,
        SaveCompletionInput,
        Target,
        Usage,
    )

# Provider faults are retried for seconds, not hours: a provider that is down ends the job failed,
# with its reason, well within a minute. Non-retryable errors (4xx) end it at once.
PROVIDER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=4,
)
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=6
)
GUARD_TIMEOUT = timedelta(seconds=30)
GENERATE_TIMEOUT = timedelta(minutes=5)
# The activity heartbeats every second; a worker that died is noticed after this, not after minutes.
GENERATE_HEARTBEAT_TIMEOUT = timedelta(seconds=10)


def chat_messages(request: ChatInput) -> list[Message]:
    if request.messages:
        return request.messages
    messages = [Message(role="system", content=request.system)] if request.system else []
    return [*messages, Message(role="user", content=request.prompt)]


def user_texts(request: ChatInput) -> list[str]:
    """What the user wrote. Not the system message: the calling application's own instructions
    (api/guard_check.py says why)."""
    return [m.content for m in chat_messages(request) if m.role == "user"]


def provider_order(request: ChatInput) -> list[Target]:
    return [Target(provider=request.provider, model=request.model), *request.fallback]


# A failed activity raises ActivityError with the activity's error as its cause; a failed local
# activity raises the activity's ApplicationError itself.
CallFailed = (ActivityError, ApplicationError)


def failure_reason(error: ActivityError | ApplicationError) -> str:
    """What the provider said, not Temporal's wrapping of it."""
    cause = error.cause if isinstance(error, ActivityError) else error
    return cause.message if isinstance(cause, ApplicationError | CancelledError) else str(error)


def cancelled(error: ActivityError | ApplicationError) -> bool:
    return isinstance(error, ActivityError) and isinstance(error.cause, CancelledError)


def blocked(error: ActivityError | ApplicationError) -> bool:
    """The output guard blocked the answer (activities/generation.py)."""
    cause = error.cause if isinstance(error, ActivityError) else error
    return isinstance(cause, ApplicationError) and cause.type == "OutputBlocked"


def guard_refused(verdict: GuardVerdict) -> ApplicationError:
    return ApplicationError(
        "the prompt was refused by the guard: " + ", ".join(verdict.reasons),
        {"reasons": verdict.reasons, "score": verdict.score},
        type="GuardRefused",
        non_retryable=True,
    )


@workflow.defn
class ChatWorkflow:
    @workflow.run
    async def run(self, request: ChatInput) -> ChatResult:
        owner = workflow.memo_value("owner", None, type_hint=int | None)
        # Jobs started before the guard ran in workflows replay without this step.
        if not request.input_screened and workflow.patched("guard-prompt"):
            verdict = await workflow.execute_local_activity_method(
                GuardActivities.check_prompt,
                PromptCheck(texts=user_texts(request), owner=owner),
                start_to_close_timeout=GUARD_TIMEOUT,
                retry_policy=RECORD_RETRY,
            )
            if not verdict.allowed:
                raise guard_refused(verdict)
        result = await (self._compare(request, owner) if request.compare else self._answer(request, owner))
        # Jobs started before answers were saved replay without this step.
        if workflow.patched("save-completion") and owner is not None:
            try:
                # Local: a short database write, run in the same workflow task as the answer's
                # arrival, saves a round trip through the server (about 50 ms here).
                await workflow.execute_local_activity_method(
                    RecordActivities.save_completion,
                    SaveCompletionInput(owner=owner, request=request, result=result),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RECORD_RETRY,
                )
            except CallFailed as error:
                if cancelled(error):
                    raise
                # The answer matters more than its copy for export: the job still completes.
                workflow.logger.warning("could not save the completion: %s", failure_reason(error))
        return result

    async def _answer(self, request: ChatInput, owner: int | None) -> ChatResult:
        attempts: list[Attempt] = []
        for target in provider_order(request):
            try:
                answer = await self._generate(target, request, owner)
            except CallFailed as error:
                if cancelled(error) or blocked(error):
                    raise
                attempts.append(
                    Attempt(provider=target.provider, model=target.model, error=failure_reason(error))
                )
                continue
            attempts.append(Attempt(provider=answer.provider, model=answer.model))
            return self._result(answer, attempts)
        # Every provider failed for good: the job fails with each one's reason.
        raise ApplicationError(
            "; ".join(a.error or "" for a in attempts), type="ProviderError", non_retryable=True
        )

    async def _compare(self, request: ChatInput, owner: int | None) -> ChatResult:
        outcomes = await asyncio.gather(
            *(self._generate(target, request, owner) for target in request.compare), return_exceptions=True
        )
        answers: list[ChatAnswer] = []
        for target, outcome in zip(request.compare, outcomes, strict=True):
            if isinstance(outcome, CallFailed):
                if cancelled(outcome):
                    raise outcome
                answers.append(
                    ChatAnswer(provider=target.provider, model=target.model, error=failure_reason(outcome))
                )
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                answers.append(ChatAnswer(**outcome.model_dump(include=set(ChatAnswer.model_fields))))
        first = next((o for o in outcomes if isinstance(o, GenerateResult)), None)
        if first is None:
            raise ApplicationError(
                "; ".join(a.error or "" for a in answers), type="ProviderError", non_retryable=True
            )
        result = self._result(first, [])
        result.answers = answers
        # Every answer was paid for: the job's usage (what budgets count) is their sum.
        result.usage = Usage(
            prompt_tokens=sum(a.usage.prompt_tokens for a in answers),
            completion_tokens=sum(a.usage.completion_tokens for a in answers),
            total_tokens=sum(a.usage.total_tokens for a in answers),
        )
        return result

    async def _generate(self, target: Target, request: ChatInput, owner: int | None) -> GenerateResult:
        call = GenerateInput(
            provider=target.provider,
            model=target.model,
            messages=chat_messages(request),
            params=request.params,
            stream_to=request.stream_to,
            owner=owner,
        )
        if request.local_calls:
            return await workflow.execute_local_activity_method(
                GenerationActivities.generate,
                call,
                start_to_close_timeout=GENERATE_TIMEOUT,
                retry_policy=PROVIDER_RETRY,
            )
        return await workflow.execute_activity_method(
            GenerationActivities.generate,
            call,
            start_to_close_timeout=GENERATE_TIMEOUT,
            heartbeat_timeout=GENERATE_HEARTBEAT_TIMEOUT,
            retry_policy=PROVIDER_RETRY,
        )

    def _result(self, answer: GenerateResult, attempts: list[Attempt]) -> ChatResult:
        return ChatResult(
            job_id=workflow.info().workflow_id,
            provider=answer.provider,
            model=answer.model,
            text=answer.text,
            usage=answer.usage,
            latency_ms=answer.latency_ms,
            finish_reason=answer.finish_reason,
            attempts=attempts,
        )
