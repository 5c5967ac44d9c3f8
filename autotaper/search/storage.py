"""Where a study lives: an SQLite file, a journal file, or a PostgreSQL server.

    (none)                       runs/search/<study>/study.db   (journal.log with --workers > 1)
    sqlite:///path/study.db      one machine, one process at a time writing
    journal:path/study.log       several processes on one machine (file locks, no server)
    path/x.log | path/x.db       the same, by suffix
    postgresql://user@host/db    several machines (needs psycopg2)

A server storage (PostgreSQL, MySQL) rides out an outage: every storage call that fails for
want of a connection is retried with backoff for up to RETRY_S (one line says the server
is gone, one that it is back), and pooled connections are checked before use, so a
restarted server is picked up without losing or repeating a trial.

RDB storages run Optuna's heartbeat, so a trial whose machine dies is failed after the
grace period. Journal storages have no heartbeat; a running trial there holds a lease
instead (`Lease`: host, pid and the time of its last beat in the trial's "lease" attr,
renewed every LEASE_S / 6 while it trains), and every worker, on any host, fails the
trials whose lease has expired before it starts one (`fail_expired_leases`; clocks are
assumed synchronised to well under LEASE_S, as Optuna's heartbeat assumes). On every
machine a restart also fails at once the RUNNING trials whose worker process (recorded as
host and pid) no longer exists, so a killed search never leaves trials running forever.
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading
import time
from pathlib import Path

from autotaper.errors import InputError, StorageError
from autotaper.log import logger
from autotaper.search import records
from autotaper.search.records import TrialRecord
from autotaper.urls import SECRET_KEYS, escape_userinfo, mask_url, scrub, secrets_in, strip_password  # noqa: F401 - re-exported

DEFAULT_ROOT = Path("runs/search")
HEARTBEAT_S = 10
GRACE_S = 60
LEASE_S = float(os.environ.get("AUTOTAPER_LEASE_S", GRACE_S))  # journal trials: beat at least this often
LEASE_ATTR = "lease"  # = TrialRecord.lease
RETRY_S = float(os.environ.get("AUTOTAPER_STORAGE_RETRY_S", 600))  # how long a server outage is waited out
_CREATE_RACE = ("already exists", "UniqueViolation", "duplicate key", "UNIQUE constraint failed", "database is locked")


STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_study_name(name, field: str = "--study") -> str:
    """`name` if it is a study name: letters, digits, '.', '_' and '-', at most 100, starting
    with a letter or digit, never a path (it names a folder under runs/search/). InputError
    naming `field` otherwise; the name is shown escaped (no raw terminal control codes)."""
    if not isinstance(name, str) or not STUDY_NAME.fullmatch(name) or ".." in name:
        raise InputError(f"{field}: {name!r} is not a study name (letters, digits, '.', '_' and '-', up to 100, "
                         "starting with a letter or digit; never a path)")
    return name


def default_location(study: str, *, workers: int = 1, root: Path = DEFAULT_ROOT) -> str:
    folder = root / check_study_name(study)
    if (folder / "journal.log").exists():
        return f"journal:{folder / 'journal.log'}"
    if (folder / "study.db").exists() or workers <= 1:
        return f"sqlite:///{folder / 'study.db'}"
    return f"journal:{folder / 'journal.log'}"


def storage_file(url: str) -> Path | None:
    """The local file of a journal or SQLite URL (None for a server URL)."""
    if url.startswith("journal:"):
        return Path(url[len("journal:"):])
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    if "://" not in url and url.endswith((".log", ".journal", ".jsonl", ".db", ".sqlite", ".sqlite3")):
        return Path(url)
    return None


def check_storage(url, field: str = "--storage") -> str:
    """`url` if autotaper can open it; InputError naming `field` otherwise: an unsupported
    scheme, or a local file that is a folder, a FIFO or a device, or whose parent is a file.
    Checks only: nothing is created."""
    import stat

    from autotaper._io import kind

    if not isinstance(url, str) or not url.strip():
        raise InputError(f"{field}: must be a storage URL (sqlite:///f.db, journal:f.log, postgresql://...), "
                         f"got {url!r}")
    path = storage_file(url)
    if path is None:
        if not url.startswith(("postgresql://", "postgresql+psycopg2://", "postgres://", "mysql://", "mysql+")):
            raise InputError(f"{field}: unsupported URL {mask_url(url)!r} (use sqlite:///, journal:, or postgresql://)")
        return url
    if not str(path).strip():
        raise InputError(f"{field}: {url!r} names no file")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise InputError(f"{field}: {str(path)!r} cannot be read ({e.strerror})") from None
    if mode is not None and not stat.S_ISREG(mode):
        raise InputError(f"{field}: {str(path)!r} is {kind(mode)}, not a study file")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{field}: {str(parent)!r} is a file, not a folder")
            break
    return url


def open_storage(url: str):
    """An Optuna storage object for `url` (see the module docstring)."""
    import optuna

    check_storage(url)
    url = escape_userinfo(url)

    if url.startswith("journal:"):
        return _journal(url[len("journal:"):])
    if url.endswith((".log", ".journal", ".jsonl")) and "://" not in url:
        return _journal(url)
    if url.endswith((".db", ".sqlite", ".sqlite3")) and "://" not in url:
        url = f"sqlite:///{url}"
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path.resolve()}"  # absolute: the engine connects lazily, maybe from elsewhere
    elif url.startswith(("postgresql://", "postgresql+psycopg2://", "postgres://")):
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        url = _postgres_driver(url)
    elif url.startswith(("mysql://", "mysql+")):
        pass
    else:
        raise InputError(f"storage: unsupported URL {mask_url(url)!r} (use sqlite:///, journal:, or postgresql://)")
    import warnings

    # Workers (or a reader) that start together on a fresh database race to create Optuna's
    # tables; the loser gets "already exists", a unique violation or SQLite's lock error, and
    # succeeds on a later try.
    for attempt in range(8):
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                if url.startswith("sqlite"):
                    return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
                return _resilient_class()(url, engine_kwargs={"pool_pre_ping": True},
                                          heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
        except Exception as e:  # sqlalchemy raises many kinds; the user needs one line
            error = e
            if not any(m in str(e) for m in _CREATE_RACE):
                break
            time.sleep(0.2 * (attempt + 1) * (1 + random.random()))
    raise InputError(f"storage: cannot open {mask_url(url)!r}: {str(error).splitlines()[0]}") from None


def _connection_lost(error: BaseException | None) -> bool:
    """True when `error` (or what caused it) says the database could not be reached."""
    import sqlalchemy.exc as sx

    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, (sx.OperationalError, sx.InterfaceError)) or \
                (isinstance(error, sx.DBAPIError) and error.connection_invalidated):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


_RESILIENT = None


def _resilient_class():
    """RDBStorage whose calls wait out a lost server (see the module docstring)."""
    global _RESILIENT
    if _RESILIENT is not None:
        return _RESILIENT

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages import BaseStorage, RDBStorage
    from optuna.storages._heartbeat import BaseHeartbeat

    def retrying(name, method):
        def call(self, *args, **kwargs):
            delay, attempt = 0.5, 0
            while True:
                try:
                    out = method(self, *args, **kwargs)
                except UpdateFinishedTrialError:
                    if attempt and name == "set_trial_state_values":
                        return True  # the call the connection dropped under had committed
                    raise
                except Exception as e:  # noqa: BLE001 - sorted by _connection_lost
                    if not _connection_lost(e):
                        raise
                    self._outage(e)
                    attempt += 1
                    time.sleep(delay)
                    delay = min(5.0, delay * 2)
                    continue
                self._recovered()
                return out

        call.__name__ = call.__qualname__ = name
        return call

    names = {n for base in (BaseStorage, BaseHeartbeat) for n in vars(base)
             if callable(getattr(base, n)) and (not n.startswith("_") or n == "_get_stale_trial_ids")}
    namespace = {n: retrying(n, getattr(RDBStorage, n)) for n in sorted(names) if hasattr(RDBStorage, n)}

    def _outage(self, error):
        with _OUTAGE_LOCK:
            now = time.time()
            since = getattr(self, "_lost_at", None)
            if since is None:
                self._lost_at = now
                first = str(error.__cause__ or error).strip().splitlines()
                logger.warning(f"storage: lost {mask_url(self.url)} ({first[0] if first else type(error).__name__}); "
                               f"retrying for up to {RETRY_S:.0f} s")
            elif now - since > RETRY_S:
                raise StorageError(f"storage: {mask_url(self.url)} unreachable for {now - since:.0f} s "
                                 f"(AUTOTAPER_STORAGE_RETRY_S={RETRY_S:.0f}); the study is as it was; "
                                 f"run the same command again when the server is back") from None

    def _recovered(self):
        if getattr(self, "_lost_at", None) is not None:
            with _OUTAGE_LOCK:
                since, self._lost_at = self._lost_at, None
            if since is not None:
                logger.warning(f"storage: {mask_url(self.url)} is back after {time.time() - since:.0f} s; going on")

    def __getstate__(self):  # no lock or outage state in a pickled copy
        state = RDBStorage.__getstate__(self)
        state.pop("_lost_at", None)
        return state

    namespace.update(_outage=_outage, _recovered=_recovered, __getstate__=__getstate__,
                     __module__=__name__, __doc__=_resilient_class.__doc__)
    _RESILIENT = type("ResilientRDBStorage", (RDBStorage,), namespace)
    return _RESILIENT


_OUTAGE_LOCK = threading.Lock()


def _postgres_driver(url: str) -> str:
    """SQLAlchemy 2.1 maps postgresql:// to psycopg 3; use psycopg2 when that is what is here."""
    import importlib.util

    if not url.startswith("postgresql://"):
        return url
    if importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    if importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    raise InputError("storage: PostgreSQL needs psycopg2 (pip install 'autotaper[postgres]')")


def _journal(path: str):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:  # replayed now, so a damaged journal is named here rather than failing later
        storage = JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        storage.get_all_studies()
    except Exception as e:  # noqa: BLE001 - any replay failure means a damaged file
        raise InputError(f"storage: journal {path!r} is damaged{_bad_journal_line(path)} "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); it is left as it "
                         f"is: restore it from a copy, or use another --storage") from None
    return storage


def _bad_journal_line(path: str) -> str:
    """' at line N' for the first complete line that is not JSON, else ''."""
    import json

    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):  # a last line still being written is not damage
                break
            try:
                json.loads(line)
            except ValueError:
                return f" at line {number}"
    return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_gone(trial) -> bool:
    """True when `trial` ran in a process of this host that no longer exists."""
    r = TrialRecord.from_trial(trial)
    return r.host == socket.gethostname() and isinstance(r.pid, int) and r.pid != os.getpid() and not _alive(r.pid)


def fail_dead_trials(study) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker on this host is gone; returns their numbers."""
    import optuna
    from optuna.trial import TrialState

    failed = []
    if isinstance(study._storage, optuna.storages.RDBStorage):
        optuna.storages.fail_stale_trials(study)
    if is_journal(study._storage):
        failed += fail_expired_leases(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = TrialRecord.from_trial(t).pid
        if worker_gone(t):
            storage = study._storage
            records.write_by_id(storage, t._trial_id, status=records.FAILED,
                                reason=f"worker process {pid} died (killed or crashed)")
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            failed.append(t.number)
    return failed


def is_journal(storage) -> bool:
    from optuna.storages import JournalStorage

    return isinstance(storage, JournalStorage)


class Lease:
    """A running trial's lease in a storage without heartbeat: renewed from a daemon thread
    every `lease_s / 6` while the `with` block runs (see the module docstring)."""

    def __init__(self, storage, trial_id: int, lease_s: float | None = None):
        self.storage, self.trial_id = storage, trial_id
        self.lease_s = LEASE_S if lease_s is None else lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"autotaper-lease-{trial_id}", daemon=True)

    def beat(self) -> None:
        self.storage.set_trial_user_attr(self.trial_id, LEASE_ATTR, {
            "host": socket.gethostname(), "pid": os.getpid(), "beat": time.time(), "lease_s": self.lease_s})

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 6):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a finished trial or a storage hiccup: the next beat retries
                pass

    def __enter__(self) -> "Lease":
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def fail_expired_leases(study, *, now: float | None = None) -> list[int]:
    """Mark FAIL the RUNNING trials whose lease expired, whatever host they ran on."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    now = time.time() if now is None else now
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        lease = t.user_attrs.get(LEASE_ATTR)
        if not isinstance(lease, dict) or now - lease.get("beat", now) <= lease.get("lease_s", LEASE_S):
            continue
        storage = study._storage
        try:
            records.write_by_id(storage, t._trial_id, status=records.FAILED, reason=(
                f"lease expired: no beat from {lease.get('host')} pid {lease.get('pid')} for "
                f"{now - lease['beat']:.0f} s (lease {lease.get('lease_s', LEASE_S):.0f} s)"))
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:  # it finished, or another worker failed it first
            continue
        failed.append(t.number)
    return failed


def __getattr__(name: str):
    """`ResilientRDBStorage` is built on first use (it imports Optuna); pickles name it."""
    if name == "ResilientRDBStorage":
        return _resilient_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
