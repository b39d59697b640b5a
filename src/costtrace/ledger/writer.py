"""The ledger's background writer: one per process, off the hot path, durable through database outages.

How a record travels
    ``on_call`` / ``on_task`` / ``on_event`` run on the app's thread. They append the raw record (and,
    for a task, the time it ended) to a bounded in-memory queue and return: O(1), no I/O, no conversion,
    a lock held for a few instructions, never an exception. One daemon thread per process (started with
    the first record) turns records into rows (:mod:`costtrace.ledger.store`), commits them in batches
    (``batch_size`` records, or what arrived within ``flush_interval_s``) with :func:`store.write_batch`,
    which is idempotent (every row carries its own key), then calls ``on_committed(touched)``.

Drops, always counted (``stats().dropped``) and logged at most once a minute with the count
    ``queue_full`` (more than ``max_queue`` records waiting), ``spool_full`` (the spool file reached
    ``max_spool_bytes``), ``spool_error`` (the spool file could not be written), ``rejected`` (the
    database refused a row for a reason other than being unreachable, e.g. a constraint), ``invalid``
    (a record could not be turned into a row: a costtrace bug, also reported as an internal error).

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
    under the lock, replays it and deletes it, so two processes never replay the same file at once.

Exit and fork
    ``close(timeout_s)`` (registered with ``atexit`` and, in ``multiprocessing`` children, as a
    ``multiprocessing`` finalizer since forked children skip ``atexit``) flushes within the timeout;
    what is still in memory when it runs out is written to a fresh spool file by the closing thread
    itself, so exit never waits on a stuck database and loses nothing. In a forked child the parent's
    queue is dropped (the parent writes it), locks are new, and a thread starts with the child's first
    record.

Example:
    >>> from costtrace.ledger import engine, schema, writer     # doctest: +SKIP
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costtrace._internal import logger, report_internal_error
from costtrace.ledger import store

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from costtrace.budgets import Budget
    from costtrace.records import CallRecord, TaskEvent, TaskSummary

_flock: Callable[[int, int], Any] | None
try:
    import fcntl

    _flock, _LOCK_NOW = fcntl.flock, fcntl.LOCK_EX | fcntl.LOCK_NB
except ImportError:  # pragma: no cover - Windows: left-over spools are claimed by age instead of lock
    _flock, _LOCK_NOW = None, 0

__all__ = ["LedgerWriter", "WriterStats", "default_spool_dir"]

MiB = 1024 * 1024
DROP_LOG_INTERVAL_S = 60.0
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0
_STALE_UNLOCKED_S = 3600.0
"""Without ``flock`` (Windows), another process's spool file is claimed once untouched this long."""

_CALL, _TASK, _EVENT = "call", "task", "event"
Item = tuple[str, Any, Any]
"""(kind, record, ended_at for tasks)."""


@dataclass(frozen=True)
class WriterStats:
    """A snapshot of a writer's counters (since it was created, or since the fork that made this process).

    ``written_*`` count rows committed to the database (directly or replayed from a spool), ``spooled``
    rows written to the spool, ``replayed`` rows committed from a spool, ``dropped`` records lost by
    reason (see the module docstring), ``pending`` records in memory not yet committed or spooled.
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


class _DropLog:
    """Counts drops by reason; logs the first at once, then at most one summary line per interval."""

    def __init__(self, interval_s: float = DROP_LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self.totals: dict[str, int] = {}
        self._unlogged: dict[str, int] = {}
        self._last_log: float | None = None

    def add(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.totals[reason] = self.totals.get(reason, 0) + n
            self._unlogged[reason] = self._unlogged.get(reason, 0) + n
            now = time.monotonic()
            if self._last_log is not None and now - self._last_log < self.interval_s:
                return
            self._last_log = now
            pending, self._unlogged = self._unlogged, {}
        self._emit(pending)

    def flush_log(self) -> None:
        """Log what was dropped since the last line (at close)."""
        with self._lock:
            pending, self._unlogged = self._unlogged, {}
        if pending:
            self._emit(pending)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.totals)

    def _emit(self, counts: dict[str, int]) -> None:
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
        logger.warning(
            "costtrace ledger: dropped %d record(s) (%s); at most one such line per %.0f s",
            sum(counts.values()),
            detail,
            self.interval_s,
        )


def _report(where: str, exc: BaseException) -> None:
    """report_internal_error for the writer thread: under the test suite it re-raises, which must not
    kill the thread (tests read ``internal_error_counts()`` and the stats instead)."""
    try:
        report_internal_error(where, exc)
    except BaseException:
        pass


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
    from costtrace.ledger.engine import safe_url

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

    @classmethod
    def create(cls, directory: Path, prefix: str = "spool") -> _SpoolFile:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{prefix}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if _flock is not None:
            _flock(fd, _LOCK_NOW)  # a new file: nobody else has it
        return cls(path, fd)

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        os.fsync(self.fd)
        self.size += len(data)

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


def _read_batches(path: Path, batch_size: int) -> Iterator[tuple[store.Batch, int]]:
    """The spool's rows in order, ``batch_size`` rows at a time, with the count of unreadable lines."""
    batch, bad = store.Batch([], [], [], []), 0
    with open(path, "rb") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
                kind, row = entry["t"], store.row_from_json(entry["r"])
            except (ValueError, KeyError, TypeError):
                bad += 1  # a line cut short by a crash while spooling
                continue
            if kind == _CALL:
                batch.calls.append(row)
            elif kind == _TASK:
                batch.tasks.append(row)
            else:
                batch.events.append(row)
                if row.get("kind") == "outcome_updated":
                    batch.outcome_updates.append(row)
            if len(batch) >= batch_size:
                yield batch, bad
                batch, bad = store.Batch([], [], [], []), 0
    if len(batch) or bad:
        yield batch, bad


def _spool_lines(batch: store.Batch) -> list[bytes]:
    lines = [json.dumps({"t": _CALL, "r": store.row_to_json(r)}) for r in batch.calls]
    lines += [json.dumps({"t": _TASK, "r": store.row_to_json(r)}) for r in batch.tasks]
    lines += [json.dumps({"t": _EVENT, "r": store.row_to_json(r)}) for r in batch.events]
    return [(line + "\n").encode() for line in lines]


_writers: weakref.WeakSet[LedgerWriter] = weakref.WeakSet()
_atexit_registered = False
_mp_finalizer_pid: int | None = None


class LedgerWriter:
    """The per-process background writer of the ledger, and a records listener.

    Args:
        engine: The ledger's engine (:func:`costtrace.ledger.engine.make_engine`), already migrated.
        budgets: Returns the budgets whose spend each committed call adds to (called per batch).
        spool_path: The folder of the spool files (default: :func:`default_spool_dir`).
        max_queue: Records kept in memory at most; beyond, new records are dropped and counted.
        batch_size: Records per transaction at most.
        flush_interval_s: A record waits at most about this long before its batch is written.
        max_spool_bytes: Size of this writer's spool file at most; beyond, batches are dropped and counted.
        on_committed: Called on the writer's thread with the budget periods each commit changed.
        close_timeout_s: What ``close()`` at interpreter exit may take at most.
        close_at_exit: Register ``close`` with ``atexit`` (and ``multiprocessing``'s finalizers).

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

    def _after_fork_in_child(self) -> None:
        # The parent writes what it queued; our copies of its spool descriptors must not unlock its files.
        if self._spool is not None:
            self._spool.abandon()
        for f in (*self._claimed, *self._emergency):
            f.abandon()
        closed = self._closed
        self._init_state()
        self._closed = self._stopping = closed

    # --- the app's side: O(1), never raises, never blocks ------------------------------------------

    def on_call(self, record: CallRecord) -> None:
        self._put((_CALL, record, None))

    def on_task(self, summary: TaskSummary) -> None:
        self._put((_TASK, summary, datetime.now(UTC)))

    def on_event(self, event: TaskEvent) -> None:
        self._put((_EVENT, event, None))

    def _put(self, item: Item) -> None:
        try:
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
                self._drops.add("queue_full" if not self._stopping else "closed")
            elif needs_thread:
                self._start_thread()
        except Exception as exc:
            report_internal_error("ledger.writer.enqueue", exc)

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
            with self._lock:
                target = self._enqueued
                if self._processed >= target:
                    return True
                start = self._thread is None
            if start:
                self._start_thread()
            with self._lock:
                if self._thread is None or threading.current_thread() is self._thread:
                    return self._processed >= target  # nothing would progress while we wait on ourselves
                self._flush_requests += 1
                self._work.notify()
                try:
                    while self._processed < target:
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
        if self._spool is not None:
            self._spool.close(remove=self._spool.size == 0)
            self._spool = None

    def stats(self) -> WriterStats:
        with self._lock:
            files = [f for f in (self._spool, *self._claimed, *self._emergency) if f is not None]
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
            if not self._queue and not self._stopping:
                self._work.wait(self._idle_timeout())
            if self._queue and len(self._queue) < self._batch_size and not self._stopping and not self._flush_requests:
                self._work.wait(self._flush_interval_s)  # let a batch fill; a full batch or flush() wakes us
            n = min(len(self._queue), self._batch_size)
            items = [self._queue.popleft() for _ in range(n)]
            self._inflight = items
            stopping = self._stopping
        try:
            if self._has_spool() and time.monotonic() >= self._retry_at:
                self._replay()
        except Exception as exc:
            self._retry_at = time.monotonic() + RETRY_MAX_S
            _report("ledger.writer.replay", exc)
        try:
            if items:
                self._write(self._build(items))
        except Exception as exc:  # pragma: no cover - _write guards its parts
            self._drops.add("internal_error", len(items))
            _report("ledger.writer.write", exc)
        finally:
            with self._lock:
                if self._inflight is items:  # else close() took them over
                    self._inflight = []
                    self._processed += len(items)
                self._done.notify_all()
                more = bool(self._queue)
        return not (stopping and not more)

    def _idle_timeout(self) -> float:
        if self._has_spool():
            return max(0.01, min(5.0, self._retry_at - time.monotonic()))
        return 5.0

    def _has_spool(self) -> bool:
        return bool(self._claimed) or (self._spool is not None and self._spool.size > 0)

    def _current_budgets(self) -> Sequence[Budget]:
        try:
            self._last_budgets = tuple(self._budgets())
        except Exception as exc:
            _report("ledger.writer.budgets", exc)
        return self._last_budgets

    def _build(self, items: list[Item]) -> store.Batch:
        batch = store.Batch([], [], [], [])
        for kind, obj, ended_at in items:
            try:
                if kind == _CALL:
                    batch.calls.append(store.call_row(obj))
                elif kind == _TASK:
                    batch.tasks.append(store.task_row(obj, ended_at))
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
                    batch.events.append(row)
                    if row["kind"] == "outcome_updated":
                        batch.outcome_updates.append(row)
            except Exception as exc:
                self._drops.add("invalid")
                _report("ledger.writer.row", exc)
        return batch

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
            _report("ledger.writer.write_batch", exc)
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
                self._drops.add("rejected")
                _report("ledger.writer.rejected", exc)
                continue
            self._count_written(single, replay=replay)
            self._committed(touched)
        return True

    def _count_written(self, batch: store.Batch, *, replay: bool) -> None:
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
                self._drops.add("spool_full", len(lines) - len(keep))
        except Exception as exc:
            self._drops.add("spool_error", len(lines))
            _report("ledger.writer.spool", exc)

    def _claim_leftovers(self) -> None:
        try:
            names = sorted(os.listdir(self._spool_dir))
        except FileNotFoundError:
            return
        mine = {str(f.path) for f in (self._spool, *self._claimed, *self._emergency) if f is not None}
        for name in names:
            if not name.endswith(".jsonl") or not name.startswith(("spool-", "claimed-")):
                continue
            path = self._spool_dir / name
            if str(path) in mine:
                continue
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
            self._claimed.remove(f)
            f.close(remove=True)
        if self._spool is not None and self._spool.size and self._replay_file(self._spool):
            self._spool.truncate()

    def _replay_file(self, f: _SpoolFile) -> bool:
        try:
            for batch, bad in _read_batches(f.path, self._batch_size):
                if bad:
                    self._drops.add("spool_corrupt", bad)
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
    for writer in list(_writers):
        try:
            writer._after_fork_in_child()
        except Exception:  # pragma: no cover - resetting plain attributes does not fail
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
