"""The job API: listing, reading, steps and cancelling jobs of every kind, each only by its owner."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError

from core.jobs import start_job
from core.schemas import ChatInput
from tests.api.routes.test_chat import wait_for_job
from tests.api.test_errors import assert_error_shape
from tests.conftest import RunningStack, new_user
from workers.main import build_worker
from workflows.chat import ChatWorkflow

T = TypeVar("T")

FAILS_AT_ONCE = {"prompt": "hi", "model": "no-such-model"}  # a non-retryable provider error: cheap
SHORT = {"prompt": "Say hi.", "max_tokens": 4}
ESSAY_PROMPT = "Write a long essay about the history of rivers."


async def eventually(check: Callable[[], Awaitable[T | None]], timeout_s: float = 20) -> T:
    """The check's first truthy answer: listings come from Temporal's visibility store, which
    catches up with a job's start and close a moment after them."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = await check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"still {answer!r} after {timeout_s} s")
        await asyncio.sleep(0.1)


async def list_all(api: httpx.AsyncClient, headers: dict, **params: str | int) -> list[dict]:
    """Every job of the listing, following next_page_token to the end."""
    items: list[dict] = []
    token = None
    for _ in range(100):
        query = {**params, **({"page_token": token} if token else {})}
        response = await api.get("/jobs", params=query, headers=headers)
        assert response.status_code == 200, response.text
        items += response.json()["items"]
        token = response.json()["next_page_token"]
        if token is None:
            return items
    raise AssertionError("the pages never end")


def ids(items: list[dict]) -> list[str]:
    return [item["job_id"] for item in items]


async def failed_job(api: httpx.AsyncClient, headers: dict) -> str:
    response = await api.post("/chat/", json=FAILS_AT_ONCE, headers=headers)
    assert response.status_code == 502, response.text
    return response.json()["error"]["details"]["job_id"]


async def completed_job(api: httpx.AsyncClient, headers: dict) -> dict:
    response = await api.post("/chat/", json=SHORT, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def user_id(api: httpx.AsyncClient, headers: dict) -> int:
    return (await api.get("/auth/me", headers=headers)).json()["id"]


async def assert_listed(
    api: httpx.AsyncClient, headers: dict, expected: set[str], **params: str | int
) -> None:
    """Listings come from Temporal's visibility store, which catches up with a job's start and close
    a moment after them: the listing must come to be exactly `expected`."""
    deadline = time.monotonic() + 20
    while (found := set(ids(await list_all(api, headers, **params)))) != expected:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert found == expected, params


@asynccontextmanager
async def pending_job(
    temporal: Client, owner: int, kind: str = "chat", task_queue: str | None = None
) -> AsyncIterator[WorkflowHandle]:
    """A job that stays pending while no worker polls its task queue; terminated on the way out."""
    handle = await start_job(
        temporal,
        ChatWorkflow.run,
        ChatInput(prompt="hi"),
        kind=kind,
        owner=owner,
        task_queue=task_queue or f"nobody-polls-{uuid.uuid4().hex}",
        timeout_s=300,
    )
    try:
        yield handle
    finally:
        with contextlib.suppress(RPCError):  # it has closed already
            await handle.terminate("test over")


async def test_a_user_lists_only_own_jobs_and_an_admin_everyones(
    api: httpx.AsyncClient, admin_headers: dict
) -> None:
    alice, _ = await new_user(api, admin_headers)
    bob, _ = await new_user(api, admin_headers)
    alices = {await failed_job(api, alice) for _ in range(2)}
    bobs = {await failed_job(api, bob)}
    await assert_listed(api, alice, alices)
    await assert_listed(api, bob, bobs)
    everyone = set(ids(await list_all(api, admin_headers, limit=100)))
    assert alices | bobs <= everyone
    alice_id = await user_id(api, alice)
    await assert_listed(api, admin_headers, alices, owner=alice_id)
    # Asking for one's own is allowed; for someone else's is not.
    await assert_listed(api, alice, alices, owner=alice_id)
    response = await api.get("/jobs", params={"owner": alice_id}, headers=bob)
    assert response.status_code == 403
    assert_error_shape(response.json())
    assert (await api.get("/jobs")).status_code == 401


async def test_listings_filter_by_kind_and_status(
    api: httpx.AsyncClient, admin_headers: dict, temporal: Client, stack: RunningStack
) -> None:
    headers, _ = await new_user(api, admin_headers)
    owner = await user_id(api, headers)
    completed = (await completed_job(api, headers))["job_id"]
    failed = await failed_job(api, headers)
    queue = f"cancel-before-start-{uuid.uuid4().hex}"
    async with (
        pending_job(temporal, owner, task_queue=queue) as to_cancel,
        pending_job(temporal, owner) as pending,
        pending_job(temporal, owner, kind="other") as other,
    ):
        # Cancelled before any worker saw it: the workflow ends cancelled at its first task.
        assert (await api.post(f"/jobs/{to_cancel.id}/cancel", headers=headers)).status_code == 202
        async with build_worker(temporal, stack.settings.model_copy(update={"task_queue": queue})):
            assert (await wait_for_job(api, to_cancel.id, headers))["status"] == "cancelled"
        cancelled = to_cancel.id

        everything = {completed, failed, cancelled, pending.id, other.id}
        await assert_listed(api, headers, {cancelled}, status="cancelled")
        items = {item["job_id"]: item for item in await list_all(api, headers)}
        assert set(items) == everything
        assert {job: items[job]["status"] for job in everything} == {
            completed: "completed",
            failed: "failed",
            cancelled: "cancelled",
            pending.id: "pending",
            other.id: "pending",
        }
        assert items[other.id]["kind"] == "other" and items[completed]["kind"] == "chat"
        assert items[pending.id]["closed_at"] is None
        assert items[completed]["closed_at"] >= items[completed]["created_at"]
        assert all(
            set(item) == {"job_id", "kind", "status", "created_at", "closed_at"} for item in items.values()
        )
        # Open jobs come first.
        assert set(ids(list(items.values())[:2])) == {pending.id, other.id}

        await assert_listed(api, headers, {completed, failed, cancelled, pending.id}, kind="chat")
        await assert_listed(api, headers, {other.id}, kind="other")
        await assert_listed(api, headers, set(), kind="agent")
        await assert_listed(api, headers, {completed}, status="completed")
        await assert_listed(api, headers, {failed}, status="failed")
        await assert_listed(api, headers, {pending.id, other.id}, status="pending")
        await assert_listed(api, headers, set(), status="running")
        await assert_listed(api, headers, {pending.id}, kind="chat", status="pending")
    # Terminated: to its owner, a failure like any other.
    await assert_listed(api, headers, {failed, pending.id, other.id}, status="failed")
    for bad in ({"status": "sleeping"}, {"kind": "chat' OR Owner != '0"}, {"limit": 0}, {"limit": 101}):
        response = await api.get("/jobs", params=bad, headers=headers)
        assert response.status_code == 422, (bad, response.text)
        assert_error_shape(response.json())


async def test_pages_cover_every_job_once_newest_first(api: httpx.AsyncClient, admin_headers: dict) -> None:
    headers, _ = await new_user(api, admin_headers)
    jobs = [await failed_job(api, headers) for _ in range(5)]

    async def all_five_closed() -> list[dict] | None:
        items = await list_all(api, headers, limit=100)
        return items if len(items) == 5 and all(i["status"] == "failed" for i in items) else None

    whole = await eventually(all_five_closed)
    pages: list[list[str]] = []
    token = None
    while True:
        params: dict[str, str | int] = {"limit": 2, **({"page_token": token} if token else {})}
        body = (await api.get("/jobs", params=params, headers=headers)).json()
        pages.append(ids(body["items"]))
        token = body["next_page_token"]
        if token is None:
            break
    assert [len(page) for page in pages] == [2, 2, 1]
    paged = [job for page in pages for job in page]
    assert paged == ids(whole)
    assert sorted(paged) == sorted(jobs)  # no job twice, none left out
    # Newest first: the last started (and closed) job comes first.
    assert paged == list(reversed(jobs))
    closed = [item["closed_at"] for item in whole]
    assert closed == sorted(closed, reverse=True)

    # A token is good for the listing that gave it, and nothing else.
    first = (await api.get("/jobs", params={"limit": 2}, headers=headers)).json()["next_page_token"]
    for params, who in (
        ({"page_token": "not-a-token"}, headers),
        ({"page_token": "AAAA"}, headers),
        ({"page_token": first[:-2]}, headers),
        ({"page_token": first, "status": "failed"}, headers),
        ({"page_token": first}, admin_headers),  # an admin's listing is another listing
    ):
        response = await api.get("/jobs", params={"limit": 2, **params}, headers=who)
        assert response.status_code == 422, (params, response.text)
        assert_error_shape(response.json())
        assert "page_token" in response.json()["error"]["message"]


async def finished_async_job(api: httpx.AsyncClient, headers: dict, body: dict) -> dict:
    job_id = (await api.post("/chat/async", json=body, headers=headers)).json()["job_id"]
    for _ in range(1200):
        job = (await api.get(f"/jobs/{job_id}", headers=headers)).json()
        if job["status"] not in ("pending", "running"):
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job}")


async def test_steps_of_a_completed_chat(api: httpx.AsyncClient, user_headers: dict) -> None:
    # An async job calls its provider as a regular activity: its step has every timestamp.
    job = await finished_async_job(api, user_headers, SHORT)
    result = job["result"]
    response = await api.get(f"/jobs/{result['job_id']}/steps", headers=user_headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["job_id"] == result["job_id"] and body["status"] == "completed"
    check, generate, save = body["steps"]
    # The guard's check of the prompt runs in the workflow task, as a local activity.
    assert check["name"] == "check_prompt" and check["local"] and check["status"] == "completed"
    assert generate["name"] == "generate" and generate["status"] == "completed"
    assert generate["attempts"] == 1 and generate["error"] is None and not generate["local"]
    assert generate["scheduled_at"] <= generate["started_at"] <= generate["finished_at"]
    # The step's duration holds the provider call the activity measured.
    assert generate["duration_ms"] >= result["latency_ms"] > 0
    assert save["name"] == "save_completion" and save["local"]
    assert save["status"] == "completed" and save["attempts"] == 1


async def test_steps_of_a_job_whose_provider_failed_show_the_error(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    job_id = (await finished_async_job(api, user_headers, FAILS_AT_ONCE))["job_id"]
    body = (await api.get(f"/jobs/{job_id}/steps", headers=user_headers)).json()
    assert body["status"] == "failed"
    [check, generate] = body["steps"]
    assert check["name"] == "check_prompt" and check["status"] == "completed"
    assert generate["name"] == "generate" and generate["status"] == "failed"
    assert generate["attempts"] == 1  # a 404 from the provider is not retried
    assert "no-such-model" in generate["error"] and "does not exist" in generate["error"]
    assert generate["duration_ms"] is not None


async def test_a_sync_chat_calls_its_provider_inside_the_workflow_task(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    # The fast path: local activities, recorded in history as markers and shown as steps all the same.
    result = await completed_job(api, user_headers)
    steps = (await api.get(f"/jobs/{result['job_id']}/steps", headers=user_headers)).json()["steps"]
    assert [(s["name"], s["local"], s["status"], s["attempts"]) for s in steps] == [
        ("check_prompt", True, "completed", 1),
        ("generate", True, "completed", 1),
        ("save_completion", True, "completed", 1),
    ]
    assert all(s["finished_at"] for s in steps)


async def model_server_totals(stack: RunningStack) -> tuple[float, float, float]:
    """Generations ended, tokens generated and seconds spent generating, as the model server counts
    them: a generation is counted when it ends, whether it ran to its limit or was cut short."""
    async with httpx.AsyncClient(timeout=30) as client:
        text = (await client.get(f"{stack.settings.model_server_url}/metrics")).text

    def total(name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))

    return (
        total("model_server_generations_total"),
        total("model_server_completion_tokens_total"),
        total("model_server_generation_seconds_sum"),
    )


async def local_completion(stack: RunningStack, prompt: str, max_tokens: int) -> None:
    """A completion straight from the model server, at temperature 0."""
    model = stack.settings.model_path(stack.settings.local_chat_model).name
    messages = [{"role": "user", "content": prompt}]
    async with httpx.AsyncClient(timeout=600) as client:
        response = await client.post(
            f"{stack.settings.model_server_url}/v1/chat/completions",
            json={"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0},
        )
    assert response.status_code == 200, response.text


async def test_cancelling_a_long_chat_ends_it_and_frees_the_model(
    api: httpx.AsyncClient, user_headers: dict, stack: RunningStack
) -> None:
    # A one-token request queues behind anything an earlier test left generating.
    await local_completion(stack, "hi", 1)
    start = await model_server_totals(stack)
    await local_completion(stack, ESSAY_PROMPT, 32)
    before = await model_server_totals(stack)
    # The model's speed right now, as the model server times it: the comparisons below hold on a
    # loaded machine too.
    rate = (before[1] - start[1]) / (before[2] - start[2])
    # At temperature 0 the model writes this essay to the token limit (measured: finish_reason
    # "length"), so only a cancellation that reaches the model server stops it early.
    max_tokens = 1000
    body = {"prompt": ESSAY_PROMPT, "max_tokens": max_tokens, "temperature": 0}
    job_id = (await api.post("/chat/async", json=body, headers=user_headers)).json()["job_id"]

    async def generating() -> dict | None:
        steps = (await api.get(f"/jobs/{job_id}/steps", headers=user_headers)).json()["steps"]
        return next((s for s in steps if s["name"] == "generate" and s["status"] == "running"), None)

    step = await eventually(generating)
    running_at = time.perf_counter()
    assert step["attempts"] == 1 and step["started_at"] and step["finished_at"] is None
    assert (await api.get(f"/jobs/{job_id}", headers=user_headers)).json()["status"] == "running"
    assert job_id in ids(await list_all(api, user_headers, status="running"))
    await asyncio.sleep(max(0.0, 1 - (time.perf_counter() - running_at)))

    cancel_at = time.perf_counter()
    response = await api.post(f"/jobs/{job_id}/cancel", headers=user_headers)
    assert response.status_code == 202, response.text
    assert response.json()["job_id"] == job_id
    assert response.json()["status"] in ("running", "cancelled")
    job = await wait_for_job(api, job_id, user_headers)
    cancelled_after = time.perf_counter() - cancel_at
    assert job["status"] == "cancelled" and job["error"]["code"] == "cancelled"

    async def generation_ended() -> tuple[float, float, float] | None:
        totals = await model_server_totals(stack)
        return totals if totals[0] > before[0] else None

    after = await eventually(generation_ended, timeout_s=600)
    stopped_after = time.perf_counter() - cancel_at
    # The model server is free: a short chat is answered at once.
    assert (await api.post("/chat/", json=SHORT, headers=user_headers)).status_code == 200
    freed_after = time.perf_counter() - cancel_at

    tokens = after[1] - before[1]
    remaining = max_tokens / rate - (cancel_at - running_at)  # what the essay still needed at cancel
    timings = (
        f"cancelled after {cancelled_after:.2f} s, generation stopped after {stopped_after:.2f} s "
        f"({tokens:.0f} of {max_tokens} tokens at {rate:.0f}/s), a short chat answered after "
        f"{freed_after:.2f} s; the rest of the essay would have taken ~{remaining:.0f} s"
    )
    print(timings)
    assert tokens < max_tokens / 2, timings
    assert cancelled_after < 0.1 * remaining, timings
    assert freed_after < 0.5 * remaining, timings
    [_check, generate] = (await api.get(f"/jobs/{job_id}/steps", headers=user_headers)).json()["steps"]
    assert generate["name"] == "generate" and generate["status"] == "cancelled"


async def test_cancelling_a_closed_job_is_a_conflict(api: httpx.AsyncClient, user_headers: dict) -> None:
    job_id = await failed_job(api, user_headers)
    response = await api.post(f"/jobs/{job_id}/cancel", headers=user_headers)
    assert response.status_code == 409
    assert_error_shape(response.json())
    assert response.json()["error"]["code"] == "job_closed"
    assert response.json()["error"]["details"] == {"job_id": job_id, "status": "failed"}
    assert (await api.get(f"/jobs/{job_id}", headers=user_headers)).json()["status"] == "failed"


async def test_another_users_job_is_not_found_exactly_like_an_unknown_one(
    api: httpx.AsyncClient, admin_headers: dict, temporal: Client
) -> None:
    owner, _ = await new_user(api, admin_headers)
    stranger, _ = await new_user(api, admin_headers)
    unknown = f"chat-{uuid.uuid4().hex}"
    async with pending_job(temporal, await user_id(api, owner)) as job:
        for method, path in [
            ("GET", "/jobs/{}"),
            ("GET", "/inference/{}"),
            ("GET", "/jobs/{}/steps"),
            ("POST", "/jobs/{}/cancel"),
        ]:
            theirs = await api.request(method, path.format(job.id), headers=stranger)
            nobodys = await api.request(method, path.format(unknown), headers=stranger)
            assert theirs.status_code == nobodys.status_code == 404, (path, theirs.text)
            assert theirs.json() == nobodys.json()
            assert_error_shape(theirs.json())
            if method == "GET":  # its owner and admins still see it
                assert (await api.get(path.format(job.id), headers=owner)).status_code == 200
                assert (await api.get(path.format(job.id), headers=admin_headers)).status_code == 200
        # The stranger's cancel did nothing.
        assert (await job.describe()).status == WorkflowExecutionStatus.RUNNING
        history = await job.fetch_history()
        assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED not in {
            e.event_type for e in history.events
        }
        assert job.id not in ids(await list_all(api, stranger))


async def test_post_inference_starts_a_chat_job_that_completes(
    api: httpx.AsyncClient, user_headers: dict
) -> None:
    response = await api.post("/inference/", json=SHORT, headers=user_headers)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert job_id.startswith("chat-")
    assert response.headers["location"] == response.json()["status_url"]
    job = await wait_for_job(api, job_id, user_headers)
    assert job["status"] == "completed" and job["result"]["text"]
    # Both names read the same job.
    assert (await api.get(f"/jobs/{job_id}", headers=user_headers)).json() == job
    invalid = await api.post("/inference/", json={"prompt": ""}, headers=user_headers)
    assert invalid.status_code == 422
    assert_error_shape(invalid.json())
