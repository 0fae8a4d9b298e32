"""A real PostgreSQL server for tests: Debian's `postgresql` package, run from a temporary directory.

initdb + pg_ctl on a free port, trust auth on 127.0.0.1 only; never the system service. As root (CI), the
server runs as the `postgres` user, since PostgreSQL refuses to run as root. Install line (Makefile):
`apt-get install -y -q --no-install-recommends postgresql`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from gpufleet.engine_supervisor.ports import free_port

INSTALL = "apt-get install -y -q --no-install-recommends postgresql"


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError(f"PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): {INSTALL}")
    return Path(found[-1]).parent


class PgServer:
    """One PostgreSQL cluster in a temporary directory. `url` is what server.database_url takes."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="gpufleet-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._user = {"user": "postgres", "group": "postgres"}
        self._run("initdb", "-D", str(self.data), "-U", "gpufleet", "--auth=trust", "-E", "UTF8", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql://gpufleet@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            cwd=self.root,
            timeout=60,
            check=False,
            **self._user,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stdout}{result.stderr}")

    def start(self) -> PgServer:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w", "-t", "60", "start"
        )
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
