"""Starts a fake provider as a child process on a free loopback port, and talks to its controls."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from assistant.stack import Part, Stack, http_ok
from tests.conftest import free_port


def start_fake(log_dir: Path, name: str = "openai_server", *args: str) -> tuple[Stack, str]:
    """The fake `tests.fakes.<name>` as a child process with the stack's lifecycle (dies with us,
    SIGTERM then SIGKILL on stop); returns it and its base URL. `args` go to its command line."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", f"tests.fakes.{name}", "--port", str(port), *args]
    part = Part(f"fake-{name.removesuffix('_server')}", command, http_ok(f"{url}/health"), start_timeout_s=30)
    fake = Stack([part], log_dir=log_dir)
    try:
        fake.start()
    except BaseException:
        fake.stop()
        raise
    return fake, url


@dataclass(frozen=True)
class FakeServer:
    """A running fake's address and its controls (see tests/fakes/control.py)."""

    url: str

    async def fail_next(self, *faults: str) -> None:
        """Queues faults: each of the next requests suffers one, in order; later ones succeed."""
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{self.url}/_faults", json={"faults": list(faults)})
            response.raise_for_status()

    async def requests(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.url}/_requests")
            response.raise_for_status()
            return response.json()

    async def reset(self) -> None:
        async with httpx.AsyncClient() as client:
            (await client.post(f"{self.url}/_reset")).raise_for_status()
