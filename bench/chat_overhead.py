"""What the stack adds to one chat answer: POST /chat/ through API, Temporal and a worker, against
a direct call of the same provider, measured side by side in one run.

The provider is a fake OpenAI-compatible server on loopback that answers at once, so the difference
between the two paths is the orchestration itself. Run it as `python -m bench.chat_overhead`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import httpx
import openai
from temporalio import activity, workflow
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from tests.conftest import ADMIN_PASSWORD, RunningStack, stack_env, start_stack
from tests.fakes.process import start_fake
from workers.main import connect

PROMPT = "Say hello."
MAX_TOKENS = 16
WARMUP = 10
CONCURRENT = 20
THROUGHPUT_REQUESTS = 200
PROVIDER_IN_WORKER = "stack: provider call"


def percentile(samples: list[float], p: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[p - 1]


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


@activity.defn
async def noop() -> None:
    return None


@workflow.defn
class MinimalWorkflow:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_local_activity(noop, start_to_close_timeout=timedelta(seconds=10))


async def measure(
    running: RunningStack, fake_url: str, requests: int
) -> tuple[dict[str, list[float]], float]:
    model = running.settings.model_path(running.settings.local_chat_model).name
    direct_client = openai.AsyncOpenAI(
        base_url=f"{fake_url}/v1",
        api_key=running.settings.model_server_api_key.get_secret_value(),
        max_retries=0,
    )
    provider_ms: list[float] = []

    async with direct_client, httpx.AsyncClient(base_url=running.api_url, timeout=120) as api:
        response = await api.post("/auth/login", data={"username": "admin", "password": ADMIN_PASSWORD})
        response.raise_for_status()
        api.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

        # The same arguments the local provider sends, so both paths ask the fake the same thing.
        async def direct() -> None:
            await direct_client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": PROMPT}],
                temperature=0.7,
                top_p=1.0,
                max_tokens=MAX_TOKENS,
            )

        async def stack() -> None:
            response = await api.post("/chat/", json={"prompt": PROMPT, "max_tokens": MAX_TOKENS})
            # A 202 would mean the job outlived wait_s: then the time measured is not an answer's.
            if response.status_code != 200:
                raise RuntimeError(f"POST /chat/ answered {response.status_code}: {response.text}")
            provider_ms.append(response.json()["latency_ms"])

        # Temporal's own floor on the same server: an eagerly started workflow running one local
        # activity, on a worker in this process. The stack cannot be faster than this plus the call.
        client = await connect(running.settings)
        queue = f"bench-minimum-{uuid.uuid4().hex}"
        worker = Worker(
            client,
            task_queue=queue,
            workflows=[MinimalWorkflow],
            activities=[noop],
            workflow_runner=UnsandboxedWorkflowRunner(),
        )

        async def minimum() -> None:
            await client.execute_workflow(
                MinimalWorkflow.run,
                id=f"bench-{uuid.uuid4().hex}",
                task_queue=queue,
                request_eager_start=True,
            )

        paths = {"direct": direct, "temporal minimum": minimum, "stack": stack}
        async with worker:
            for _ in range(WARMUP):
                for call in paths.values():
                    await call()
            provider_ms.clear()
            samples: dict[str, list[float]] = {name: [] for name in paths}
            order = list(paths)
            for _ in range(requests):
                # Flipping the order each round spreads drift (GC, CPU frequency, neighbours) over all.
                for name in order:
                    samples[name].append(await timed(paths[name]))
                order.reverse()
        samples[PROVIDER_IN_WORKER] = provider_ms

        # Throughput: CONCURRENT clients each sending POST /chat/ in a loop.
        started = time.perf_counter()
        await asyncio.gather(
            *(_client_loop(stack, THROUGHPUT_REQUESTS // CONCURRENT) for _ in range(CONCURRENT))
        )
        throughput = THROUGHPUT_REQUESTS / (time.perf_counter() - started)
    return samples, throughput


async def _client_loop(call: Callable[[], Awaitable[None]], count: int) -> None:
    for _ in range(count):
        await call()


def report(
    samples: dict[str, list[float]], throughput: float, requests: int, load: tuple[float, float]
) -> None:
    print("chat overhead: POST /chat/ through the stack vs a direct provider call")
    print(f"cpus {os.cpu_count()}  python {sys.version.split()[0]}  requests {requests} per path")
    # Other work on the machine skews both paths; the load average says whether a run was quiet.
    # The run itself adds about one (one request in flight at a time).
    print(f"  load average (1 min) {load[0]:.2f} at start, {load[1]:.2f} after measuring")
    print(f"  warm-up {WARMUP} per path; sequential, order alternating each round\n")
    print(f"{'path':<26}{'p50 ms':>10}{'p95 ms':>10}")
    for name, values in samples.items():
        print(f"{name:<26}{percentile(values, 50):>10.2f}{percentile(values, 95):>10.2f}")
    print(f"  ({PROVIDER_IN_WORKER}: the latency_ms the worker reports for its own call of the fake)")
    direct = {p: percentile(samples["direct"], p) for p in (50, 95)}
    stack = {p: percentile(samples["stack"], p) for p in (50, 95)}
    print()
    print(f"{'overhead (stack - direct)':<26}{stack[50] - direct[50]:>10.2f}{stack[95] - direct[95]:>10.2f}")
    print(f"{'ratio (stack / direct)':<26}{stack[50] / direct[50]:>9.1f}x{stack[95] / direct[95]:>9.1f}x")
    floor = {p: percentile(samples["temporal minimum"], p) + direct[p] for p in (50, 95)}
    print(f"{'stack / (minimum + direct)':<26}{stack[50] / floor[50]:>9.2f}x{stack[95] / floor[95]:>9.2f}x")
    print(f"\nthroughput: {throughput:.1f} chat jobs/s with {CONCURRENT} concurrent clients "
          f"({THROUGHPUT_REQUESTS} requests)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description="p50/p95 of POST /chat/ against a direct provider call.")
    parser.add_argument("--requests", type=int, default=100, help="measured requests per path")
    args = parser.parse_args()
    if args.requests < 2:
        parser.error("--requests must be at least 2")

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        var_dir = Path(tmp)
        logs = var_dir / "logs"
        logs.mkdir()
        fake, fake_url = start_fake(logs)
        running: RunningStack | None = None
        try:
            print("starting the stack ...", file=sys.stderr, flush=True)
            env = stack_env(var_dir, MODEL_SERVER_URL=fake_url)
            running = start_stack(var_dir, env, with_model_server=False)
            samples, throughput = asyncio.run(measure(running, fake_url, args.requests))
            load_after = os.getloadavg()[0]
        except BaseException:
            # The logs live in the temporary directory, which is gone once this block ends.
            for log in sorted(logs.glob("*.log")):
                print(f"--- {log.name} (last lines)", file=sys.stderr)
                print("\n".join(log.read_text(errors="replace").splitlines()[-20:]), file=sys.stderr)
            raise
        finally:
            if running is not None:
                running.stack.stop()
            fake.stop()
    report(samples, throughput, args.requests, (load_before, load_after))


if __name__ == "__main__":
    main()
