"""The `assistant` command: run the whole embedded stack, or any one of its processes."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from core.logging import configure_logging
from core.settings import PROJECT_ROOT, Settings, get_settings


def _settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level, settings.all_secret_values())
    return settings


def cmd_run(_: argparse.Namespace) -> int:
    from assistant.stack import run_stack

    cmd_db_upgrade(argparse.Namespace(revision="head"))
    return run_stack(_settings())


def cmd_api(_: argparse.Namespace) -> int:
    import uvicorn

    from api.main import create_app

    settings = _settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None)
    return 0


def cmd_worker(_: argparse.Namespace) -> int:
    from workers.main import run_worker

    asyncio.run(run_worker(_settings()))
    return 0


def cmd_model_server(_: argparse.Namespace) -> int:
    # The models are on disk; nothing may be fetched from a hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import uvicorn
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    from model_server.app import create_app

    settings = _settings()
    uvicorn.run(
        create_app(settings),
        host=settings.model_server_host,
        port=settings.model_server_port,
        log_config=None,
    )
    return 0


def cmd_temporal(_: argparse.Namespace) -> int:
    from assistant.stack import temporal_dev_server_command

    settings = _settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    command = temporal_dev_server_command(settings, settings.var_dir / "temporal.db")
    os.execv(command[0], command)


def cmd_prepare_models(_: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from model_server.prepare import prepare_models

    prepare_models(_settings().models_dir)
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from alembic import command
    from alembic.config import Config

    settings = _settings()
    config = Config()
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    # ConfigParser interpolation would treat a % in a database password as syntax.
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    command.upgrade(config, args.revision)
    return 0


def cmd_create_admin(args: argparse.Namespace) -> int:
    from core.db import create_engine, create_sessionmaker
    from core.tables import Role
    from core.users import ensure_user

    settings = _settings()
    password = os.environ.get("ADMIN_PASSWORD") or getpass.getpass(f"password for {args.username}: ")
    if len(password) < 8:
        print("error: the password needs at least 8 characters", file=sys.stderr)
        return 2

    async def create() -> bool:
        engine = create_engine(settings.database_url)
        try:
            return await ensure_user(create_sessionmaker(engine), args.username, password, Role.admin)
        finally:
            await engine.dispose()

    if asyncio.run(create()):
        print(f"created admin {args.username!r}")
        return 0
    print(f"error: a user named {args.username!r} exists already", file=sys.stderr)
    return 1


def cmd_reindex(args: argparse.Namespace) -> int:
    from assistant.reindex import reindex
    from core.embeddings import EmbedderNotAvailable

    settings = _settings()
    try:
        jobs = asyncio.run(reindex(settings, args.to, args.source, args.document))
    except EmbedderNotAvailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for job in jobs:
        print(job)
    print(f"{len(jobs)} documents are being re-indexed with {args.to}; follow them at GET /jobs/{{id}}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistant", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start Temporal, the model server, a worker and the API").set_defaults(
        handler=cmd_run
    )
    commands.add_parser("api", help="serve the REST API").set_defaults(handler=cmd_api)
    commands.add_parser("worker", help="run a worker (start several to scale out)").set_defaults(
        handler=cmd_worker
    )
    commands.add_parser("model-server", help="serve the local models").set_defaults(handler=cmd_model_server)
    commands.add_parser("temporal", help="run the Temporal dev server alone").set_defaults(
        handler=cmd_temporal
    )
    commands.add_parser("prepare-models", help="put the offline default models into models/").set_defaults(
        handler=cmd_prepare_models
    )
    db = commands.add_parser("db", help="database migrations").add_subparsers(
        dest="db_command", required=True
    )
    upgrade = db.add_parser("upgrade", help="apply migrations")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(handler=cmd_db_upgrade)
    admin = commands.add_parser(
        "create-admin", help="create an admin user (password from ADMIN_PASSWORD or a prompt)"
    )
    admin.add_argument("username")
    admin.set_defaults(handler=cmd_create_admin)
    reindex = commands.add_parser("reindex", help="move stored documents to another embedder")
    reindex.add_argument("--to", required=True, help="provider/model, e.g. local/multilingual-e5-small")
    reindex.add_argument("--from", dest="source", help="only documents of this embedder")
    reindex.add_argument("--document", action="append", help="only this document (repeatable)")
    reindex.set_defaults(handler=cmd_reindex)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)
