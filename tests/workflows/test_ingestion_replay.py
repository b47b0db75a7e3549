"""Recorded histories of IngestionWorkflow and DeleteDocumentWorkflow must replay on today's code: a
change that would break running ingestions fails here. Record new ones as tests/histories/README.md says."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.ingestion import DeleteDocumentWorkflow, IngestionWorkflow

HISTORIES = sorted(
    [
        *(Path(__file__).parent.parent / "histories").glob("ingestion_*.json"),
        *(Path(__file__).parent.parent / "histories").glob("delete_document*.json"),
    ]
)


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_document_workflows_replay_recorded_history(path: Path) -> None:
    replayer = Replayer(
        workflows=[IngestionWorkflow, DeleteDocumentWorkflow], data_converter=pydantic_data_converter
    )
    result = await replayer.replay_workflow(load(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


def test_histories_cover_success_failure_and_deletion() -> None:
    assert {p.stem for p in HISTORIES} >= {"ingestion_completed", "ingestion_failed", "delete_document"}
