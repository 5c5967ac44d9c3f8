"""Real servers for tests: PostgreSQL from Debian's packages, started on loopback.

.ci/run installs the `postgresql` package; here we only find its binaries, make a cluster
in a temporary folder owned by the postgres user, and start it on a free loopback port.
Without the binaries the tests that need it skip, except under CI, where they fail.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(args: list[str]) -> list[str]:
    return args if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]


class Postgres:
    """A PostgreSQL server in a temporary folder on a loopback port: `pause()` stops the
    server and `resume()` starts it again on the same port and data (a real outage);
    `stop()` ends it and removes the folder. With `password`, connections over TCP must give
    it (scram-sha-256), and `url` holds it."""

    def __init__(self, password: str | None = None):
        import psycopg2  # first: a missing driver must not leave a server running

        self._psycopg2 = psycopg2
        self.initdb, self.pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if not self.initdb or not self.pg_ctl:
            message = "PostgreSQL is not installed (apt-get install postgresql; .ci/run does this)"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        self.root = tempfile.mkdtemp(prefix="autotaper-pg-", dir="/tmp")
        os.chmod(self.root, 0o755)
        self.data = os.path.join(self.root, "data")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        auth = ["--auth=trust"]
        if password:
            pwfile = os.path.join(self.root, "pwfile")
            with open(pwfile, "w") as f:
                f.write(password + "\n")
            if os.geteuid() == 0:
                shutil.chown(pwfile, "postgres", "postgres")
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        try:
            subprocess.run(_as_postgres([self.initdb, "-D", self.data, "-U", "postgres", *auth, "-E", "UTF8"]),
                           check=True, capture_output=True, timeout=120)
            for attempt in range(5):  # a free port can be taken before the server binds it: try another
                self.port = free_port()
                if self._start(check=False):
                    break
            else:
                raise RuntimeError(f"PostgreSQL did not start; see {self.root}/server.log")
        except BaseException:
            self.stop()
            raise
        self.url = f"postgresql://postgres{':' + password if password else ''}@127.0.0.1:{self.port}/postgres"
        self._wait()

    def _start(self, check: bool = True) -> bool:
        proc = subprocess.run(_as_postgres([self.pg_ctl, "-D", self.data, "-l", os.path.join(self.root, "server.log"),
                                            "-w", "-o", f"-h 127.0.0.1 -p {self.port} -k {self.root}", "start"]),
                              capture_output=True, timeout=120)
        if check and proc.returncode:
            raise RuntimeError(f"pg_ctl start failed: {proc.stderr.decode()[-500:]}")
        return proc.returncode == 0

    def _wait(self) -> None:
        deadline = time.time() + 30
        while True:
            try:
                self._psycopg2.connect(self.url).close()
                return
            except self._psycopg2.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    def pause(self) -> None:
        subprocess.run(_as_postgres([self.pg_ctl, "-D", self.data, "-m", "fast", "-w", "stop"]), check=True,
                       capture_output=True, timeout=120)

    def resume(self) -> None:
        self._start()
        self._wait()

    def stop(self) -> None:
        subprocess.run(_as_postgres([self.pg_ctl, "-D", self.data, "-m", "fast", "stop"]), capture_output=True,
                       timeout=120)
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres():
    """(url, stop) of a fresh server (see `Postgres`)."""
    server = Postgres()
    return server.url, server.stop
