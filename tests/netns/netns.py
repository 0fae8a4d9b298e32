"""Two network namespaces on this machine, joined by a veth pair, as two "hosts" of a test cluster.

    with namespace_pair() as pair:           # pair.head_ns / pair.worker_ns, 10.213.0.1/24 ↔ 10.213.0.2/24
        pair.popen(pair.head_ns, [...])      # a process "on" a host (ip netns exec)
        in_netns(pair.head_ns, fetch)        # run a client call from inside a namespace (its 127.0.0.1)

Traffic stays on these two addresses and each namespace's loopback. Everything is removed on exit, also after a
failure: every process left in the namespaces is killed, then the namespaces go (and the veth pair with them).
Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and iproute2's `ip`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

HEAD_IP = "10.213.0.1"
WORKER_IP = "10.213.0.2"
# A third host on its own link to the head (an outsider on the network): 10.214.0.2, routed to HEAD_IP.
OUTSIDER_IP = "10.214.0.2"
_OUTSIDER_HEAD_SIDE = "10.214.0.1"
_CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def netns_pids(ns: str) -> list[int]:
    """Processes whose network namespace is `ns`."""
    done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=30, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def kill_netns_processes(ns: str, timeout_s: float = 15) -> list[int]:
    """SIGKILL every process in `ns` until none is left; returns the pids seen first."""
    first = netns_pids(ns)
    deadline = time.monotonic() + timeout_s
    pids = first
    while pids and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        pids = netns_pids(ns)
    return first


def in_netns(ns: str, call: Callable[[], T]) -> T:
    """Run `call` in a thread that entered `ns`: the sockets it opens live in that namespace.

    setns(2) moves only the calling thread, so the test process itself stays where it is.
    """
    out: dict[str, Any] = {}

    def run() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        try:
            with open(f"/run/netns/{ns}", "rb") as handle:
                if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {ns} failed")
            out["value"] = call()
        except BaseException as err:
            out["error"] = err

    thread = threading.Thread(target=run, name=f"in-{ns}")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]  # type: ignore[no-any-return]


@dataclass
class NamespacePair:
    """The two namespaces and the processes started in them."""

    head_ns: str
    worker_ns: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    outsider_ns: str | None = None

    def popen(
        self,
        ns: str,
        argv: list[str],
        log: IO[bytes],
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` inside `ns` in its own session, output to `log`."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc


@contextlib.contextmanager
def namespace_pair(tag: str | None = None, *, outsider: bool = False) -> Iterator[NamespacePair]:
    """Create the namespaces and the veth pair; remove them (and every process in them) on exit.

    `outsider`: also a third namespace (`pair.outsider_ns`, OUTSIDER_IP) with its own link to the head, from
    which the head's addresses are reachable like from any other host on the network.
    """
    tag = tag or str(os.getpid() % 100000)
    head_ns, worker_ns = f"gfray-{tag}-h", f"gfray-{tag}-w"
    head_if, worker_if = f"gfh{tag}", f"gfw{tag}"  # interface names: 15 characters at most
    pair = NamespacePair(head_ns, worker_ns, outsider_ns=f"gfray-{tag}-o" if outsider else None)
    try:
        _ip("netns", "add", head_ns)
        _ip("netns", "add", worker_ns)
        _ip("link", "add", head_if, "type", "veth", "peer", "name", worker_if)
        _ip("link", "set", head_if, "netns", head_ns)
        _ip("link", "set", worker_if, "netns", worker_ns)
        for ns, dev, addr in ((head_ns, head_if, HEAD_IP), (worker_ns, worker_if, WORKER_IP)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        if pair.outsider_ns is not None:
            _add_outsider(pair.outsider_ns, head_ns, f"gfo{tag}", f"gfx{tag}")
        yield pair
    finally:
        for proc in pair.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for made in (head_ns, worker_ns, pair.outsider_ns):
            if made is not None and Path(f"/run/netns/{made}").exists():
                kill_netns_processes(made)
                subprocess.run(["ip", "netns", "del", made], capture_output=True, timeout=30, check=False)
        for proc in pair.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def _add_outsider(outsider_ns: str, head_ns: str, outsider_if: str, head_if: str) -> None:
    _ip("netns", "add", outsider_ns)
    _ip("link", "add", head_if, "type", "veth", "peer", "name", outsider_if)
    _ip("link", "set", head_if, "netns", head_ns)
    _ip("link", "set", outsider_if, "netns", outsider_ns)
    _ip("-n", head_ns, "addr", "add", f"{_OUTSIDER_HEAD_SIDE}/24", "dev", head_if)
    _ip("-n", head_ns, "link", "set", head_if, "up")
    _ip("-n", outsider_ns, "addr", "add", f"{OUTSIDER_IP}/24", "dev", outsider_if)
    _ip("-n", outsider_ns, "link", "set", outsider_if, "up")
    _ip("-n", outsider_ns, "link", "set", "lo", "up")
    # HEAD_IP is the head's own address, so the head answers it on this link too (no forwarding needed).
    _ip("-n", outsider_ns, "route", "add", f"{HEAD_IP}/32", "via", _OUTSIDER_HEAD_SIDE)
