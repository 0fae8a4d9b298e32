"""A `ray start --block` child: its own process group (Ray's GCS, raylet, dashboard and workers go with it), its
log in a file plus the last lines in memory, and a stop that leaves nothing behind.

Never `ray stop`: it kills every Ray process of the machine, other users' and other nodes' on the same host too.
"""

from __future__ import annotations

from pathlib import Path

from gpufleet.child_process import ChildProcess


class RayProcess(ChildProcess):
    """One `ray start --block` process group."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        # `ray start` can exit (crash, lost head) while raylet, gcs_server, the dashboard and workers stay in its
        # group: stop() must kill the group even then, or they hold the node's ports and GPUs.
        super().__init__(argv, env, log_path, kill_group_after_exit=True)
