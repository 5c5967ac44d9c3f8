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


def start_postgres():
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        message = "PostgreSQL is not installed (apt-get install postgresql; .ci/run does this)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = tempfile.mkdtemp(prefix="autotaper-pg-", dir="/tmp")
    os.chmod(root, 0o755)
    data = os.path.join(root, "data")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(_as_postgres([initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True)
    port = free_port()
    log = os.path.join(root, "server.log")
    subprocess.run(_as_postgres([pg_ctl, "-D", data, "-l", log, "-w", "-o",
                                 f"-h 127.0.0.1 -p {port} -k {root}", "start"]), check=True, capture_output=True)
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    import psycopg2

    deadline = time.time() + 30
    while True:
        try:
            psycopg2.connect(url).close()
            break
        except psycopg2.OperationalError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)

    def stop():
        subprocess.run(_as_postgres([pg_ctl, "-D", data, "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)

    return url, stop
