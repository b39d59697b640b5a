"""The ledger's background writer: one per process, off the hot path, durable through database outages.

How a record travels
    ``on_call`` / ``on_task`` / ``on_event`` run on the app's thread. They append the raw record (and,
    for a task, the time it ended) to a bounded in-memory queue and return: O(1), no I/O, no conversion,
    a lock held for a few instructions, never an exception. One daemon thread per process (started with
    the first record) turns records into rows (:mod:`costtrace.spend.store`), commits them in batches
    (``batch_size`` records, or what arrived within ``flush_interval_s``) with :func:`store.write_batch`,
    which is idempotent (every row carries its own key), then calls ``on_committed(touched)``.

Write-through, in worker processes
    A process its master may terminate or recycle at any moment (multiprocessing and billiard children,
    gunicorn workers, any process forked after import; or ``write_through=True``) does not queue:
    ``on_*`` turns the record into its row and appends it to the process's spool file (``write()``
    under the lock, no fsync: a killed process keeps its page cache) before returning. The thread then
    takes that file (one at a time), replays it into the database like a left-over spool and deletes
    it; if the process dies first, any other writer on the folder claims and replays it.

Validation
    Every row, built here or read back from a spool file, passes :func:`store.validate_row` (types,
    ranges, sizes, required keys) before it is written. A refused row is appended to
    ``quarantine-<pid>-<token>.jsonl`` in the spool folder (never replayed) and counted ``invalid``;
    the log line names the column at fault, never a value.

Drops, always counted (``stats().dropped``) and logged at most once a minute with the count
    ``queue_full`` (more than ``max_queue`` records waiting), ``spool_full`` (the spool file reached
    ``max_spool_bytes``), ``spool_error`` (the spool file could not be written: disk full...),
    ``rejected`` (the database refused a row for a reason other than being unreachable, e.g. a
    constraint), ``invalid`` (a record could not be turned into a row, or the row failed validation),
    ``spool_corrupt`` (a spool line that is not JSON), ``closed`` (recorded after ``close()``). Each log
    line is also a ``ledger_records_lost`` alert (through :mod:`costtrace.spend.alerts`), the counts feed the
    ``costtrace.ledger.lost_records`` metric, and the writer writes them to the ledger as a
    ``ledger_records_lost`` event once the database takes writes.

The database down: the spool
    A batch that cannot be committed (database unreachable, locked past its busy timeout, missing
    tables...) is appended to a local spool file and fsync'd, and the database is retried with backoff
    (0.5 s doubling to 30 s) while new batches go straight to the spool. On recovery the spool is
    replayed in order, in batches, through the same idempotent ``write_batch`` (a crash mid-replay
    replays again and duplicates nothing), then truncated.

Spool files
    Folder: ``spool_path`` if given; else ``<database file>.spool/`` next to a SQLite ledger file; else
    ``$XDG_STATE_HOME/costtrace/spool/<hash of the URL>/`` (``~/.local/state/...``): one folder per
    database, so a spool is only replayed into the database it was meant for. Each writer appends to
    its own ``spool-<pid>-<token>.jsonl`` (one ``{"t": "call"|"task"|"event", "r": row}`` per line),
    holding an exclusive ``flock`` on it while it lives. At start, a writer claims every other file of
    the folder whose lock is free (its process is gone) by renaming it to ``claimed-<pid>-<token>.jsonl``
    under the lock, replays it and deletes it, so two processes never replay the same file at once. It
    looks for such files when it starts, at every ``flush()`` and every ``RESCAN_S`` seconds.

Exit and fork
    ``close(timeout_s)`` (registered with ``atexit`` and, in ``multiprocessing`` children, as a
    ``multiprocessing`` finalizer since forked children skip ``atexit``) flushes within the timeout;
    what is still in memory when it runs out is written to a fresh spool file by the closing thread
    itself, so exit never waits on a stuck database and loses nothing. In a forked child the parent's
    queue is dropped (the parent writes it), locks are new, and a thread starts with the child's first
    record.

Example:
    >>> from costtrace.spend import engine, schema, writer     # doctest: +SKIP
    >>> eng = engine.make_engine("sqlite:///costs.db"); schema.migrate(eng)
    >>> w = writer.LedgerWriter(eng)
    >>> costtrace.records.add_listener(w)
    >>> ...; w.flush(5.0)
    True
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import secrets
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from opentelemetry.metrics import CallbackOptions, Observation

from costtrace import semconv as sc
from costtrace._internal import logger, report_internal_error
from costtrace._money import to_nano
from costtrace.spend import store

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from costtrace.records import CallRecord, TaskEvent, TaskSummary
    from costtrace.spend.budgets import Budget

_flock: Callable[[int, int], Any] | None
try:
    import fcntl

    _flock, _LOCK_NOW = fcntl.flock, fcntl.LOCK_EX | fcntl.LOCK_NB
except ImportError:  # pragma: no cover - Windows: left-over spools are claimed by age instead of lock
    _flock, _LOCK_NOW = None, 0

__all__ = ["LedgerWriter", "WriterStats", "default_spool_dir"]

MiB = 1024 * 1024
LOST_RECORDS_METRIC = sc.METRIC_LEDGER_LOST_RECORDS
"""Observable counter: records the ledger could not write, attribute ``costtrace.reason``."""
LOST_ALERT_KIND: Final = "ledger_records_lost"
"""The alert (and ledger event) kind raised when records are lost."""
RESCAN_S = 5.0
"""How often an idle writer looks for spool files left by dead processes (also at every flush)."""
WRITE_THROUGH_ENV = "COSTTRACE_LEDGER_WRITE_THROUGH"
DROP_LOG_INTERVAL_S = 60.0
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0
_STALE_UNLOCKED_S = 3600.0
"""Without ``flock`` (Windows), another process's spool file is claimed once untouched this long."""

_CALL, _TASK, _EVENT = "call", "task", "event"
_KINDS = (_CALL, _TASK, _EVENT)
Item = tuple[str, Any, Any]
"""(kind, record, ended_at for tasks)."""


@dataclass(frozen=True)
class WriterStats:
    """A snapshot of a writer's counters (since it was created, or since the fork that made this process).

    ``written_*`` count rows committed to the database (directly or replayed from a spool), ``spooled``
    rows written to the spool, ``replayed`` rows committed from a spool, ``dropped`` records lost by
    reason (see the module docstring), ``pending`` records in memory not yet committed or spooled. With
    ``write_through``, every record is spooled, then replayed.
    """

    enqueued: int
    written_calls: int
    written_tasks: int
    written_events: int
    spooled: int
    replayed: int
    dropped: dict[str, int]
    pending: int
    db_available: bool
    spool_bytes: int = 0
    spool_files: tuple[str, ...] = field(default_factory=tuple)
    quarantined: int = 0
    """Rows refused by validation (live or replayed), kept in a ``quarantine-*.jsonl`` file of the spool
    folder for inspection, never written to the ledger (also counted in ``dropped["invalid"]``)."""
    write_through: bool = False
    """Records go to the spool file synchronously before the app's call returns (see the module docstring)."""


_lost_lock = threading.Lock()
_lost_totals: dict[str, int] = {}
"""Records lost by this process since it started (or forked), by reason: the ``costtrace.ledger.lost_records``
counter (kept here, not per writer, so it never goes down when a writer is replaced)."""
_lost_metric_registered = False
_alert_guard = threading.local()
"""Set while this module dispatches a loss alert: the writers skip the alert's own ledger event (each
writer records the losses itself, as a ``ledger_records_lost`` event, once the database takes writes)."""


def _observe_lost(options: CallbackOptions) -> Iterable[Observation]:
    with _lost_lock:
        items = list(_lost_totals.items())
    return [Observation(n, {sc.EVENT_ATTR_REASON: reason}) for reason, n in items]


def _register_lost_metric() -> None:
    global _lost_metric_registered
    with _lost_lock:
        if _lost_metric_registered:
            return
        _lost_metric_registered = True
    from costtrace import _otel

    _otel.meter().create_observable_counter(
        LOST_RECORDS_METRIC,
        callbacks=[_observe_lost],
        unit="{record}",
        description="Ledger records that could not be written (their cost is missing from budgets), by reason.",
    )


def _alert_lost(counts: dict[str, int]) -> None:
    """Deliver a ``ledger_records_lost`` alert through the alert dispatcher (log, span event, callbacks,
    webhooks). Its ledger event is written by the writer instead (see ``_alert_guard``)."""
    from costtrace.spend import alerts

    total = sum(counts.values())
    detail = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
    alert = alerts.Alert(
        kind=LOST_ALERT_KIND,
        rule="costtrace.ledger",
        message=f"costtrace ledger: {total} record(s) could not be written ({detail}); budgets and reports "
        "miss their cost. See docs/ledger.md",
        at=datetime.now(UTC),
    )
    _alert_guard.active = True
    try:
        alerts.default_dispatcher().dispatch(alert)
    finally:
        _alert_guard.active = False


class _DropLog:
    """Counts drops by reason; logs the first at once, then at most one summary line per interval, and
    raises each such line to a ``ledger_records_lost`` alert. ``unrecorded`` holds the counts not yet
    written to the ledger as a ``ledger_records_lost`` event."""

    def __init__(self, interval_s: float = DROP_LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self.totals: dict[str, int] = {}
        self.unrecorded: dict[str, int] = {}
        self._unlogged: dict[str, int] = {}
        self._last_log: float | None = None

    def add(self, reason: str, n: int = 1) -> None:
        if n <= 0:
            return
        with _lost_lock:
            _lost_totals[reason] = _lost_totals.get(reason, 0) + n
        with self._lock:
            self.totals[reason] = self.totals.get(reason, 0) + n
            self.unrecorded[reason] = self.unrecorded.get(reason, 0) + n
            self._unlogged[reason] = self._unlogged.get(reason, 0) + n
            now = time.monotonic()
            if self._last_log is not None and now - self._last_log < self.interval_s:
                return
            self._last_log = now
            pending, self._unlogged = self._unlogged, {}
        self._emit(pending, alert=True)

    def take_unrecorded(self) -> dict[str, int]:
        with self._lock:
            taken, self.unrecorded = self.unrecorded, {}
        return taken

    def give_back(self, counts: dict[str, int]) -> None:
        """The ``ledger_records_lost`` event could not be written: keep its counts for the next try."""
        with self._lock:
            for reason, n in counts.items():
                self.unrecorded[reason] = self.unrecorded.get(reason, 0) + n

    def flush_log(self) -> None:
        """Log what was dropped since the last line (at close)."""
        with self._lock:
            pending, self._unlogged = self._unlogged, {}
        if pending:
            self._emit(pending)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.totals)

    def _emit(self, counts: dict[str, int], *, alert: bool = False) -> None:
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
        logger.warning(
            "costtrace ledger: dropped %d record(s) (%s); at most one such line per %.0f s",
            sum(counts.values()),
            detail,
            self.interval_s,
        )
        if not alert or getattr(_alert_guard, "active", False):
            return
        try:
            _register_lost_metric()
            _alert_lost(counts)
        except Exception as exc:
            _report("ledger.writer.alert", exc)


def _report(where: str, exc: BaseException) -> None:
    """report_internal_error for the writer thread: under the test suite it re-raises, which must not
    kill the thread (tests read ``internal_error_counts()`` and the stats instead)."""
    try:
        report_internal_error(where, exc)
    except BaseException:
        pass


def _report_db(where: str, exc: BaseException) -> None:
    """Report a database error without its SQL or parameters (SQLAlchemy puts the row's values in its
    message): the log names the error's type and the driver's first line only."""
    _report(where, _DatabaseError(_describe(exc)))


class _DatabaseError(Exception):
    """A database error, described without data (see :func:`_describe`)."""


def _describe(exc: BaseException) -> str:
    """A short, data-free description of a database error (no SQL, no parameters, no URL password)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}"


def _is_unavailable(exc: BaseException) -> bool:
    """The database can't take writes now (down, locked, no tables): spool and retry, never drop."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError):
        return not isinstance(exc, (sa_exc.IntegrityError, sa_exc.DataError, sa_exc.NotSupportedError))
    return isinstance(exc, (sa_exc.DisconnectionError, sa_exc.TimeoutError, OSError))


def default_spool_dir(engine: Engine) -> Path:
    """Where ``engine``'s writers spool by default (see the module docstring)."""
    from costtrace.spend.engine import safe_url

    url = engine.url
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database and database != ":memory:" and not database.startswith("file:"):
        db = Path(database).expanduser().resolve()
        return db.with_name(db.name + ".spool")
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    digest = hashlib.sha256(safe_url(url).encode()).hexdigest()[:16]
    return Path(base) / "costtrace" / "spool" / digest


class _SpoolFile:
    """One append-only spool file, held under an exclusive ``flock`` while open."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self.bad_reported = 0
        """Lines before this one whose problems were already counted (a replay retried after an outage)."""

    @classmethod
    def create(cls, directory: Path, prefix: str = "spool") -> _SpoolFile:
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{prefix}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        # Locked under a name no claimer looks at, then renamed: another writer scanning the folder
        # never sees the file between its creation and its lock (and would otherwise claim it).
        new = directory / f".new-{name}"
        fd = os.open(new, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if _flock is not None:
                _flock(fd, _LOCK_NOW)
            path = directory / name
            os.rename(new, path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                new.unlink()
            raise
        return cls(path, fd)

    def append(self, data: bytes, *, sync: bool = True) -> None:
        """Append ``data``; ``sync=False`` (write-through records) leaves it in the page cache, which a
        killed process does not lose (only a machine crash would)."""
        view = memoryview(data)
        try:
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
        except OSError:
            if len(view) < len(data):  # a short write (disk full): take the partial lines back out, so
                with contextlib.suppress(OSError):  # a record is either spooled or counted lost, never both
                    os.ftruncate(self.fd, self.size)
            raise
        self.size += len(data)
        if sync:
            os.fsync(self.fd)

    def truncate(self) -> None:
        os.ftruncate(self.fd, 0)
        os.fsync(self.fd)
        self.size = 0

    def close(self, *, remove: bool = False) -> None:
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self.fd)  # releases the lock

    def abandon(self) -> None:
        """In a forked child: drop this (inherited) descriptor without unlocking the parent's file."""
        with contextlib.suppress(OSError):
            os.close(self.fd)  # flock is shared with the parent's descriptor; closing ours keeps it


def _claim(path: Path) -> _SpoolFile | None:
    """Take over a left-over spool file whose owner is gone (atomic rename under its lock)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
    except OSError:
        return None  # claimed (renamed) or deleted by someone else meanwhile
    try:
        if _flock is not None:
            try:
                _flock(fd, _LOCK_NOW)
            except OSError:
                os.close(fd)
                return None  # its writer (or another replayer) is alive
        elif time.time() - os.fstat(fd).st_mtime < _STALE_UNLOCKED_S:  # pragma: no cover - Windows
            os.close(fd)
            return None
        claimed = path.with_name(f"claimed-{os.getpid()}-{secrets.token_hex(4)}.jsonl")
        os.rename(path, claimed)  # fails if another process renamed it between our open and our lock
    except OSError:
        os.close(fd)
        return None
    return _SpoolFile(claimed, fd)


@dataclass
class _Bad:
    """Spool lines that are not rows: unreadable (cut short by a crash) or refused by validation."""

    corrupt: list[tuple[int, bytes]] = field(default_factory=list)
    """(line number, line)."""
    invalid: list[tuple[int, bytes, str]] = field(default_factory=list)
    """(line number, line, reason); the reason names a column, never a value."""
    next_line: int = 0
    """The number of the first line after this batch."""


def _parse_line(line: bytes) -> tuple[str, store.Row] | str | None:
    """A spool line as (kind, row); a validation reason (str) for a bad row; None if unreadable."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("r"), dict) or entry.get("t") not in _KINDS:
        return None
    kind = entry["t"]
    row = store.row_from_json(entry["r"])
    reason = store.validate_row(kind, row)
    return reason if reason is not None else (kind, row)


def _add_row(batch: store.Batch, kind: str, row: store.Row) -> None:
    if kind == _CALL:
        batch.calls.append(row)
    elif kind == _TASK:
        batch.tasks.append(row)
    else:
        batch.events.append(row)
        if row["kind"] == "outcome_updated":
            batch.outcome_updates.append(row)


def _read_batches(path: Path, batch_size: int) -> Iterator[tuple[store.Batch, _Bad]]:
    """The spool's valid rows in order, ``batch_size`` rows at a time, with the lines that are not."""
    batch, bad = store.Batch([], [], [], []), _Bad()
    with open(path, "rb") as fh:
        for i, line in enumerate(fh):
            bad.next_line = i + 1
            parsed = _parse_line(line)
            if parsed is None:
                bad.corrupt.append((i, line))
                continue
            if isinstance(parsed, str):
                bad.invalid.append((i, line, parsed))
                continue
            _add_row(batch, *parsed)
            if len(batch) >= batch_size:
                yield batch, bad
                batch, bad = store.Batch([], [], [], []), _Bad(next_line=i + 1)
    if len(batch) or bad.corrupt or bad.invalid:
        yield batch, bad


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_ENCODER = json.JSONEncoder(default=_iso)
"""Spool lines: the same text as ``json.dumps`` of :func:`store.row_to_json`, without the copy."""


def _spool_line(kind: str, row: store.Row) -> bytes:
    return (_ENCODER.encode({"t": kind, "r": row}) + "\n").encode()


def _spool_lines(batch: store.Batch) -> list[bytes]:
    lines = [_spool_line(_CALL, r) for r in batch.calls]
    lines += [_spool_line(_TASK, r) for r in batch.tasks]
    lines += [_spool_line(_EVENT, r) for r in batch.events]
    return lines


_MAX_RESERVED_IDS = 100_000
_ABSENT = object()
_forked_since_import = False
"""Set in a child forked after this module was imported (gunicorn --preload, Celery prefork, fork pools)."""


def _in_worker_process() -> bool:
    """A process some master may terminate or recycle at any moment: its records are written through."""
    if _forked_since_import:
        return True
    mp = sys.modules.get("multiprocessing")
    if mp is not None:
        try:
            if mp.parent_process() is not None or mp.current_process().name != "MainProcess":
                return True  # fork, spawn and forkserver children; spawn children during their imports too
        except Exception:  # pragma: no cover - multiprocessing half-imported
            pass
    billiard = sys.modules.get("billiard.process")  # Celery's prefork pool
    if billiard is not None:
        try:
            if billiard.current_process().name != "MainProcess":
                return True
        except Exception:  # pragma: no cover
            pass
    return "gunicorn.arbiter" in sys.modules  # a gunicorn worker (its master records nothing itself)


def _spend_nano(budget: Budget, record: CallRecord) -> int:
    """What ``record`` will add to ``budget`` once written (as :func:`store.budget_spend_for_call`)."""
    cost = record.cost.total_usd
    if cost is not None:
        return to_nano(cost) or 0
    fb = budget.fallback_price
    if fb is not None and record.usage.source != "unknown" and not isinstance(fb, tuple):
        return to_nano(fb.cost_usd(record.usage.input_tokens, record.usage.output_tokens)) or 0
    return 0


_writers: weakref.WeakSet[LedgerWriter] = weakref.WeakSet()
_atexit_registered = False
_mp_finalizer_pid: int | None = None


class LedgerWriter:
    """The per-process background writer of the ledger, and a records listener.

    Args:
        engine: The ledger's engine (:func:`costtrace.spend.engine.make_engine`), already migrated.
        budgets: Returns the budgets whose spend each committed call adds to (called per batch).
        spool_path: The folder of the spool files (default: :func:`default_spool_dir`).
        max_queue: Records kept in memory at most; beyond, new records are dropped and counted.
        batch_size: Records per transaction at most.
        flush_interval_s: A record waits at most about this long before its batch is written.
        max_spool_bytes: Size of this writer's spool file at most; beyond, batches are dropped and counted.
        on_committed: Called on the writer's thread with the budget periods each commit changed.
        close_timeout_s: What ``close()`` at interpreter exit may take at most.
        close_at_exit: Register ``close`` with ``atexit`` (and ``multiprocessing``'s finalizers).
        write_through: Write each record to the spool file before returning to the app (see the module
            docstring). None (default): ``COSTTRACE_LEDGER_WRITE_THROUGH`` if set, else on in worker
            processes (multiprocessing and billiard children, gunicorn, any process forked after import).

    Example:
        >>> w = LedgerWriter(engine, budgets=lambda: my_budgets)     # doctest: +SKIP
        >>> costtrace.records.add_listener(w)
    """

    def __init__(
        self,
        engine: Engine,
        *,
        budgets: Callable[[], Sequence[Budget]] = lambda: (),
        spool_path: str | Path | None = None,
        max_queue: int = 100_000,
        batch_size: int = 1000,
        flush_interval_s: float = 0.2,
        max_spool_bytes: int = 256 * MiB,
        on_committed: Callable[[list[store.Touched]], None] | None = None,
        close_timeout_s: float = 5.0,
        close_at_exit: bool = True,
        write_through: bool | None = None,
    ) -> None:
        from costtrace.errors import ConfigError

        for name, value in (("max_queue", max_queue), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"LedgerWriter {name}={value!r}: use a positive integer")
        if flush_interval_s <= 0 or close_timeout_s < 0 or max_spool_bytes < 0:
            raise ConfigError(
                f"LedgerWriter flush_interval_s={flush_interval_s!r}, close_timeout_s={close_timeout_s!r}, "
                f"max_spool_bytes={max_spool_bytes!r}: use a positive interval and non-negative limits"
            )
        self._engine = engine
        self._budgets = budgets
        self._spool_dir = Path(spool_path) if spool_path is not None else default_spool_dir(engine)
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._max_spool_bytes = max_spool_bytes
        self._on_committed = on_committed
        self.close_timeout_s = close_timeout_s
        self._close_at_exit = close_at_exit
        self._write_through_setting = write_through
        self._enforcing: tuple[Budget, ...] = ()
        self._forked = False
        self._init_state()
        _writers.add(self)

    def _init_state(self) -> None:
        """Everything that a forked child must not share with its parent."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the thread waits for records here
        self._done = threading.Condition(self._lock)  # flush() waits for progress here
        self._queue: deque[Item] = deque()
        self._enqueued = 0
        self._processed = 0  # records committed, spooled or dropped by the thread, in queue order
        self._inflight: list[Item] = []
        self._flush_requests = 0
        self._stopping = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._drops = _DropLog()
        self._written = {_CALL: 0, _TASK: 0, _EVENT: 0}
        self._spooled = 0
        self._replayed = 0
        self._db_available = True
        self._retry_at = 0.0
        self._backoff_s = RETRY_INITIAL_S
        self._down_logged_at: float | None = None
        self._spool: _SpoolFile | None = None
        self._claimed: list[_SpoolFile] = []
        self._emergency: list[_SpoolFile] = []
        self._last_budgets: Sequence[Budget] = ()
        # Write-through (worker processes): records appended to _wt_file by the app's threads; the
        # writer thread moves a full file to _claimed (one at a time: _wt_rotated) and replays it.
        self._wt: bool | None = None  # decided at the first record of this process
        self._wt_file: _SpoolFile | None = None
        self._wt_rotated: _SpoolFile | None = None
        self._wt_pending = 0
        self._quarantine_lock = threading.Lock()
        self._quarantine_file: _SpoolFile | None = None
        self._quarantined = 0
        self._quarantine_logged_at: float | None = None
        self._rescan = False
        self._last_scan = time.monotonic()
        self._scans_started = 0  # rescans for left-over spool files the writer thread began ...
        self._scans_done = 0  # ... and finished (claimed and replay tried): flush() waits for its own
        # Spend recorded here but not yet in the database, per hard-capped budget and period (admission).
        self._pending_lock = threading.Lock()
        self._pending_calls: dict[str, list[tuple[str, datetime, int]]] = {}
        self._pending_totals: dict[tuple[str, datetime], int] = {}
        self._reserved_ids: dict[str, None] = {}

    def _after_fork_in_child(self) -> None:
        # The parent writes what it queued; our copies of its spool descriptors must not unlock its files.
        for f in (self._spool, self._wt_file, self._quarantine_file, *self._claimed, *self._emergency):
            if f is not None:
                f.abandon()
        closed = self._closed
        self._init_state()
        self._closed = self._stopping = closed
        self._forked = True

    # --- the app's side: O(1), never raises, never blocks ------------------------------------------

    def on_call(self, record: CallRecord) -> None:
        if self._enforcing:
            self._track_pending(record)
        self._put((_CALL, record, None))

    def on_task(self, summary: TaskSummary) -> None:
        self._put((_TASK, summary, datetime.now(UTC)))

    def on_event(self, event: TaskEvent) -> None:
        if getattr(_alert_guard, "active", False) and event.reason == LOST_ALERT_KIND:
            return  # a ledger_records_lost alert's own event: _record_losses writes it, with exact counts
        self._put((_EVENT, event, None))

    def _put(self, item: Item) -> None:
        try:
            wt = self._wt
            if wt is None:
                wt = self._decide_write_through()
            if wt:
                self._put_through(item)
                return
            needs_thread = False
            with self._lock:
                if self._stopping or len(self._queue) >= self._max_queue:
                    full = True
                else:
                    full = False
                    self._queue.append(item)
                    self._enqueued += 1
                    n = len(self._queue)
                    if n == 1 or n == self._batch_size:
                        self._work.notify()
                    needs_thread = self._thread is None
            if full:
                self._lost_on_put(item, "queue_full" if not self._stopping else "closed")
            elif needs_thread:
                self._start_thread()
        except Exception as exc:
            report_internal_error("ledger.writer.enqueue", exc)

    def _lost_on_put(self, item: Item, reason: str) -> None:
        if item[0] == _CALL:
            self._settle_pending([item[1].call_id])
        self._drops.add(reason)

    def _decide_write_through(self) -> bool:
        setting = self._write_through_setting
        if setting is None:
            env = os.environ.get(WRITE_THROUGH_ENV, "").strip().lower()
            if env in ("1", "true", "yes", "on"):
                setting = True
            elif env in ("0", "false", "no", "off"):
                setting = False
        if setting is None:
            setting = self._forked or _in_worker_process()
        self._wt = setting
        return setting

    def _put_through(self, item: Item) -> None:
        """Write-through: the record is in the spool file (page cache) when this returns, so a worker
        terminated right after (``Pool.__exit__``, a recycled worker) loses nothing; the writer thread
        or, if this process dies first, the next writer on the folder moves it to the database."""
        kind, obj, ended_at = item
        row = self._row(kind, obj, ended_at, validate=False)  # validated once, when read back from the spool
        if row is None:
            if kind == _CALL:
                self._settle_pending([obj.call_id])
            return
        line = _spool_line(kind, row)
        lost: str | None = None
        error: BaseException | None = None
        needs_thread = False
        with self._lock:
            if self._stopping:
                lost = "closed"
            else:
                try:
                    f = self._wt_file
                    if f is None:
                        f = self._wt_file = _SpoolFile.create(self._spool_dir)
                    if f.size + len(line) > self._max_spool_bytes:
                        lost = "spool_full"
                    else:
                        f.append(line, sync=False)
                        self._enqueued += 1
                        self._spooled += 1
                        self._wt_pending += 1
                        if self._wt_pending == 1 or self._wt_pending == self._batch_size:
                            self._work.notify()
                        needs_thread = self._thread is None
                except OSError as exc:
                    lost, error = "spool_error", exc
        if lost is not None:
            self._lost_on_put(item, lost)
            if error is not None:
                _report("ledger.writer.spool", error)
        elif needs_thread:
            self._start_thread()

    # --- spend not yet written, for admission ----------------------------------------------------------

    def set_enforcing(self, budgets: Sequence[Budget]) -> None:
        """The hard-capped budgets whose spend recorded here but not yet written :meth:`pending_nano` reports."""
        self._enforcing = tuple(b for b in budgets if b.enforcing)

    def note_reserved(self, call_id: str) -> None:
        """This call holds a reservation in the database until its row is written: not pending spend."""
        with self._pending_lock:
            self._reserved_ids[call_id] = None
            if len(self._reserved_ids) > _MAX_RESERVED_IDS:  # calls reserved but never recorded
                del self._reserved_ids[next(iter(self._reserved_ids))]

    def forget_reserved(self, call_id: str) -> None:
        """This call's reservation was released without a row (its request was never sent)."""
        with self._pending_lock:
            self._reserved_ids.pop(call_id, None)

    def pending_nano(self, budgets: Iterable[Budget], at: datetime) -> dict[str, int]:
        """Spend this process recorded (unreserved calls: ``record_llm_call``, fail-open calls) that is
        queued or spooled but not yet in the database, per budget, in the window counting at ``at``."""
        with self._pending_lock:
            if not self._pending_totals:
                return {}
            items = list(self._pending_totals.items())
        out: dict[str, int] = {}
        try:
            for b in budgets:
                first, (start, _) = b.window_start(at), b.bucket(at)
                n = sum(v for (name, period), v in items if name == b.name and first <= period <= start)
                if n:
                    out[b.name] = n
        except Exception as exc:
            report_internal_error("ledger.writer.pending_nano", exc)
        return out

    def _track_pending(self, record: CallRecord) -> None:
        try:
            with self._pending_lock:
                if self._reserved_ids.pop(record.call_id, _ABSENT) is None:
                    return
            amounts: list[tuple[str, datetime, int]] = []
            for b in self._enforcing:
                if b.matches(record.dimensions, task_name=record.task_name, provider=record.provider,
                             model=record.request_model):  # fmt: skip
                    nano = _spend_nano(b, record)
                    if nano:
                        amounts.append((b.name, b.bucket(record.start_time)[0], nano))
            if amounts:
                with self._pending_lock:
                    self._pending_calls[record.call_id] = amounts
                    for name, period, nano in amounts:
                        self._pending_totals[(name, period)] = self._pending_totals.get((name, period), 0) + nano
        except Exception as exc:
            report_internal_error("ledger.writer.pending", exc)

    def _settle_pending(self, call_ids: Iterable[str]) -> None:
        """These calls are written (their spend is in the database now) or lost."""
        if not self._pending_calls:
            return
        with self._pending_lock:
            for call_id in call_ids:
                for name, period, nano in self._pending_calls.pop(call_id, ()):
                    left = self._pending_totals.get((name, period), 0) - nano
                    if left > 0:
                        self._pending_totals[(name, period)] = left
                    else:
                        self._pending_totals.pop((name, period), None)

    def start(self) -> None:
        """Start the background thread now (it otherwise starts with the first record)."""
        try:
            self._start_thread()
        except Exception as exc:
            report_internal_error("ledger.writer.start", exc)

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopping:
                return
            thread = self._thread = threading.Thread(target=self._run, name="costtrace-ledger-writer", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            # Interpreter shutting down: close() writes the queue on the closing thread instead.
            with self._lock:
                self._thread = None
            raise
        if self._close_at_exit:
            _register_exit_hooks()

    # --- flush, close, stats -------------------------------------------------------------------------

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every record enqueued before this call is committed or spooled.

        Returns False if that did not happen within ``timeout_s`` (the records stay queued). Thread-safe.
        """
        try:
            deadline = time.monotonic() + max(0.0, timeout_s)
            # Spool files of other processes (pool workers write through to theirs): replay what dead ones
            # left, so that what the app's workers recorded before this call is written too.
            leftovers = bool(self._leftover_paths())
            with self._lock:
                target = self._enqueued
                if leftovers:
                    self._rescan = True
                    scan = self._scans_started + 1
                else:
                    scan = 0
                if self._processed >= target and self._scans_done >= scan:
                    return True
                if self._thread is not None:
                    self._work.notify()
                start = self._thread is None
            if start:
                self._start_thread()
            with self._lock:
                if self._thread is None or threading.current_thread() is self._thread:
                    return self._processed >= target  # nothing would progress while we wait on ourselves
                self._flush_requests += 1
                self._work.notify()
                try:
                    while self._processed < target or self._scans_done < scan:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return False
                        self._done.wait(remaining)
                    return True
                finally:
                    self._flush_requests -= 1
        except Exception as exc:
            report_internal_error("ledger.writer.flush", exc)
            return False

    def close(self, timeout_s: float | None = None) -> bool:
        """Flush, stop the thread, release the spool. Idempotent; returns False if anything was left
        to the spool by the closing thread or the thread did not stop within ``timeout_s``."""
        try:
            return self._close(self.close_timeout_s if timeout_s is None else timeout_s)
        except Exception as exc:
            report_internal_error("ledger.writer.close", exc)
            return False

    def _close(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout_s)
        margin = min(0.5, timeout_s / 4)  # kept for spooling what the thread could not write in time
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            thread = self._thread
        on_thread = thread is threading.current_thread()
        if thread is not None and thread.is_alive() and not on_thread:
            self.flush(deadline - margin - time.monotonic())
        with self._lock:
            self._stopping = True
            self._work.notify_all()
        if thread is not None and not on_thread:
            thread.join(max(0.0, deadline - margin - time.monotonic()))
        with self._lock:
            alive = thread is not None and thread.is_alive()
            # A thread still alive is stuck in the database: its batch is spooled here too (idempotent).
            leftovers = [*self._inflight, *self._queue]
            self._inflight = []
            self._queue.clear()
            self._processed = self._enqueued
            self._done.notify_all()
        ok = self._spool_on_closing_thread(leftovers) if leftovers else True
        if not alive:
            self._release_files()
        else:
            for f in self._emergency:
                f.close()
        self._drops.flush_log()
        return ok

    def _spool_on_closing_thread(self, items: list[Item]) -> bool:
        """The last resort at close: spool to a file of our own (the writer thread may hold its spool)
        rather than wait for a database that did not answer in time."""
        batch = self._build(items)
        lines = _spool_lines(batch)
        try:
            spool = _SpoolFile.create(self._spool_dir)
            self._emergency.append(spool)
            spool.append(b"".join(lines))
        except Exception as exc:
            self._drops.add("spool_error", len(lines))
            _report("ledger.writer.spool", exc)
            return False
        with self._lock:
            self._spooled += len(lines)
        return True

    def _release_files(self) -> None:
        for f in self._emergency:
            f.close()
        self._emergency = []
        for f in self._claimed:
            f.close()  # not replayed: the next writer claims it again
        self._claimed = []
        self._wt_rotated = None
        for own in (self._spool, self._wt_file, self._quarantine_file):
            if own is not None:
                own.close(remove=own.size == 0)
        self._spool = self._wt_file = self._quarantine_file = None

    def stats(self) -> WriterStats:
        with self._lock:
            files = [f for f in (self._spool, self._wt_file, *self._claimed, *self._emergency) if f is not None]
            return WriterStats(
                enqueued=self._enqueued,
                written_calls=self._written[_CALL],
                written_tasks=self._written[_TASK],
                written_events=self._written[_EVENT],
                spooled=self._spooled,
                replayed=self._replayed,
                dropped=self._drops.snapshot(),
                pending=len(self._queue) + len(self._inflight),
                db_available=self._db_available,
                spool_bytes=sum(f.size for f in files),
                spool_files=tuple(str(f.path) for f in files if f.size),
                quarantined=self._quarantined,
                write_through=bool(self._wt),
            )

    @property
    def spool_dir(self) -> Path:
        return self._spool_dir

    # --- the writer thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._claim_leftovers()
        except Exception as exc:
            _report("ledger.writer.claim", exc)
        while True:
            try:
                if not self._step():
                    return
            except Exception as exc:  # pragma: no cover - _step guards its parts; this keeps the thread alive
                _report("ledger.writer.loop", exc)
                time.sleep(0.05)

    def _step(self) -> bool:
        """One round: wait for records, write one batch. False when the writer stops."""
        with self._lock:
            if not self._queue and not self._wt_pending and not self._stopping and not self._rescan:
                self._work.wait(self._idle_timeout())
            waiting = len(self._queue) + self._wt_pending
            if 0 < waiting < self._batch_size and not self._stopping and not self._flush_requests:
                self._work.wait(self._flush_interval_s)  # let a batch fill; a full batch or flush() wakes us
            n = min(len(self._queue), self._batch_size)
            items = [self._queue.popleft() for _ in range(n)]
            self._inflight = items
            wt_done, self._wt_pending = self._wt_pending, 0  # on disk already: done once replay was tried
            if self._wt_file is not None and self._wt_file.size and self._wt_rotated is None:
                self._wt_rotated, self._wt_file = self._wt_file, None
                self._claimed.append(self._wt_rotated)
            rescan = self._rescan or time.monotonic() - self._last_scan >= RESCAN_S
            self._rescan = False
            if rescan:
                self._scans_started += 1
            scan = self._scans_started
            stopping = self._stopping
        try:
            if rescan:
                self._claim_leftovers()
        except Exception as exc:
            _report("ledger.writer.claim", exc)
        try:
            if self._has_spool() and time.monotonic() >= self._retry_at:
                self._replay()
        except Exception as exc:
            self._retry_at = time.monotonic() + RETRY_MAX_S
            _report("ledger.writer.replay", exc)
        try:
            if items:
                self._write(self._build(items))
            self._record_losses()  # before flush() is told these records are done: it then sees the event
        except Exception as exc:  # pragma: no cover - _write and _record_losses guard their parts
            self._drops.add("internal_error", len(items))
            _report("ledger.writer.write", exc)
        finally:
            with self._lock:
                if self._inflight is items:  # else close() took them over
                    self._inflight = []
                    self._processed += len(items)
                self._processed += wt_done
                if rescan:
                    self._scans_done = scan
                self._done.notify_all()
                more = bool(self._queue) or self._wt_pending > 0
        return not (stopping and not more)

    def _idle_timeout(self) -> float:
        until_scan = max(0.01, RESCAN_S - (time.monotonic() - self._last_scan))
        if self._has_spool() or self._drops.unrecorded:
            return max(0.01, min(until_scan, self._retry_at - time.monotonic()))
        return until_scan

    def _has_spool(self) -> bool:
        return (
            bool(self._claimed)
            or (self._spool is not None and self._spool.size > 0)
            or (self._wt_file is not None and self._wt_file.size > 0)
        )

    def _record_losses(self) -> None:
        """Write what was lost so far as a ``ledger_records_lost`` event, once the database takes writes."""
        if not self._drops.unrecorded or (not self._db_available and time.monotonic() < self._retry_at):
            return
        from costtrace.records import new_event_id

        counts = self._drops.take_unrecorded()
        if not counts:
            return
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
        row = store.event_row(
            event_id=new_event_id(),
            task_id=None,
            kind=LOST_ALERT_KIND,
            at=datetime.now(UTC),
            reason=f"{sum(counts.values())} record(s) could not be written ({detail})",
            data={"lost": counts, "pid": os.getpid()},
        )
        try:
            store.write_batch(self._engine, store.Batch([], [], [row], []), ())
        except Exception as exc:
            self._drops.give_back(counts)
            if _is_unavailable(exc):
                self._mark_down(exc)
            else:
                self._retry_at = time.monotonic() + RETRY_MAX_S
                _report_db("ledger.writer.losses", exc)
            return
        self._mark_up()
        with self._lock:
            self._written[_EVENT] += 1

    def _current_budgets(self) -> Sequence[Budget]:
        try:
            self._last_budgets = tuple(self._budgets())
        except Exception as exc:
            _report("ledger.writer.budgets", exc)
        return self._last_budgets

    def _build(self, items: list[Item]) -> store.Batch:
        batch = store.Batch([], [], [], [])
        for kind, obj, ended_at in items:
            row = self._row(kind, obj, ended_at)
            if row is not None:
                _add_row(batch, kind, row)
            elif kind == _CALL:
                self._settle_pending([obj.call_id])
        return batch

    def _row(self, kind: str, obj: Any, ended_at: Any, *, validate: bool = True) -> store.Row | None:
        """A record's row, checked by the same :func:`store.validate_row` as replayed spool lines; None
        (counted ``invalid``, the row put in quarantine) when it can't be built or is refused.
        ``validate=False``: the row goes to the spool, and is checked when it is read back."""
        try:
            if kind == _CALL:
                row = store.call_row(obj)
            elif kind == _TASK:
                row = store.task_row(obj, ended_at)
            else:
                row = store.event_row(
                    event_id=obj.event_id,
                    task_id=obj.task_id,
                    kind=obj.kind,
                    at=obj.at,
                    attempt=obj.attempt,
                    reason=obj.reason,
                    details=obj.details,
                    from_model=obj.from_model,
                    to_model=obj.to_model,
                    outcome=obj.outcome,
                    amount_usd=obj.amount_usd,
                    data=dict(obj.data) if obj.data else None,
                )
        except Exception as exc:
            self._drops.add("invalid")
            _report("ledger.writer.row", exc)
            return None
        reason = store.validate_row(kind, row) if validate else None
        if reason is None:
            return row
        try:
            line = (json.dumps({"t": kind, "r": store.row_to_json(row)}, default=str) + "\n").encode()
        except Exception:  # pragma: no cover - rows hold JSON-safe values
            line = b""
        self._put_aside([line] if line else [], 1, reason, "recorded")
        self._drops.add("invalid")
        return None

    def _put_aside(self, lines: list[bytes], n: int, reason: str, source: str) -> None:
        """Quarantine: keep refused rows in ``quarantine-<pid>-<token>.jsonl`` beside the spool (never
        replayed), bounded like the spool. The log line names the reason (a column), never a value."""
        with self._quarantine_lock:
            self._quarantined += n
            try:
                f = self._quarantine_file
                if f is None:
                    f = self._quarantine_file = _SpoolFile.create(self._spool_dir, prefix="quarantine")
                room, keep = self._max_spool_bytes - f.size, []
                for line in lines:
                    if len(line) > room:
                        break
                    keep.append(line if line.endswith(b"\n") else line + b"\n")
                    room -= len(keep[-1])
                if keep:
                    f.append(b"".join(keep), sync=False)
            except OSError as exc:
                _report("ledger.writer.quarantine", exc)
            now = time.monotonic()
            if self._quarantine_logged_at is not None and now - self._quarantine_logged_at < DROP_LOG_INTERVAL_S:
                return
            self._quarantine_logged_at = now
            where = self._quarantine_file.path if self._quarantine_file is not None else self._spool_dir
        logger.warning(
            "costtrace ledger: %d %s row(s) refused (%s); kept in %s, not written; at most one such line per %.0f s",
            n,
            source,
            reason,
            where,
            DROP_LOG_INTERVAL_S,
        )

    def _write(self, batch: store.Batch) -> None:
        if not len(batch):
            return
        # Keep the order (nothing new is committed before the spool is replayed) and the backoff.
        wait = self._has_spool() or (not self._db_available and time.monotonic() < self._retry_at)
        if wait or not self._commit(batch, replay=False):
            self._to_spool(batch)

    def _commit(self, batch: store.Batch, *, replay: bool) -> bool:
        """Commit one batch; False if the database is unavailable (nothing lost: the caller spools)."""
        try:
            touched = store.write_batch(self._engine, batch, self._current_budgets())
        except Exception as exc:
            if _is_unavailable(exc):
                self._mark_down(exc)
                return False
            _report_db("ledger.writer.write_batch", exc)
            return self._commit_singly(batch, replay=replay)
        self._mark_up()
        self._count_written(batch, replay=replay)
        self._committed(touched)
        return True

    def _commit_singly(self, batch: store.Batch, *, replay: bool) -> bool:
        """The database refused the batch but is up: write row by row, so one bad row costs one row."""
        singles = [store.Batch([r], [], [], []) for r in batch.calls]
        singles += [store.Batch([], [r], [], []) for r in batch.tasks]
        outcome_rows = {id(r) for r in batch.outcome_updates}
        singles += [store.Batch([], [], [r], [r] if id(r) in outcome_rows else []) for r in batch.events]
        for i, single in enumerate(singles):
            try:
                touched = store.write_batch(self._engine, single, self._current_budgets())
            except Exception as exc:
                if _is_unavailable(exc):
                    self._mark_down(exc)
                    rest = store.Batch([], [], [], [])
                    for b in singles[i:]:
                        rest.calls += b.calls
                        rest.tasks += b.tasks
                        rest.events += b.events
                        rest.outcome_updates += b.outcome_updates
                    if replay:
                        return False  # the replay stops here and is retried later, whole
                    self._to_spool(rest)
                    return True
                self._settle_pending(r["call_id"] for r in single.calls)
                self._drops.add("rejected")
                _report_db("ledger.writer.rejected", exc)
                continue
            self._count_written(single, replay=replay)
            self._committed(touched)
        return True

    def _count_written(self, batch: store.Batch, *, replay: bool) -> None:
        self._settle_pending(r["call_id"] for r in batch.calls)
        with self._lock:
            self._written[_CALL] += len(batch.calls)
            self._written[_TASK] += len(batch.tasks)
            self._written[_EVENT] += len(batch.events)
            if replay:
                self._replayed += len(batch)

    def _committed(self, touched: list[store.Touched]) -> None:
        if self._on_committed is None:
            return
        try:
            self._on_committed(touched)
        except Exception as exc:
            _report("ledger.writer.on_committed", exc)

    def _mark_down(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._db_available:
            self._backoff_s = RETRY_INITIAL_S
        else:
            self._backoff_s = min(RETRY_MAX_S, self._backoff_s * 2)
        self._db_available = False
        self._retry_at = now + self._backoff_s
        if self._down_logged_at is None or now - self._down_logged_at >= DROP_LOG_INTERVAL_S:
            self._down_logged_at = now
            logger.warning(
                "costtrace ledger: database unavailable (%s); spooling records to %s and retrying",
                _describe(exc),
                self._spool_dir,
            )

    def _mark_up(self) -> None:
        if not self._db_available:
            logger.info("costtrace ledger: database available again; replaying the spool")
        self._db_available = True
        self._backoff_s = RETRY_INITIAL_S

    def _to_spool(self, batch: store.Batch) -> None:
        lines = _spool_lines(batch)
        try:
            if self._spool is None:
                self._spool = _SpoolFile.create(self._spool_dir)
            room = self._max_spool_bytes - self._spool.size
            keep: list[bytes] = []
            for line in lines:
                if len(line) > room:
                    break
                keep.append(line)
                room -= len(line)
            if keep:
                self._spool.append(b"".join(keep))
            with self._lock:
                self._spooled += len(keep)
            if len(keep) < len(lines):
                self._settle_pending(r["call_id"] for r in batch.calls[len(keep) :])  # calls come first
                self._drops.add("spool_full", len(lines) - len(keep))
        except Exception as exc:
            self._settle_pending(r["call_id"] for r in batch.calls)
            self._drops.add("spool_error", len(lines))
            _report("ledger.writer.spool", exc)

    def _put_aside_bad(self, f: _SpoolFile, bad: _Bad) -> None:
        new_corrupt = [line for i, line in bad.corrupt if i >= f.bad_reported]
        if new_corrupt:
            self._drops.add("spool_corrupt", len(new_corrupt))
            self._put_aside(new_corrupt, len(new_corrupt), "unreadable line", "spooled")
        by_reason: dict[str, list[bytes]] = {}
        for i, line, reason in bad.invalid:
            if i >= f.bad_reported:
                by_reason.setdefault(reason, []).append(line)
        for reason, lines in sorted(by_reason.items()):
            self._drops.add("invalid", len(lines))
            self._put_aside(lines, len(lines), reason, "spooled")
        f.bad_reported = max(f.bad_reported, bad.next_line)

    def _leftover_paths(self) -> list[Path]:
        """Spool files in the spool folder that are not this writer's own (another process's, live or dead)."""
        try:
            names = sorted(os.listdir(self._spool_dir))
        except FileNotFoundError:
            return []
        mine = {
            str(f.path)
            for f in (self._spool, self._wt_file, self._quarantine_file, *self._claimed, *self._emergency)
            if f is not None
        }
        paths = (self._spool_dir / n for n in names if n.endswith(".jsonl") and n.startswith(("spool-", "claimed-")))
        return [p for p in paths if str(p) not in mine]

    def _claim_leftovers(self) -> None:
        try:
            leftovers = self._leftover_paths()
        finally:
            self._last_scan = time.monotonic()
        for path in leftovers:
            claimed = _claim(path)
            if claimed is not None:
                self._claimed.append(claimed)
        if self._claimed:
            self._retry_at = 0.0

    def _replay(self) -> None:
        """Replay claimed files, then our own spool, in order; stop at the first unavailable commit."""
        for f in list(self._claimed):
            if not self._replay_file(f):
                return
            with self._lock:
                self._claimed.remove(f)
                if f is self._wt_rotated:
                    self._wt_rotated = None
            f.close(remove=True)
        if self._spool is not None and self._spool.size and self._replay_file(self._spool):
            self._spool.truncate()
            self._spool.bad_reported = 0

    def _replay_file(self, f: _SpoolFile) -> bool:
        """Replay one file; bad lines are counted and put aside once, even if the replay is retried."""
        try:
            for batch, bad in _read_batches(f.path, self._batch_size):
                self._put_aside_bad(f, bad)
                if len(batch) and not self._commit(batch, replay=True):
                    return False
        except OSError as exc:
            _report("ledger.writer.replay", exc)
            self._retry_at = time.monotonic() + RETRY_MAX_S
            return False
        return True


def _register_exit_hooks() -> None:
    """Close every writer at interpreter exit, and at a multiprocessing child's exit: ``fork`` children
    leave with ``os._exit``, skipping ``atexit``, but run multiprocessing's finalizers."""
    global _atexit_registered, _mp_finalizer_pid
    if not _atexit_registered:  # inherited by forked children along with the atexit table
        _atexit_registered = True
        atexit.register(_close_all_at_exit)
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None and _mp_finalizer_pid != os.getpid():  # a child's registry starts empty
        _mp_finalizer_pid = os.getpid()
        mp_util.Finalize(None, _close_all_at_exit, exitpriority=100)


def _close_all_at_exit() -> None:
    for writer in list(_writers):
        if writer._close_at_exit:
            try:
                writer.close()
            except BaseException:  # pragma: no cover - close() never raises outside the test suite
                pass


def _after_fork_in_child() -> None:
    global _forked_since_import, _lost_lock
    _forked_since_import = True
    _lost_lock = threading.Lock()  # another thread of the parent may have held it at the fork
    _lost_totals.clear()  # the parent reports its own
    for writer in list(_writers):
        try:
            writer._after_fork_in_child()
        except Exception:  # pragma: no cover - resetting plain attributes does not fail
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
