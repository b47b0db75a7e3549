"""The embedded stack: Temporal dev server, model server, worker and API as child processes.

`assistant run` starts them in order, waits until each is healthy, prints where everything is, and
stops them all on Ctrl-C (or SIGTERM). Children never outlive it: each one is told by the kernel to
die with its parent, and on shutdown they get SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from core.settings import Settings

_PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 3.0


def _die_with_parent() -> None:
    # Linux only: the kernel sends SIGKILL to this child when the process that started it dies.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def venv_binary(name: str) -> str:
    """A console script installed beside this interpreter (temporal, bao, ...)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def temporal_port(settings: Settings) -> int:
    return int(settings.temporal_address.rsplit(":", 1)[1])


def temporal_dev_server_command(settings: Settings, db_file: Path | None) -> list[str]:
    from core.jobs import SEARCH_ATTRIBUTES

    host = settings.temporal_address.rsplit(":", 1)[0]
    command = [
        venv_binary("temporal"), "server", "start-dev",
        "--ip", host,
        "--port", str(temporal_port(settings)),
        "--ui-port", str(settings.temporal_ui_port),
        "--namespace", settings.temporal_namespace,
        "--log-level", "warn",
    ]  # fmt: skip
    if db_file is not None:
        # WAL with synchronous=normal measured twice as fast as the defaults for workflow starts.
        command += ["--db-filename", str(db_file)]
        command += ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
    for name, kind in SEARCH_ATTRIBUTES.items():
        command += ["--search-attribute", f"{name}={kind}"]
    return command


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return check


@dataclass
class Part:
    name: str
    command: list[str]
    ready: Callable[[], bool]
    start_timeout_s: float = 120.0
    process: subprocess.Popen | None = field(default=None, repr=False)


def stack_parts(settings: Settings) -> list[Part]:
    me = [sys.executable, "-m", "assistant"]
    temporal_host = settings.temporal_address.rsplit(":", 1)[0]
    api = f"http://{settings.api_host}:{settings.api_port}"
    return [
        Part(
            "temporal",
            temporal_dev_server_command(settings, settings.var_dir / "temporal.db"),
            lambda: _port_open(temporal_host, temporal_port(settings)),
        ),
        Part("model-server", [*me, "model-server"], http_ok(f"{settings.model_server_url}/health")),
        Part("worker", [*me, "worker"], http_ok(f"http://127.0.0.1:{settings.worker_metrics_port}/metrics")),
        Part("api", [*me, "api"], http_ok(f"{api}/health")),
    ]


class Stack:
    def __init__(
        self, parts: list[Part], env: dict[str, str] | None = None, log_dir: Path | None = None
    ) -> None:
        self.parts = parts
        self.env = env
        self.log_dir = log_dir  # None: children write to this process's terminal

    def start(self) -> None:
        for part in self.parts:
            self.start_one(part)

    def start_one(self, part: Part) -> None:
        output = None
        if self.log_dir is not None:
            output = (self.log_dir / f"{part.name}.log").open("ab")
        part.process = subprocess.Popen(
            part.command, env=self.env, stdout=output, stderr=subprocess.STDOUT if output else None,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        if output is not None:
            output.close()  # the child holds its own copy
        self._wait_ready(part)

    def _wait_ready(self, part: Part) -> None:
        deadline = time.monotonic() + part.start_timeout_s
        while time.monotonic() < deadline:
            if part.process is not None and part.process.poll() is not None:
                raise RuntimeError(f"{part.name} exited with code {part.process.returncode} while starting")
            if part.ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{part.name} was not ready within {part.start_timeout_s:.0f} s")

    def exited(self) -> Part | None:
        return next((p for p in self.parts if p.process is not None and p.process.poll() is not None), None)

    def stop(self) -> None:
        """SIGTERM to all, newest first; SIGKILL to whatever still runs after the grace period."""
        running = [
            p.process for p in reversed(self.parts) if p.process is not None and p.process.poll() is None
        ]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_stack(settings: Settings) -> int:
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(stack_parts(settings))
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Ctrl-C reaches the children too (same process group); they stop themselves, and we make sure.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        for part in stack.parts:
            if stopping:
                return 130
            print(f"starting {part.name} ...", flush=True)
            stack.start_one(part)
        _print_urls(settings)
        while not stopping:
            crashed = stack.exited()
            if crashed is not None:
                print(f"{crashed.name} exited with code {crashed.process.returncode}; stopping", flush=True)  # type: ignore[union-attr]
                return 1
            time.sleep(0.2)
        print("stopping ...", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop()


def _print_urls(settings: Settings) -> None:
    api = f"http://{settings.api_host}:{settings.api_port}"
    temporal_host = settings.temporal_address.rsplit(":", 1)[0]
    admin_file = settings.var_dir / "admin_password"
    password_hint = (
        f"the password is in {admin_file}"
        if settings.admin_password is None
        else "the password is ADMIN_PASSWORD"
    )
    print(
        "\nai-assistant is ready\n"
        f"  API docs        {api}/docs\n"
        f"  API health      {api}/health\n"
        f"  Temporal UI     http://{temporal_host}:{settings.temporal_ui_port}\n"
        f"  Temporal        {settings.temporal_address} (namespace {settings.temporal_namespace})\n"
        f"  Model server    {settings.model_server_url}/v1\n"
        f"  Metrics         {api}/metrics  http://127.0.0.1:{settings.worker_metrics_port}/metrics"
        f"  http://127.0.0.1:{settings.api_worker_metrics_port}/metrics"
        f"  {settings.model_server_url}/metrics\n"
        f"  Admin           {settings.admin_username} ({password_hint})\n"
        "Press Ctrl-C to stop.\n",
        flush=True,
    )
