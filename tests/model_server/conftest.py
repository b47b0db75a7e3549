"""The model server's tests talk to the real server that the session `stack` started, through the
official OpenAI SDK where a client would, and through plain HTTP where the SDK hides what is checked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import RunningStack

CHAT_MODEL = "SmolLM2-135M-Instruct"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"

# At temperature 0 the model writes on past 1000 tokens here without an end-of-text token, so a reply
# asked for with this prompt lasts as long as max_tokens says.
ESSAY = [
    {
        "role": "user",
        "content": "Write a long, detailed essay about the history of the city of Rome, "
        "from its founding to the modern day.",
    }
]


@pytest.fixture(scope="session")
def model_server_url(stack: RunningStack) -> str:
    return stack.settings.model_server_url


@pytest.fixture(scope="session")
def client(model_server_url: str) -> Iterator[openai.OpenAI]:
    # No retries: a retried request would hide a failure and distort the timing tests.
    with openai.OpenAI(base_url=f"{model_server_url}/v1", api_key="x", max_retries=0, timeout=300) as c:
        yield c


@pytest.fixture(scope="session")
def model_server_pid(stack: RunningStack) -> int:
    part = next(p for p in stack.stack.parts if p.name == "model-server")
    assert part.process is not None
    return part.process.pid


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far; Linux only, as the stack is."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
