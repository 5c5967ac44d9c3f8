"""No URL autotaper prints holds a password (errors, headers, the "results again" line, JSON,
the HTML report), checked against a real PostgreSQL server that asks for one; and the password
can come from the environment (AUTOTAPER_STORAGE, libpq's PGPASSWORD) instead of argv."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import micro_space, write_corpus

pytestmark = pytest.mark.slow
SECRET = "s3cret-Xq7"


@pytest.fixture(scope="module")
def server():
    from tests.servers import Postgres

    pg = Postgres(password=SECRET)
    yield pg
    pg.stop()


@pytest.fixture
def space(tmp_path, monkeypatch):
    import yaml

    monkeypatch.setenv("AUTOTAPER_CACHE", str(tmp_path / "cache"))
    corpus = str(write_corpus(tmp_path / "corpus"))
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(micro_space(corpus, search={"n_trials": 2, "sampler": "random", "seed": 0})))
    return path


def cli(*args, cwd, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "AUTOTAPER_STORAGE")}
    proc = subprocess.run([sys.executable, "-m", "autotaper", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env={**environ, **env})
    assert SECRET not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    return proc


def test_a_search_never_prints_the_password_and_its_results_line_runs_as_printed(server, space, tmp_path):
    proc = cli("search", "--space", space, "--storage", server.url, "--study", "pw", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "postgres:***@127.0.0.1" in proc.stderr  # the search's header: the URL, masked
    line = next(x for x in proc.stderr.splitlines() if x.startswith("results again: "))
    command = line[len("results again: "):].split("  (")[0].split()
    assert command[:2] == ["autotaper", "results"] and "PGPASSWORD" in line
    assert command[command.index("--storage") + 1] == server.url.replace(f":{SECRET}@", "@")
    report = next(x for x in proc.stderr.splitlines() if x.startswith("report: ")).split()[1]
    assert SECRET not in Path(tmp_path, report).read_text()
    # as printed, it runs once libpq has the password from the environment, and not without
    again = cli(*command[1:], "--json", cwd=tmp_path, PGPASSWORD=SECRET)
    assert again.returncode == 0, again.stderr
    board = json.loads(again.stdout)
    assert board["study"] == "pw" and board["trials"][0]["status"] == "reference"
    refused = cli(*command[1:], cwd=tmp_path)
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1


def test_errors_and_json_never_hold_the_password(server, tmp_path):
    wrong = server.url.replace(SECRET, "not-" + SECRET)
    bad = cli("results", "--storage", wrong, "--study", "x", cwd=tmp_path)
    assert bad.returncode == 2 and "***" in bad.stderr and "not-" not in bad.stderr
    closed = server.url.replace(f":{server.port}/", ":1/")
    unreachable = cli("results", "--storage", closed, "--study", "x", cwd=tmp_path)
    assert unreachable.returncode == 2 and "postgres:***@127.0.0.1:1" in unreachable.stderr
    missing = cli("results", "--storage", server.url, "--study", "no-such-study", cwd=tmp_path)
    assert missing.returncode == 2 and "no study 'no-such-study'" in missing.stderr and "***" in missing.stderr


def test_the_url_and_its_password_can_come_from_the_environment(server, space, tmp_path):
    proc = cli("search", "--space", space, "--study", "env", cwd=tmp_path, AUTOTAPER_STORAGE=server.url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "results again: autotaper results --study env  (storage from AUTOTAPER_STORAGE)" in proc.stderr
    default = tmp_path / "runs" / "search" / "env"  # where the study would be without a storage (the report is)
    assert not (default / "study.db").exists() and not (default / "journal.log").exists()
    again = cli("search", "--space", space, "--study", "env", "--json", cwd=tmp_path, AUTOTAPER_STORAGE=server.url)
    assert again.returncode == 0, again.stderr[-3000:]  # the study is complete: the board, at once
    assert json.loads(again.stdout)["storage"] == server.url.replace(f":{SECRET}@", ":***@")
    bare = server.url.replace(f":{SECRET}@", "@")
    assert cli("results", "--storage", bare, "--study", "env", cwd=tmp_path, PGPASSWORD=SECRET).returncode == 0
