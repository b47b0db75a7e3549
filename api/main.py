"""The API app: auth, chat and job routes in front of Temporal. Handlers never call a model."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from api import streams
from api.errors import install_error_handlers
from api.rate_limits import RateLimitMiddleware, RateLimits
from api.routes import (
    audit,
    auth,
    chat,
    completions,
    documents,
    guard,
    health,
    jobs,
    keys,
    openai_compat,
    providers,
    rag,
    search,
    security,
    users,
)
from core.db import create_engine, create_sessionmaker
from core.guard import Guard, load_guard
from core.settings import Settings, get_settings
from core.tables import Role
from core.temporal_setup import ensure_search_attributes
from core.token_counts import SHIPPED_ENCODINGS, encoding_for
from core.users import ensure_user
from core.vector_store import VectorStore
from workers.main import build_vector_worker, build_worker, metrics_runtime

log = logging.getLogger(__name__)


def warm_up(settings: Settings) -> Guard:
    for encoding in SHIPPED_ENCODINGS:
        encoding_for(encoding)
    return load_guard(settings)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        app.state.settings = settings
        app.state.sessions = create_sessionmaker(engine)
        app.state.jwt_secret = settings.secret_value("jwt_secret")
        app.state.streams = streams.StreamHub()
        # Read before the first request rather than during it: the routes' guard model and tiktoken's
        # encodings (token budgets), about 2 s together. This process's worker reads its own guard when
        # it is built (workers/main.py).
        app.state.guard = await asyncio.to_thread(warm_up, settings)
        # This process hosts workers (the chat fast path, and the vector store's activities), which
        # need a connected client: the API starts once Temporal answers.
        app.state.temporal = await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            data_converter=pydantic_data_converter,
            runtime=metrics_runtime(settings.metrics_host, settings.api_worker_metrics_port),
        )
        if await ensure_user(
            app.state.sessions, settings.admin_username, settings.secret_value("admin_password"), Role.admin
        ):
            log.info("created the first admin %r", settings.admin_username)
        await ensure_search_attributes(app.state.temporal, settings.temporal_namespace)
        # The chat fast path: a worker in this process runs the jobs this process starts eagerly,
        # sparing the two hand-overs through the server; other workers still serve everything else.
        workers = (
            [build_worker(app.state.temporal, settings, sandboxed=False)] if settings.api_hosts_worker else []
        )
        # The vector store admits one opener (Qdrant's in-process engine): this process. Searches read
        # it directly; ingestion writes it through the activities of the vector task queue, served here.
        app.state.vectors = VectorStore.open(settings)
        workers.append(build_vector_worker(app.state.temporal, settings, app.state.vectors))
        running = [asyncio.create_task(worker.run()) for worker in workers]
        yield
        await asyncio.gather(*(worker.shutdown() for worker in workers))
        await asyncio.gather(*running)
        app.state.vectors.close()
        await engine.dispose()

    app = FastAPI(
        title="ai-assistant",
        description="One REST API in front of LLM providers and a local model server; every request is a "
        "durable Temporal workflow.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # Every route but probes, docs and workers' stream deliveries: see api/rate_limits.py.
    app.add_middleware(RateLimitMiddleware, limits=RateLimits(settings))
    for module in (
        auth,
        keys,
        audit,
        security,
        users,
        chat,
        completions,
        documents,
        guard,
        rag,
        search,
        jobs,
        openai_compat,
        providers,
        health,
        streams,
    ):
        app.include_router(module.router)
    Instrumentator(excluded_handlers=["/metrics"]).instrument(app).expose(app, include_in_schema=False)
    return app
