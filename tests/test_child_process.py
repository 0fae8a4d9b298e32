"""The child process group under every engine and Ray node (gpufleet/child_process.py), with real processes: its
log, the SIGTERM-then-SIGKILL stop of the whole group, and the group kill after the leader already exited that
Ray needs (its services outlive `ray start`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpufleet.child_process import _MAX_LOG_BYTES, ChildProcess
from gpufleet.cluster.ray_process import RayProcess
from gpufleet.engine_supervisor.process import EngineProcess
from gpufleet.engines.base import LaunchSpec

# A leader that starts a member of its group and prints the member's pid; the member's output goes elsewhere so
# the log pipe closes when the leader exits.
ORPHAN = "sleep 300 </dev/null >/dev/null 2>&1 & echo $!"


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie nobody reaped yet: in a container pid 1 may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def _gone(pid: int) -> bool:
    # SIGKILL is delivered asynchronously: give the kernel a moment, without making the test about time.
    for _ in range(200):
        if not _alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def _member_pid(process: ChildProcess) -> int:
    for _ in range(200):
        if process.log_tail(1):
            return int(process.log_tail(1))
        await asyncio.sleep(0.05)
    raise AssertionError(f"the leader printed no member pid; exit code {process.returncode}")


@pytest.fixture
def members() -> Iterator[list[int]]:
    """Pids a test started; whatever a failing test left running is killed at teardown."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _ray(argv: list[str], log: Path) -> ChildProcess:
    return RayProcess(argv, {}, log)


def _engine_like(argv: list[str], log: Path) -> ChildProcess:
    return ChildProcess(argv, {}, log)


@pytest.mark.parametrize(
    ("make", "member_survives"),
    [(_ray, False), (_engine_like, True)],
    ids=["ray-kills-the-group", "default-leaves-the-group"],
)
async def test_stop_after_the_leader_exited_kills_its_group_only_when_asked(
    tmp_path: Path, members: list[int], make: Callable[[list[str], Path], ChildProcess], member_survives: bool
) -> None:
    process = make(["sh", "-c", f"{ORPHAN}; exit 0"], tmp_path / "child.log")
    await process.spawn()
    assert await process.wait() == 0
    member = int(process.log_tail(1))
    members.append(member)
    assert _alive(member) and os.getpgid(member) == process.pid  # left behind in the leader's group
    assert await process.stop(grace_s=5) == 0
    if member_survives:
        assert _alive(member)
    else:
        assert await _gone(member)


async def test_a_group_that_ignores_sigterm_is_sigkilled_after_the_grace(tmp_path: Path, members: list[int]) -> None:
    # `trap "" TERM` makes the shell and the member it starts ignore SIGTERM (vLLM's engine cores do much the same).
    process = ChildProcess(["sh", "-c", f'trap "" TERM; {ORPHAN}; wait'], {}, tmp_path / "child.log")
    await process.spawn()
    member = await _member_pid(process)
    members.append(member)
    assert await process.stop(grace_s=0.2) == -signal.SIGKILL
    assert not process.running and await _gone(member)


async def test_output_goes_to_the_log_file_the_recent_lines_and_on_line(tmp_path: Path) -> None:
    seen: list[str] = []
    log = tmp_path / "logs" / "child.log"
    argv = [sys.executable, "-c", "print('one'); print('two'); print('three', flush=True)"]
    process = ChildProcess(argv, {}, log, on_line=seen.append)
    await process.spawn()
    assert await process.wait() == 0
    assert seen == ["one", "two", "three"] and process.log_tail(2) == "two\nthree"
    header, *lines = log.read_text().splitlines()
    assert header.startswith(f"=== gpufleet: started pid {process.pid}: {sys.executable}") and lines == seen


@pytest.mark.parametrize(
    ("old_bytes", "kept"),
    [(100, True), (_MAX_LOG_BYTES + 1, False)],
    ids=["small-log-appended", "oversized-log-started-afresh"],
)
async def test_spawn_appends_to_the_log_unless_it_grew_past_the_cap(tmp_path: Path, old_bytes: int, kept: bool) -> None:
    log = tmp_path / "child.log"
    with log.open("wb") as f:
        f.write(b"old run\n")
        f.truncate(old_bytes)  # sparse: no 20 MiB written to disk
    process = ChildProcess([sys.executable, "-c", "print('new run')"], {}, log)
    await process.spawn()
    await process.wait()
    text = log.read_text(errors="replace")
    assert text.startswith("old run\n") == kept and text.endswith("new run\n")


async def test_the_env_and_cwd_reach_the_child_and_stop_before_spawn_is_a_no_op(tmp_path: Path) -> None:
    never = ChildProcess(["true"], {}, tmp_path / "never.log")
    assert await never.stop() is None and never.pid is None and not never.running
    process = ChildProcess(
        ["sh", "-c", 'echo "$GPUFLEET_TEST_VAR $(pwd)"'],
        {"GPUFLEET_TEST_VAR": "set"},
        tmp_path / "child.log",
        cwd=str(tmp_path),
    )
    await process.spawn()
    await process.wait()
    assert process.log_tail(1) == f"set {tmp_path}"


async def test_an_engine_that_exited_on_its_own_is_reaped_group_and_stop_command(
    tmp_path: Path, members: list[int]
) -> None:
    """What the supervisor does after a crash: the group's leftovers die and the stop command runs (for a
    `docker run` engine: `docker rm --force`, since its container may outlive the client)."""
    marker = tmp_path / "stop-command-ran"
    spec = LaunchSpec(
        argv=["sh", "-c", f"{ORPHAN}; exit 3"],
        env={},
        port=0,
        base_url="",
        health_url="",
        stop_argv=["sh", "-c", f"touch {marker}"],
    )
    process = EngineProcess(spec, tmp_path / "engine.log")
    await process.spawn()
    assert await process.wait() == 3
    member = await _member_pid(process)
    members.append(member)
    assert _alive(member)
    await process.reap_after_exit()
    assert await _gone(member)
    assert marker.exists()
