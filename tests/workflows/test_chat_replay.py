"""Recorded histories of ChatWorkflow must replay on today's code: a change that would break
running workflows fails here. Record new ones as tests/histories/README.md says."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from core.schemas import ChatInput
from workflows.chat import ChatWorkflow

HISTORIES = sorted((Path(__file__).parent.parent / "histories").glob("chat_*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_chat_workflow_replays_recorded_history(path: Path) -> None:
    replayer = Replayer(workflows=[ChatWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(load(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


def test_histories_cover_success_and_failure() -> None:
    assert {p.stem for p in HISTORIES} >= {"chat_completed", "chat_provider_refused", "chat_local_calls"}


@workflow.defn(name="ChatWorkflow")
class ChatWorkflowThatCallsAnotherActivity:
    @workflow.run
    async def run(self, request: ChatInput) -> str:
        return await workflow.execute_activity(
            "summarise", request.prompt, start_to_close_timeout=timedelta(seconds=5)
        )


async def test_replay_catches_a_change_that_breaks_running_workflows() -> None:
    replayer = Replayer(
        workflows=[ChatWorkflowThatCallsAnotherActivity], data_converter=pydantic_data_converter
    )
    result = await replayer.replay_workflow(load(HISTORIES[0]), raise_on_replay_failure=False)
    assert isinstance(result.replay_failure, NondeterminismError)
