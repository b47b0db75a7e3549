"""A worker killed in the middle of a provider call: a new worker finishes the job, once."""

from __future__ import annotations

import asyncio
import json

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from tests.api.routes.test_chat import wait_for_job
from tests.conftest import RunningStack


async def test_job_survives_a_worker_killed_mid_call(
    api: httpx.AsyncClient, user_headers: dict, stack: RunningStack, temporal: Client
) -> None:
    body = {"prompt": "Write a long story about a lighthouse keeper.", "max_tokens": 60, "temperature": 0}
    job_id = (await api.post("/chat/async", json=body, headers=user_headers)).json()["job_id"]
    handle = temporal.get_workflow_handle(job_id)
    identity = ""
    for _ in range(200):
        pending = (await handle.describe()).raw_description.pending_activities
        if pending and pending[0].last_worker_identity:
            identity = pending[0].last_worker_identity
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # inside the provider call (60 tokens take about 2 s here)

    # Whichever process runs the call (the worker, or the API's own worker of the fast path) dies.
    pid = int(identity.split("@", 1)[0])
    part = next(p for p in stack.stack.parts if p.process is not None and p.process.pid == pid)
    assert part.name in ("worker", "api")
    part.process.kill()  # type: ignore[union-attr]
    part.process.wait()  # type: ignore[union-attr]
    await asyncio.to_thread(stack.stack.start_one, part)

    job = await wait_for_job(api, job_id, user_headers, timeout_s=180)
    assert job["status"] == "completed"
    assert len(job["result"]["text"]) > 20
    history = await temporal.get_workflow_handle(job_id).fetch_history()
    generate_starts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.attempt >= 1
    ]
    assert generate_starts[0] == 2  # the first attempt died with its worker; the second answered

    # The user sees one answer: one saved record for the job.
    export = await api.get("/completions/export", headers=user_headers)
    records = [json.loads(line) for line in export.text.splitlines()]
    assert [r["job_id"] for r in records].count(job_id) == 1
