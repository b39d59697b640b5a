"""The ledger's background writer: one per process, off the hot path, durable through database outages.

How a record travels
    ``on_call`` / ``on_task`` / ``on_event`` run on the app's thread. They append the raw record (and,
    for a task, the time it ended) to a bounded in-memory queue and return: O(1), no I/O, no conversion,
    a lock held for a few instructions, never an exception. One daemon thread per process (started with
    the first record) turns records into rows (:mod:`costtrace.spend.rows`), commits them in batches
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
    Every row, built here or read back from a spool file, passes :func:`rows.validate_row` (types,
    ranges, sizes, required keys) before it is written. A refused row is put in quarantine in the spool
    folder (:class:`~costtrace.spend.spool.Quarantine`, never replayed) and counted ``invalid``.

Drops, always counted (``stats().dropped``) and logged at most once a minute with the count
    ``queue_full`` (more than ``max_queue`` records waiting), ``spool_full`` (the spool file reached
    ``max_spool_bytes``), ``spool_error`` (the spool file could not be written: disk full...),
    ``rejected`` (the database refused a row for a reason other than being unreachable, e.g. a
    constraint), ``invalid`` (a record could not be turned into a row, or the row failed validation),
    ``spool_corrupt`` (a spool line that is not JSON), ``closed`` (recorded after ``close()``). Each log
    line is also a ``ledger_records_lost`` alert and the counts feed a metric (:mod:`costtrace.spend.losses`);
    the writer writes them to the ledger as a ``ledger_records_lost`` event once the database takes writes.

The database down: the spool
    A batch that cannot be committed (database unreachable, locked past its busy timeout, missing
    tables...) is appended to a local spool file and fsync'd, and the database is retried with backoff
    (0.5 s doubling to 30 s) while new batches go straight to the spool. On recovery the spool is
    replayed in order, in batches, through the same idempotent ``write_batch`` (a crash mid-replay
    replays again and duplicates nothing), then truncated.

Spool files
    One folder per database (:func:`~costtrace.spend.spool.default_spool_dir`); each writer appends to a
    file of its own and claims, replays and deletes the files of processes that are gone (see
    :mod:`costtrace.spend.spool`). It looks for such files when it starts, at every ``flush()`` and every
    ``RESCAN_S`` seconds.

Rollups
    A second daemon thread (``costtrace-ledger-rollups``, started with the writer's) refreshes the
    ledger's dirty rollup cells every ``rollup_interval_s``: only the hours that ended
    :data:`~costtrace.spend.rollups.SETTLE_S` seconds ago or more, computed in a read transaction
    that does not block writers (:func:`costtrace.spend.rollups.refresh`). The writer thread never
    waits on it; ``close()`` stops it.

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
import json
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costtrace._internal import logger, report_background_error, report_internal_error
from costtrace.spend import rollups, store
from costtrace.spend.engine import make_engine
from costtrace.spend.losses import DROP_LOG_INTERVAL_S, LOST_ALERT_KIND, DropLog, in_loss_alert
from costtrace.spend.pending import PendingSpend
from costtrace.spend.rows import CALL, EVENT, TASK, Row, event_row, record_row, row_to_json, validate_row
from costtrace.spend.spool import (
    BadLines,
    Quarantine,
    SpoolFile,
    add_row,
    claim,
    default_spool_dir,
    read_batches,
    spool_line,
    spool_lines,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from costtrace.records import CallRecord, TaskEvent, TaskSummary
    from costtrace.spend.budgets import Budget

__all__ = ["LedgerWriter", "WriterStats"]

MiB = 1024 * 1024
RESCAN_S = 5.0
"""How often an idle writer looks for spool files left by dead processes (also at every flush)."""
WRITE_THROUGH_ENV = "COSTTRACE_LEDGER_WRITE_THROUGH"
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0
ROLLUPS_JOIN_S = 1.0
"""``close()`` waits this long at most for the rollups thread to finish a refresh."""

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


def _report_db(where: str, exc: BaseException) -> None:
    """Report a database error without its SQL or parameters (SQLAlchemy puts the row's values in its
    message): the log names the error's type and the driver's first line only."""
    report_background_error(where, _DatabaseError(store.describe_error(exc)))


class _DatabaseError(Exception):
    """A database error, described without data (see :func:`costtrace.spend.store.describe_error`)."""


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
        rollup_interval_s: Refresh the ledger's dirty rollup cells (:func:`costtrace.spend.rollups.refresh`,
            at most :data:`~costtrace.spend.rollups.REFRESH_HOURS_PER_ROUND` hours a round, the hours
            that ended :data:`~costtrace.spend.rollups.SETTLE_S` seconds ago or more) this often, in a
            thread of its own (``costtrace-ledger-rollups``), so the writer never waits on a refresh;
            None: never (another process, or ``costtrace ledger refresh``, does it).

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
        rollup_interval_s: float | None = rollups.REFRESH_INTERVAL_S,
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
        if rollup_interval_s is not None and not (
            isinstance(rollup_interval_s, int | float) and 0 < rollup_interval_s < float("inf")
        ):
            raise ConfigError(
                f"LedgerWriter rollup_interval_s={rollup_interval_s!r}: use a positive number of seconds or None"
            )
        self._rollup_interval_s = rollup_interval_s
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
        self._drops = DropLog()
        self._written = {CALL: 0, TASK: 0, EVENT: 0}
        self._spooled = 0
        self._replayed = 0
        self._db_available = True
        self._retry_at = 0.0
        self._backoff_s = RETRY_INITIAL_S
        self._down_logged_at: float | None = None
        self._spool: SpoolFile | None = None
        self._claimed: list[SpoolFile] = []
        self._emergency: list[SpoolFile] = []
        self._last_budgets: Sequence[Budget] = ()
        # Write-through (worker processes): records appended to _wt_file by the app's threads; the
        # writer thread moves a full file to _claimed (one at a time: _wt_rotated) and replays it.
        self._wt: bool | None = None  # decided at the first record of this process
        self._wt_file: SpoolFile | None = None
        self._wt_rotated: SpoolFile | None = None
        self._wt_pending = 0
        self._quarantine = Quarantine(self._spool_dir, self._max_spool_bytes)
        self._rescan = False
        self._last_scan = time.monotonic()
        self._scans_started = 0  # rescans for left-over spool files the writer thread began ...
        self._scans_done = 0  # ... and finished (claimed and replay tried): flush() waits for its own
        self._pending = PendingSpend()  # spend recorded here but not yet in the database (admission)
        self._next_rollup = time.monotonic() + (self._rollup_interval_s or 0.0)
        self._rollups_thread: threading.Thread | None = None  # started with the writer thread
        self._rollups_stop = threading.Event()
        self._rollups_reader: Engine | None = None  # the rollups thread's read-only engine, made by it

    def _after_fork_in_child(self) -> None:
        # The parent writes what it queued; our copies of its spool descriptors must not unlock its files.
        for f in (self._spool, self._wt_file, self._quarantine.file, *self._claimed, *self._emergency):
            if f is not None:
                f.abandon()
        closed = self._closed
        self._init_state()
        self._closed = self._stopping = closed
        self._forked = True

    # --- the app's side: O(1), never raises, never blocks ------------------------------------------

    def on_call(self, record: CallRecord) -> None:
        if self._enforcing:
            self._pending.track(record, self._enforcing)
        self._put((CALL, record, None))

    def on_task(self, summary: TaskSummary) -> None:
        self._put((TASK, summary, datetime.now(UTC)))

    def on_event(self, event: TaskEvent) -> None:
        if in_loss_alert() and event.reason == LOST_ALERT_KIND:
            return  # a ledger_records_lost alert's own event: _record_losses writes it, with exact counts
        self._put((EVENT, event, None))

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
        if item[0] == CALL:
            self._pending.settle([item[1].call_id])
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
            if kind == CALL:
                self._pending.settle([obj.call_id])
            return
        line = spool_line(kind, row)
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
                        f = self._wt_file = SpoolFile.create(self._spool_dir)
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
                report_background_error("ledger.writer.spool", error)
        elif needs_thread:
            self._start_thread()

    # --- spend not yet written, for admission ----------------------------------------------------------

    def set_enforcing(self, budgets: Sequence[Budget]) -> None:
        """The hard-capped budgets whose spend recorded here but not yet written :meth:`pending_nano` reports."""
        self._enforcing = tuple(b for b in budgets if b.enforcing)

    def note_reserved(self, call_id: str) -> None:
        """This call holds a reservation in the database until its row is written: not pending spend."""
        self._pending.note_reserved(call_id)

    def forget_reserved(self, call_id: str) -> None:
        """This call's reservation was released without a row (its request was never sent)."""
        self._pending.forget_reserved(call_id)

    def pending_nano(self, budgets: Iterable[Budget], at: datetime) -> dict[str, int]:
        """Spend this process recorded (unreserved calls: ``record_llm_call``, fail-open calls) that is
        queued or spooled but not yet in the database, per budget, in the window counting at ``at``."""
        return self._pending.by_budget(budgets, at)

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
        self._start_rollups()

    def _start_rollups(self) -> None:
        """Start the rollups thread, unless there is nothing to refresh or the engine has one shared
        connection (an in-memory SQLite ledger: the writer thread refreshes between batches instead)."""
        if self._rollup_interval_s is None or self._rollups_on_writer_thread():
            return
        with self._lock:
            if self._rollups_thread is not None or self._stopping:
                return
            thread = self._rollups_thread = threading.Thread(
                target=self._run_rollups,
                args=(self._rollups_stop, self._rollup_interval_s),
                name="costtrace-ledger-rollups",
                daemon=True,
            )
        try:
            thread.start()
        except RuntimeError as exc:  # interpreter shutting down: the cells stay dirty, reports read raw rows
            with self._lock:
                self._rollups_thread = None
            report_background_error("ledger.writer.rollups", exc)

    def _rollups_on_writer_thread(self) -> bool:
        import sqlalchemy as sa

        # One connection shared by every thread (make_engine's in-memory SQLite), or one per thread (each
        # its own in-memory database): a second thread would break the writer's transactions, or see nothing.
        return isinstance(self._engine.pool, sa.pool.StaticPool | sa.pool.SingletonThreadPool)

    def _stop_rollups(self, timeout_s: float) -> None:
        """Ask the rollups thread to stop and wait for it a little: a refresh it is in the middle of is
        safe to abandon (a daemon thread; what it has not stored stays dirty)."""
        self._rollups_stop.set()
        thread = self._rollups_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, min(ROLLUPS_JOIN_S, timeout_s)))

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
        self._stop_rollups(deadline - margin - time.monotonic())
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
        lines = spool_lines(batch)
        try:
            spool = SpoolFile.create(self._spool_dir)
            self._emergency.append(spool)
            spool.append(b"".join(lines))
        except Exception as exc:
            self._drops.add("spool_error", len(lines))
            report_background_error("ledger.writer.spool", exc)
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
        for own in (self._spool, self._wt_file, self._quarantine.file):
            if own is not None:
                own.close(remove=own.size == 0)
        self._spool = self._wt_file = self._quarantine.file = None

    def stats(self) -> WriterStats:
        with self._lock:
            files = [f for f in (self._spool, self._wt_file, *self._claimed, *self._emergency) if f is not None]
            return WriterStats(
                enqueued=self._enqueued,
                written_calls=self._written[CALL],
                written_tasks=self._written[TASK],
                written_events=self._written[EVENT],
                spooled=self._spooled,
                replayed=self._replayed,
                dropped=self._drops.snapshot(),
                pending=len(self._queue) + len(self._inflight),
                db_available=self._db_available,
                spool_bytes=sum(f.size for f in files),
                spool_files=tuple(str(f.path) for f in files if f.size),
                quarantined=self._quarantine.count,
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
            report_background_error("ledger.writer.claim", exc)
        while True:
            try:
                if not self._step():
                    return
            except Exception as exc:  # pragma: no cover - _step guards its parts; this keeps the thread alive
                report_background_error("ledger.writer.loop", exc)
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
            report_background_error("ledger.writer.claim", exc)
        try:
            if self._has_spool() and time.monotonic() >= self._retry_at:
                self._replay()
        except Exception as exc:
            self._retry_at = time.monotonic() + RETRY_MAX_S
            report_background_error("ledger.writer.replay", exc)
        try:
            if items:
                self._write(self._build(items))
            self._record_losses()  # before flush() is told these records are done: it then sees the event
        except Exception as exc:  # pragma: no cover - _write and _record_losses guard their parts
            self._drops.add("internal_error", len(items))
            report_background_error("ledger.writer.write", exc)
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
        if not stopping:
            self._refresh_rollups()
        return not (stopping and not more)

    def _run_rollups(self, stop: threading.Event, interval_s: float) -> None:
        """The rollups thread: every ``interval_s``, refresh some settled dirty hours, until ``stop``."""
        while not stop.wait(interval_s):
            if self._db_available:
                self._refresh_settled(self._rollups_read_engine())
        reader, self._rollups_reader = self._rollups_reader, None
        if reader is not None and reader is not self._engine:
            reader.dispose()

    def _rollups_read_engine(self) -> Engine:
        """The engine the rollups thread reads with: on a SQLite file, a read-only engine of its own (its
        connection's page cache and statements are not added to the writer's connection pool); on
        PostgreSQL the writer's engine (its reads take no lock)."""
        reader = self._rollups_reader
        if reader is None:
            reader = self._engine
            if self._engine.dialect.name == "sqlite":
                try:
                    url = self._engine.url.render_as_string(hide_password=False)
                    reader = make_engine(url, read_only=True)
                except Exception as exc:  # the compute phase then uses the writer's engine (deferred BEGIN)
                    report_background_error("ledger.writer.rollups", exc)
            self._rollups_reader = reader
        return reader

    def _refresh_rollups(self) -> None:
        """An in-memory ledger's refresh, on the writer thread between batches, every ``rollup_interval_s``."""
        interval = self._rollup_interval_s
        if interval is None or not self._rollups_on_writer_thread():
            return
        if not self._db_available or time.monotonic() < self._next_rollup:
            return
        self._next_rollup = time.monotonic() + interval
        self._refresh_settled()

    def _refresh_settled(self, read_engine: Engine | None = None) -> None:
        try:
            settled_before = datetime.now(UTC) - timedelta(seconds=rollups.SETTLE_S)
            rollups.refresh(
                self._engine,
                max_hours=rollups.REFRESH_HOURS_PER_ROUND,
                settled_before=settled_before,
                read_engine=read_engine,
            )
        except Exception as exc:
            report_background_error("ledger.writer.rollups", exc)

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
        row = event_row(
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
            if store.is_unavailable(exc):
                self._mark_down(exc)
            else:
                self._retry_at = time.monotonic() + RETRY_MAX_S
                _report_db("ledger.writer.losses", exc)
            return
        self._mark_up()
        with self._lock:
            self._written[EVENT] += 1

    def _current_budgets(self) -> Sequence[Budget]:
        try:
            self._last_budgets = tuple(self._budgets())
        except Exception as exc:
            report_background_error("ledger.writer.budgets", exc)
        return self._last_budgets

    def _build(self, items: list[Item]) -> store.Batch:
        batch = store.Batch([], [], [], [])
        for kind, obj, ended_at in items:
            row = self._row(kind, obj, ended_at)
            if row is not None:
                add_row(batch, kind, row)
            elif kind == CALL:
                self._pending.settle([obj.call_id])
        return batch

    def _row(self, kind: str, obj: Any, ended_at: Any, *, validate: bool = True) -> Row | None:
        """A record's row, checked by the same :func:`rows.validate_row` as replayed spool lines; None
        (counted ``invalid``, the row put in quarantine) when it can't be built or is refused.
        ``validate=False``: the row goes to the spool, and is checked when it is read back."""
        try:
            row = record_row(kind, obj, ended_at)
        except Exception as exc:
            self._drops.add("invalid")
            report_background_error("ledger.writer.row", exc)
            return None
        reason = validate_row(kind, row) if validate else None
        if reason is None:
            return row
        try:
            line = (json.dumps({"t": kind, "r": row_to_json(row)}, default=str) + "\n").encode()
        except Exception:  # pragma: no cover - rows hold JSON-safe values
            line = b""
        self._quarantine.put_aside([line] if line else [], 1, reason, "recorded")
        self._drops.add("invalid")
        return None

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
            if store.is_unavailable(exc):
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
                if store.is_unavailable(exc):
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
                self._pending.settle(r["call_id"] for r in single.calls)
                self._drops.add("rejected")
                _report_db("ledger.writer.rejected", exc)
                continue
            self._count_written(single, replay=replay)
            self._committed(touched)
        return True

    def _count_written(self, batch: store.Batch, *, replay: bool) -> None:
        self._pending.settle(r["call_id"] for r in batch.calls)
        with self._lock:
            self._written[CALL] += len(batch.calls)
            self._written[TASK] += len(batch.tasks)
            self._written[EVENT] += len(batch.events)
            if replay:
                self._replayed += len(batch)

    def _committed(self, touched: list[store.Touched]) -> None:
        if self._on_committed is None:
            return
        try:
            self._on_committed(touched)
        except Exception as exc:
            report_background_error("ledger.writer.on_committed", exc)

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
                store.describe_error(exc),
                self._spool_dir,
            )

    def _mark_up(self) -> None:
        if not self._db_available:
            logger.info("costtrace ledger: database available again; replaying the spool")
        self._db_available = True
        self._backoff_s = RETRY_INITIAL_S

    def _to_spool(self, batch: store.Batch) -> None:
        lines = spool_lines(batch)
        try:
            if self._spool is None:
                self._spool = SpoolFile.create(self._spool_dir)
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
                self._pending.settle(r["call_id"] for r in batch.calls[len(keep) :])  # calls come first
                self._drops.add("spool_full", len(lines) - len(keep))
        except Exception as exc:
            self._pending.settle(r["call_id"] for r in batch.calls)
            self._drops.add("spool_error", len(lines))
            report_background_error("ledger.writer.spool", exc)

    def _put_aside_bad(self, f: SpoolFile, bad: BadLines) -> None:
        new_corrupt = [line for i, line in bad.corrupt if i >= f.bad_reported]
        if new_corrupt:
            self._drops.add("spool_corrupt", len(new_corrupt))
            self._quarantine.put_aside(new_corrupt, len(new_corrupt), "unreadable line", "spooled")
        by_reason: dict[str, list[bytes]] = {}
        for i, line, reason in bad.invalid:
            if i >= f.bad_reported:
                by_reason.setdefault(reason, []).append(line)
        for reason, lines in sorted(by_reason.items()):
            self._drops.add("invalid", len(lines))
            self._quarantine.put_aside(lines, len(lines), reason, "spooled")
        f.bad_reported = max(f.bad_reported, bad.next_line)

    def _leftover_paths(self) -> list[Path]:
        """Spool files in the spool folder that are not this writer's own (another process's, live or dead)."""
        try:
            names = sorted(os.listdir(self._spool_dir))
        except FileNotFoundError:
            return []
        mine = {
            str(f.path)
            for f in (self._spool, self._wt_file, self._quarantine.file, *self._claimed, *self._emergency)
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
            claimed = claim(path)
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

    def _replay_file(self, f: SpoolFile) -> bool:
        """Replay one file; bad lines are counted and put aside once, even if the replay is retried."""
        try:
            for batch, bad in read_batches(f.path, self._batch_size):
                self._put_aside_bad(f, bad)
                if len(batch) and not self._commit(batch, replay=True):
                    return False
        except OSError as exc:
            report_background_error("ledger.writer.replay", exc)
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
    global _forked_since_import
    _forked_since_import = True
    for writer in list(_writers):
        try:
            writer._after_fork_in_child()
        except Exception:  # pragma: no cover - resetting plain attributes does not fail
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
