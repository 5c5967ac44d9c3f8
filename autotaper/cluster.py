"""Searches on a Ray cluster whose nodes never installed autotaper: what a job ships, and the
check that every node runs what the driver runs.

A driver that joins a cluster (`autotaper search --backend ray --address HEAD:6379`, or the
search inside a submitted job) gives its Ray job this process's own `autotaper` package as
`py_modules`: Ray zips the folder the code runs from and puts it first on every worker's
path, so trials run the driver's code whatever a node has installed, and no name is ever
looked up on a package index.

`autotaper search --backend ray --submit http://HEAD:8265` goes one step further and runs the
driver itself as a Ray job (`submit_search`). Its runtime env holds
- `py_modules`: the package, as above;
- `working_dir`: a staging folder with the space file and the local data files it names;
- `pip`: the package's dependencies and those of Ray's `tune` extra, pinned to the versions
  this machine runs (Ray excepted: a node's Ray is the cluster's). pip leaves a requirement
  a node already meets and installs one it lacks; `--no-install` leaves the nodes alone;
- `env_vars`: the storage URL (`AUTOTAPER_STORAGE`) and `PGPASSWORD` when set, so that the
  entrypoint, which `ray job list` shows, never holds a password. Ray keeps a job's runtime
  env in its job table: a password that must stay off the cluster's records belongs in the
  nodes' `~/.pgpass` instead.

Before any trial, the driver runs one task on every node (`check_versions`) that reports its
autotaper, torch, Optuna, Ray and Python versions and whether it imports ray.tune; a node
that differs from the driver, or cannot, is named in one error.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from autotaper.errors import InputError, VersionSkew

VERSIONED = ("autotaper", "torch", "optuna", "ray", "python")
STORAGE_ENV = "AUTOTAPER_STORAGE"
_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray in a submitted job's driver


def package_dir() -> Path:
    """The folder of the `autotaper` package this process runs."""
    import autotaper

    return Path(autotaper.__file__).resolve().parent


def _job_runtime_env() -> dict:
    try:
        return json.loads(os.environ.get(_JOB_CONFIG_ENV) or "{}").get("runtime_env") or {}
    except ValueError:
        return {}


def driver_runtime_env() -> dict | None:
    """The runtime env a driver joining a cluster gives its job: this process's package, unless
    the submitted job it runs in already ships one (Ray refuses a second value for a field)."""
    if _job_runtime_env().get("py_modules"):
        return None
    return {"py_modules": [str(package_dir())]}


def connect(address: str | None, **local) -> bool:
    """Attach to the cluster at `address` with this package shipped (`driver_runtime_env`), or
    start a new local instance with the `local` keyword arguments; True when we started it."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(address=address, log_to_driver=False, runtime_env=driver_runtime_env())
        except Exception as e:  # noqa: BLE001 - Ray raises many kinds; the user needs one line
            raise InputError(f"--address {address!r}: cannot connect to a Ray cluster ({str(e).splitlines()[0]})") \
                from None
        return False
    # "local": a new instance, as --address's help says, even where a cluster started on this
    # machine (`ray start`, another search's) left its address behind for `ray.init()` to find
    ray.init(address="local", log_to_driver=False, **{"include_dashboard": False, **local})
    return True


def _release(version: str | None) -> str | None:
    """A version without its local label: torch 2.13.0+cpu and 2.13.0+cu128 are one release."""
    return version.split("+", 1)[0] if version else version


def versions() -> dict[str, str | None]:
    """This process's versions of what must agree across a cluster."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import autotaper

    out: dict[str, str | None] = {"autotaper": autotaper.__version__,
                                  "python": ".".join(platform.python_version_tuple()[:2])}
    for name in ("torch", "optuna", "ray"):
        try:
            out[name] = _release(version(name))
        except PackageNotFoundError:
            out[name] = None
    return out


def check_versions(timeout_s: float = 300.0, modules: tuple[str, ...] = ()) -> list[dict]:
    """Every alive node's versions (one zero-CPU task pinned to each) against this driver's,
    and whether each node imports `modules` (a Tune search needs `ray.tune`, which a plain
    `ray` install lacks); raises VersionSkew naming each node that differs or cannot.
    Returns what each node reported."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    def report(modules) -> dict:  # defined here, so it travels by value: it needs nothing on the node
        import importlib
        import platform
        import socket
        from importlib.metadata import PackageNotFoundError, version

        out = {"host": socket.gethostname(), "python": ".".join(platform.python_version_tuple()[:2])}
        try:
            import autotaper

            out["autotaper"] = autotaper.__version__
        except ImportError:
            out["autotaper"] = None
        for name in ("torch", "optuna", "ray"):
            try:
                out[name] = version(name).split("+", 1)[0]
            except PackageNotFoundError:
                out[name] = None
        out["imports"] = {}
        for module in modules:
            try:
                importlib.import_module(module)
                out["imports"][module] = None
            except Exception as e:  # noqa: BLE001 - any failure to import is the answer
                root = e.__cause__ or e  # ray.tune wraps the missing module in advice to install ray[tune]
                out["imports"][module] = " ".join(str(root).split()) or type(root).__name__
        return out

    ours = versions()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    task = ray.remote(num_cpus=0, max_retries=1)(report)
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(modules)
            for n in nodes]
    found = ray.get(refs, timeout=timeout_s)
    problems = []
    for node, got in zip(nodes, found):
        differ = [f"{k} {got.get(k) or 'missing'} (driver {ours[k]})" for k in VERSIONED if got.get(k) != ours[k]]
        differ += [f"cannot import {m} ({why})" for m, why in got["imports"].items() if why]
        if differ:
            problems.append(f"node {node['NodeManagerAddress']} ({got['host']}) runs " + ", ".join(differ))
        got["node"] = node["NodeManagerAddress"]
    if problems:
        raise VersionSkew("version skew: " + "; ".join(problems) + ". Install the driver's versions on that node "
                          "(ray[tune] for ray.tune), or submit with --submit, which ships autotaper and installs "
                          "the pinned dependencies")
    return found


# -- submission ----------------------------------------------------------------------------
def pinned_requirements(storage: str | None = None) -> list[str]:
    """autotaper's dependencies at the versions installed here, and those of Ray's `tune`
    extra (a node started from a plain `ray` or `ray[default]` cannot import ray.tune), Ray
    itself left out (a node's Ray is the cluster's); psycopg2-binary too when the storage is
    PostgreSQL."""
    import re
    from importlib.metadata import PackageNotFoundError, requires, version

    try:
        wanted = [r for r in (requires("autotaper") or []) if "extra ==" not in r]
    except PackageNotFoundError:  # running from a source tree that was never installed
        wanted = ["numpy", "torch", "optuna", "scikit-learn", "pyyaml", "safetensors", "tokenizers", "tqdm",
                  "matplotlib"]
    try:
        wanted += [r for r in (requires("ray") or []) if re.search(r"""extra\s*==\s*["']tune["']""", r)]
    except PackageNotFoundError:
        pass
    names = list(dict.fromkeys(re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in wanted))
    if storage and storage.startswith(("postgresql", "postgres:")):
        names.append("psycopg2-binary")
    pins = []
    for name in names:
        if name.lower() == "ray":
            continue
        try:
            pins.append(f"{name}=={_release(version(name))}")
        except PackageNotFoundError:
            pass  # not installed here either: nothing to pin it to
    return pins


def stage(space_path: str | Path, data: str | None) -> tuple[Path, str | None]:
    """A staging folder for `working_dir`: the space file as space.yaml, the local data it
    names (a file, a folder, a glob's matches, or an `hf:` dataset saved to disk) under data/.
    Returns the folder and the --data the job passes (None: the embedded corpus, built on the
    head)."""
    import glob

    folder = Path(tempfile.mkdtemp(prefix="autotaper-job-"))
    shutil.copy(space_path, folder / "space.yaml")
    if data is None:
        return folder, None
    if data.startswith("hf:"):
        source = Path(data[3:])
        shutil.copytree(source, folder / "data" / source.name)
        return folder, f"hf:data/{source.name}"
    source = Path(data)
    if source.is_file():
        (folder / "data").mkdir()
        shutil.copy(source, folder / "data" / source.name)
        return folder, f"data/{source.name}"
    if source.is_dir():
        shutil.copytree(source, folder / "data" / (source.name or "corpus"))
        return folder, f"data/{source.name or 'corpus'}"
    matches = sorted(p for p in glob.glob(data, recursive=True) if Path(p).is_file())
    if not matches:
        shutil.rmtree(folder, ignore_errors=True)
        raise InputError(f"data: {data!r} is neither a file, a folder nor a glob that matches files")
    base = Path(os.path.commonpath([str(Path(p).resolve().parent) for p in matches]))
    for p in matches:
        target = folder / "data" / Path(p).resolve().relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, target)
    return folder, "data"


def runtime_env(folder: Path, *, storage: str, install: bool = True) -> dict:
    """The runtime env of a submitted search (see the module docstring)."""
    env = {"working_dir": str(folder), "py_modules": [str(package_dir())],
           "env_vars": {STORAGE_ENV: storage, "PYTHONUNBUFFERED": "1"}}
    if os.environ.get("PGPASSWORD"):
        env["env_vars"]["PGPASSWORD"] = os.environ["PGPASSWORD"]
    if install:
        env["pip"] = pinned_requirements(storage)
    return env


NO_AGENT = "No available agent to submit job"
AGENT_WAIT_S = 60  # how long a submission waits for the head's job agent to come up


def submit_search(address: str, space_path: str | Path, args: list[str], *, storage: str | None,
                  data: str | None = None, install: bool = True, say=print) -> str:
    """Submit `autotaper search --backend ray --address auto --space space.yaml ARGS` as a Ray
    job to the dashboard at `address`; returns the job's submission id."""
    from ray.job_submission import JobSubmissionClient

    storage = storage or os.environ.get(STORAGE_ENV)
    if not storage:
        raise InputError("--submit needs --storage (or AUTOTAPER_STORAGE): a database the head node reaches, "
                         "postgresql://... or sqlite:////an/absolute/path/on/the/head; a job's own folder is "
                         "removed when it ends")
    if storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):
        raise InputError(f"--storage {storage!r}: a submitted job needs an absolute path on the head node "
                         "(sqlite:////...): a job's own folder is removed when it ends")
    from autotaper.urls import strip_password

    if strip_password(storage) != storage or os.environ.get("PGPASSWORD"):
        say("note: the storage password travels in the job's runtime env, which Ray keeps in its job table "
            "(anyone who reaches the dashboard can read it); a password in the nodes' ~/.pgpass stays off it")
    folder, data_arg = stage(space_path, data)
    entry = ["python", "-m", "autotaper", "search", "--backend", "ray", "--address", "auto",
             "--space", "space.yaml", *(["--data", data_arg] if data_arg else []), *args]
    try:
        client = JobSubmissionClient(address)
    except Exception as e:  # noqa: BLE001 - connection errors come in many kinds; one line
        shutil.rmtree(folder, ignore_errors=True)
        raise InputError(f"--submit {address!r}: cannot reach a Ray dashboard ({str(e).splitlines()[0]})") from None
    deadline = time.monotonic() + AGENT_WAIT_S
    try:
        while True:
            try:
                return client.submit_job(entrypoint=" ".join(_quote(a) for a in entry),
                                         runtime_env=runtime_env(folder, storage=storage, install=install),
                                         metadata={"autotaper": versions()["autotaper"] or ""})
            except RuntimeError as e:  # the Job SDK's answer to a refused request
                # A cluster started moments ago has a dashboard before its head's job agent
                # is up: Ray answers "No available agent to submit job, please try again later".
                if NO_AGENT in str(e) and time.monotonic() < deadline:
                    time.sleep(2)
                    continue
                raise InputError(f"--submit {address!r}: the cluster refused the job "
                                 f"({' '.join(str(e).split())})") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # uploaded by now (or never)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def follow(address: str, job: str, *, out=None) -> str:
    """Print the job's log as it comes until the job ends; returns its final status."""
    import asyncio
    import sys

    from ray.job_submission import JobSubmissionClient

    out = out or sys.stdout
    client = JobSubmissionClient(address)

    async def tail() -> None:
        async for lines in client.tail_job_logs(job):
            out.write(lines)
            out.flush()

    asyncio.run(tail())
    return str(client.get_job_status(job).value)
