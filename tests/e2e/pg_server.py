"""A throw-away PostgreSQL server from Debian's packages, in a temp dir, on a free loopback port.

``PostgresServer`` runs ``initdb`` and ``pg_ctl`` (as the ``postgres`` user
when the tests run as root: PostgreSQL refuses root), ready in about 1-2 s;
``restart`` and ``stop``/``start`` stand for a database that goes away.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PostgresServer:
    """One PostgreSQL cluster of its own (``url`` names its ``postgres`` database)."""

    def __init__(self, fsync: bool = False) -> None:
        """initdb in a new temp dir (nothing runs yet); ``fsync`` off for tests, on to measure."""
        if not (PG_BIN / "initdb").exists():
            pytest.skip("PostgreSQL 15 is not installed (make test installs Debian's postgresql)")
        self.root = Path(tempfile.mkdtemp(prefix="expertd-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.fsync = fsync
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        command = [str(PG_BIN / tool), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       cwd=self.root)

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=50")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                  "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop it (``fast``: sessions are cut, as in a restart; ``immediate``: a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """Stop and start again (clients' connections are cut)."""
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop it if it runs, and remove its directory."""
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        """What the server logged."""
        path = self.root / "log"
        return path.read_text(errors="replace") if path.exists() else ""

