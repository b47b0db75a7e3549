"""Recorded histories of RagChatWorkflow must replay on today's code. They are recorded from the real
runs of tests/workflows/test_rag.py (RECORD_HISTORIES=1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from core.schemas import RagInput, RagResult
from workflows.chat import ChatWorkflow
from workflows.rag import RagChatWorkflow

HISTORIES = sorted((Path(__file__).parent.parent / "histories").glob("rag_*.json"))


def load(path: Path) -> WorkflowHistory:
    """The history under its recorded job id: the answer's child id is derived from it, and a replay
    under another id would see a different child."""
    text = path.read_text()
    children = [
        event["startChildWorkflowExecutionInitiatedEventAttributes"]["workflowId"]
        for event in json.loads(text)["events"]
        if "startChildWorkflowExecutionInitiatedEventAttributes" in event
    ]
    return WorkflowHistory.from_json(children[0].removesuffix("-answer") if children else path.stem, text)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_rag_workflow_replays_recorded_history(path: Path) -> None:
    replayer = Replayer(workflows=[RagChatWorkflow, ChatWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(load(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


def test_histories_cover_an_answer_no_answer_and_a_failure() -> None:
    assert {p.stem for p in HISTORIES} >= {
        "rag_answered",
        "rag_answered_local_calls",
        "rag_nothing_relevant",
        "rag_provider_refused",
    }


@workflow.defn(name="RagChatWorkflow")
class RagChatWorkflowThatAsksTheModelFirst:
    """A reordering that running jobs cannot take: the answer before the search."""

    @workflow.run
    async def run(self, request: RagInput) -> RagResult:
        answer = await workflow.execute_child_workflow(ChatWorkflow.run, request.chat)
        return RagResult(job_id=answer.job_id, text=answer.text)


async def test_replay_catches_a_change_that_breaks_running_workflows() -> None:
    replayer = Replayer(
        workflows=[RagChatWorkflowThatAsksTheModelFirst, ChatWorkflow], data_converter=pydantic_data_converter
    )
    answered = next(p for p in HISTORIES if p.stem == "rag_answered")
    result = await replayer.replay_workflow(load(answered), raise_on_replay_failure=False)
    assert isinstance(result.replay_failure, NondeterminismError)
