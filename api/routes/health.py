"""GET /health: 200 only when every part the API depends on is ready, else 503 naming what is not."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

router = APIRouter(tags=["health"])
_CHECK_TIMEOUT_S = 3.0


async def _database(request: Request) -> None:
    async with request.app.state.sessions() as session:
        await session.execute(text("SELECT 1"))


async def _temporal(request: Request) -> None:
    await request.app.state.temporal.service_client.check_health()


async def _worker(request: Request) -> None:
    settings = request.app.state.settings
    client = request.app.state.temporal
    for queue_type in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=settings.temporal_namespace,
                task_queue=TaskQueue(name=settings.task_queue),
                task_queue_type=queue_type,
            )
        )
        if not response.pollers:
            raise RuntimeError(f"no worker polls task queue {settings.task_queue!r}")


async def _model_server(request: Request) -> None:
    async with httpx.AsyncClient(timeout=_CHECK_TIMEOUT_S) as client:
        response = await client.get(f"{request.app.state.settings.model_server_url}/health")
        response.raise_for_status()


CHECKS = {"database": _database, "temporal": _temporal, "worker": _worker, "model_server": _model_server}


async def _run(check, request: Request) -> str:  # type: ignore[no-untyped-def]
    try:
        await asyncio.wait_for(check(request), _CHECK_TIMEOUT_S)
    except Exception as exc:
        return f"unavailable: {exc or type(exc).__name__}"
    return "ok"


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    results = await asyncio.gather(*(_run(check, request) for check in CHECKS.values()))
    parts = dict(zip(CHECKS, results, strict=True))
    ready = all(r == "ok" for r in parts.values())
    return JSONResponse({"status": "ok" if ready else "unavailable", "parts": parts}, 200 if ready else 503)
