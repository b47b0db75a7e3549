"""Operators see every job with the `temporal` CLI: the workflow, and its `generate` activity."""

from __future__ import annotations

import base64
import json
import subprocess

import httpx

from assistant.stack import venv_binary
from tests.api.routes.test_chat import wait_for_job
from tests.conftest import RunningStack


def temporal_cli(stack: RunningStack, *args: str) -> str:
    command = [venv_binary("temporal"), *args, "--address", stack.settings.temporal_address, "-o", "json"]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout


async def test_a_chat_job_is_a_workflow_the_cli_lists_and_shows(
    api: httpx.AsyncClient, user_headers: dict, stack: RunningStack
) -> None:
    response = await api.post("/chat/", json={"prompt": "Hello!", "max_tokens": 8}, headers=user_headers)
    job_id = response.json()["job_id"]

    listed = json.loads(temporal_cli(stack, "workflow", "list", "--query", f"WorkflowId = '{job_id}'"))
    assert [(w["execution"]["workflowId"], w["type"]["name"]) for w in listed] == [(job_id, "ChatWorkflow")]
    assert listed[0]["status"] == "WORKFLOW_EXECUTION_STATUS_COMPLETED"

    # A sync chat calls its provider as a local activity: a marker in the history names it.
    history = json.loads(temporal_cli(stack, "workflow", "show", "--workflow-id", job_id))
    markers = [
        e["markerRecordedEventAttributes"]["details"]["data"]["payloads"][0]["data"]
        for e in history["events"]
        if e["eventType"] == "EVENT_TYPE_MARKER_RECORDED"
        and e["markerRecordedEventAttributes"]["markerName"] == "core_local_activity"
    ]
    assert [json.loads(base64.b64decode(m))["activity_type"] for m in markers] == [
        "check_prompt",
        "generate",
        "save_completion",
    ]

    # An async job calls it as a regular activity, scheduled through the server.
    accepted = await api.post("/chat/async", json={"prompt": "Hello!", "max_tokens": 8}, headers=user_headers)
    async_id = accepted.json()["job_id"]
    assert (await wait_for_job(api, async_id, user_headers))["status"] == "completed"
    history = json.loads(temporal_cli(stack, "workflow", "show", "--workflow-id", async_id))
    scheduled = [
        e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in history["events"]
        if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"
    ]
    assert scheduled == ["generate"]
