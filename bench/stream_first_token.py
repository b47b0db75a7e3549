"""Time to first token: POST /chat/stream through the stack against a direct streamed call of the
same provider, measured side by side in one run.

Two providers: a fake OpenAI server whose first token takes 300 ms (a remote provider's think time),
and the local model server on the small offline model. The difference between the paths is what the
durable job adds before the first token: the API, the workflow start, the activity hand-over and the
delta's trip from the worker back to the API process. Run it as `python -m bench.stream_first_token`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import openai

from bench.chat_overhead import percentile
from tests.conftest import ADMIN_PASSWORD, RunningStack, stack_env, start_stack
from tests.fakes.process import start_fake

FIRST_TOKEN_MS = 300
PROMPT = "Write one sentence about the sea."
MAX_TOKENS = 8
WARMUP = 3


async def first_sse_delta(api: httpx.AsyncClient, body: dict) -> float:
    """Milliseconds from sending POST /chat/stream to its first `delta` event; reads the stream to
    its end so the job is done before the next call."""
    started = time.perf_counter()
    first: float | None = None
    event = ""
    async with api.stream("POST", "/chat/stream", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"POST /chat/stream answered {response.status_code}: {await response.aread()}")
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "delta" and first is None:
                if json.loads(line[5:])["text"]:
                    first = time.perf_counter()
    if first is None:
        raise RuntimeError("the stream ended without a delta")
    return (first - started) * 1000


async def first_sdk_chunk(client: openai.AsyncOpenAI, model: str) -> float:
    started = time.perf_counter()
    first: float | None = None
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
    )
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
    if first is None:
        raise RuntimeError("the direct stream ended without content")
    return (first - started) * 1000


async def measure(running: RunningStack, fake_url: str, requests: int) -> dict[str, dict[str, list[float]]]:
    settings = running.settings
    local_model = settings.model_path(settings.local_chat_model).name
    fake_direct = openai.AsyncOpenAI(base_url=f"{fake_url}/v1", api_key="sk-bench", max_retries=0)
    local_direct = openai.AsyncOpenAI(
        base_url=f"{settings.model_server_url}/v1",
        api_key=settings.model_server_api_key.get_secret_value(),
        max_retries=0,
    )
    async with fake_direct, local_direct, httpx.AsyncClient(base_url=running.api_url, timeout=300) as api:
        response = await api.post("/auth/login", data={"username": "admin", "password": ADMIN_PASSWORD})
        response.raise_for_status()
        api.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        body = {"prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0}
        cases: dict[str, dict[str, Callable[[], Awaitable[float]]]] = {
            f"fake, first token {FIRST_TOKEN_MS} ms": {
                "direct": lambda: first_sdk_chunk(fake_direct, "gpt-4o-mini"),
                "stack": lambda: first_sse_delta(api, {**body, "provider": "openai/gpt-4o-mini"}),
            },
            "local model": {
                "direct": lambda: first_sdk_chunk(local_direct, local_model),
                "stack": lambda: first_sse_delta(api, {**body, "provider": "local"}),
            },
        }
        samples: dict[str, dict[str, list[float]]] = {}
        for case, paths in cases.items():
            for _ in range(WARMUP):
                for call in paths.values():
                    await call()
            samples[case] = {name: [] for name in paths}
            order = list(paths)
            for _ in range(requests):
                for name in order:  # alternating order spreads drift over both paths
                    samples[case][name].append(await paths[name]())
                order.reverse()
    return samples


def report(samples: dict[str, dict[str, list[float]]], requests: int, load: tuple[float, float]) -> None:
    print("time to first token: POST /chat/stream through the stack vs a direct streamed call")
    print(f"cpus {os.cpu_count()}  requests {requests} per path  warm-up {WARMUP}")
    print(f"  load average (1 min) {load[0]:.2f} at start, {load[1]:.2f} after measuring\n")
    print(f"{'provider':<28}{'path':<10}{'p50 ms':>10}{'p95 ms':>10}")
    for case, paths in samples.items():
        for name, values in paths.items():
            print(f"{case:<28}{name:<10}{percentile(values, 50):>10.1f}{percentile(values, 95):>10.1f}")
        overhead = {p: percentile(paths["stack"], p) - percentile(paths["direct"], p) for p in (50, 95)}
        print(f"{'':<28}{'overhead':<10}{overhead[50]:>10.1f}{overhead[95]:>10.1f}   (goal: under 50 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description="Time to first streamed token, stack vs direct.")
    parser.add_argument("--requests", type=int, default=30, help="measured requests per path")
    args = parser.parse_args()
    if args.requests < 2:
        parser.error("--requests must be at least 2")

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        var_dir = Path(tmp)
        logs = var_dir / "logs"
        logs.mkdir()
        fake, fake_url = start_fake(logs, "openai_server", "--first-token-ms", str(FIRST_TOKEN_MS))
        running: RunningStack | None = None
        try:
            print("starting the stack ...", file=sys.stderr, flush=True)
            env = stack_env(var_dir, OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=f"{fake_url}/v1")
            running = start_stack(var_dir, env)
            samples = asyncio.run(measure(running, fake_url, args.requests))
            load_after = os.getloadavg()[0]
        finally:
            if running is not None:
                running.stack.stop()
            fake.stop()
    report(samples, args.requests, (load_before, load_after))


if __name__ == "__main__":
    main()
