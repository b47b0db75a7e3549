"""`assistant run` (what `make run` starts): all four processes come up, and none outlives it."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.settings import PROJECT_ROOT
from tests.conftest import stack_env


def children_of(pid: int) -> set[int]:
    """Every descendant of pid, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_run(tmp_path: Path) -> tuple[subprocess.Popen, str, dict[str, str]]:
    env = stack_env(tmp_path)
    env.pop("ADMIN_PASSWORD")  # as on a fresh machine with no .env: it is generated
    process = subprocess.Popen(
        [sys.executable, "-m", "assistant", "run"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group, like a shell's foreground job
    )
    output = []
    deadline = time.monotonic() + 180
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        if line.startswith("Press Ctrl-C"):
            return process, "".join(output), env
    process.kill()
    pytest.fail("assistant run did not become ready:\n" + "".join(output))


def wait_gone(pids: set[int], timeout_s: float) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = {pid for pid in pids if alive(pid)}
        if not left:
            return set()
        time.sleep(0.05)
    return {pid for pid in pids if alive(pid)}


def test_ctrl_c_stops_every_process_within_five_seconds(tmp_path: Path) -> None:
    process, output, env = start_run(tmp_path)
    children = children_of(process.pid)
    try:
        assert len(children) >= 4, output  # temporal, model server, worker, api
        api = f"http://127.0.0.1:{env['API_PORT']}"
        ui = f"http://127.0.0.1:{env['TEMPORAL_UI_PORT']}"
        for url in (f"{api}/docs", f"{api}/metrics", ui):
            assert url in output
        assert httpx.get(f"{api}/health").status_code == 200
        assert httpx.get(ui).status_code == 200  # the Temporal Web UI
        secret = tmp_path / "jwt_secret"
        assert secret.exists() and stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert (tmp_path / "admin_password").exists()
        # Ctrl-C in a terminal sends SIGINT to the whole foreground process group.
        os.killpg(process.pid, signal.SIGINT)
        started = time.monotonic()
        left = wait_gone({process.pid, *children}, timeout_s=5)
        assert not left, f"still running {time.monotonic() - started:.1f} s after SIGINT: {left}"
        assert process.wait(timeout=1) == 0
    finally:
        for pid in {process.pid, *children}:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    process, _, _ = start_run(tmp_path)
    children = children_of(process.pid)
    try:
        assert len(children) >= 4
        process.kill()  # no chance to clean up: the kernel must take the children down
        process.wait()
        left = wait_gone(children, timeout_s=5)
        assert not left, f"children outlived their parent: {left}"
    finally:
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
