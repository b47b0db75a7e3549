"""Worker processes: which task queue hosts which workflows and activities.

Start more of them (`assistant worker`) to serve more load; Temporal spreads the work.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.document_records import DocumentRecords
from activities.documents import DocumentActivities
from activities.generation import GenerationActivities
from activities.guard import GuardActivities
from activities.records import RecordActivities
from activities.retrieval import RetrievalActivities
from core.db import create_engine, create_sessionmaker
from core.guard import get_guard
from core.settings import Settings
from core.vector_store import VectorStore
from workflows.chat import ChatWorkflow
from workflows.ingestion import DeleteDocumentWorkflow, IngestionWorkflow
from workflows.rag import RagChatWorkflow

log = logging.getLogger(__name__)

WORKFLOWS = [ChatWorkflow, IngestionWorkflow, DeleteDocumentWorkflow, RagChatWorkflow]


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )


def metrics_runtime(host: str, port: int) -> Runtime | None:
    """The SDK serves its own metrics (task latencies, polls, activity results) and ours on one port."""
    if not port:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"{host}:{port}")))


def build_worker(client: Client, settings: Settings, *, sandboxed: bool = True) -> Worker:
    """`sandboxed=False` is for the API's own worker of the chat fast path: the sandbox costs about
    7 ms per workflow here (a third of a sync chat's time). Worker processes keep it, and the replay
    tests run every recorded history in it, so a non-deterministic call still fails CI."""
    sessions = create_sessionmaker(create_engine(settings.database_url))
    generation = GenerationActivities(settings, sessions)
    guard = GuardActivities(sessions)
    get_guard()  # the model file is read now, not by the first job's check
    records = RecordActivities(sessions)
    documents = DocumentActivities(settings)
    document_records = DocumentRecords(settings, sessions)
    retrieval = RetrievalActivities(settings)
    runner = {} if sandboxed else {"workflow_runner": UnsandboxedWorkflowRunner()}
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=WORKFLOWS,
        activities=[
            generation.generate,
            guard.check_prompt,
            guard.screen_sources,
            records.save_completion,
            documents.parse_document,
            documents.chunk_document,
            document_records.register_document,
            document_records.finish_document,
            document_records.forget_document,
            retrieval.embed_chunks,
        ],
        **runner,  # type: ignore[arg-type]
        # Heartbeats are how a cancel reaches a running provider call; the SDK's default throttle
        # (0.8 x the heartbeat timeout) made that take 8 s.
        max_heartbeat_throttle_interval=timedelta(seconds=1),
    )


def build_vector_worker(client: Client, settings: Settings, store: VectorStore) -> Worker:
    """The activities that touch the vector store, for the one process that holds it."""
    retrieval = RetrievalActivities(settings, store)
    return Worker(
        client,
        task_queue=settings.vector_task_queue,
        activities=[retrieval.upsert_chunks, retrieval.delete_document_vectors, retrieval.search_vectors],
    )


async def run_worker(settings: Settings) -> None:
    client = await connect(settings, metrics_runtime(settings.metrics_host, settings.worker_metrics_port))
    worker = build_worker(client, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling task queue %s on %s", settings.task_queue, settings.temporal_address)
    async with worker:
        await stop.wait()
        log.info("worker stopping")
