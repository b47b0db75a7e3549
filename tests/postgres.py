"""A throwaway PostgreSQL server for tests: Debian's binaries, a temporary cluster, a free loopback port."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import free_port, require

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"


def _as_server_user(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; any other user runs them as itself.
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", PG_USER, "--", *command]


@contextmanager
def running_postgres() -> Iterator[str]:
    """Starts a cluster with trust auth on 127.0.0.1; yields its asyncpg URL; removes it afterwards."""
    require((PG_BIN / "pg_ctl").exists(), f"PostgreSQL server binaries not found in {PG_BIN}")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            require(False, f"running as root needs a {PG_USER!r} user to run the PostgreSQL server")
        require(shutil.which("runuser") is not None, "running as root needs runuser")

    # Not under pytest's tmp_path: that lives in a root-only directory the server user cannot enter.
    base = Path(tempfile.mkdtemp(prefix="pg-test-"))
    if os.geteuid() == 0:
        shutil.chown(base, PG_USER, PG_USER)
    data, log = base / "data", base / "server.log"
    port = free_port()

    def run(*args: str) -> None:
        result = subprocess.run(_as_server_user(list(args)), capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}{server_log}")

    started = False
    try:
        run(str(PG_BIN / "initdb"), "-D", str(data), "-U", PG_USER, "-A", "trust", "--no-sync", "-E", "UTF8")
        # Durability settings are off: the cluster is thrown away, and fsync dominates test time.
        options = (
            f"-p {port} -h 127.0.0.1 -k {base} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=50"
        )
        run(str(PG_BIN / "pg_ctl"), "start", "-D", str(data), "-l", str(log), "-w", "-t", "30", "-o", options)
        started = True
        yield f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{port}/postgres"
    finally:
        if started:
            run(str(PG_BIN / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w")
        shutil.rmtree(base, ignore_errors=True)
