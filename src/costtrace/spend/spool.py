"""The ledger's spool: local files that hold rows while the database cannot take them.

Spool files
    Folder: ``spool_path`` if given; else ``<database file>.spool/`` next to a SQLite ledger file; else
    ``$XDG_STATE_HOME/costtrace/spool/<hash of the URL>/`` (``~/.local/state/...``): one folder per
    database, so a spool is only replayed into the database it was meant for (:func:`default_spool_dir`).
    Each writer appends to its own ``spool-<pid>-<token>.jsonl`` (one ``{"t": "call"|"task"|"event", "r":
    row}`` per line, :func:`spool_line`), holding an exclusive ``flock`` on it while it lives
    (:class:`SpoolFile`). A writer claims every other file of the folder whose lock is free (its process
    is gone) by renaming it to ``claimed-<pid>-<token>.jsonl`` under the lock (:func:`claim`), replays it
    (:func:`read_batches`) and deletes it, so two processes never replay the same file at once.

Quarantine
    A row refused by :func:`costtrace.spend.rows.validate_row` (live, or read back from a spool file) is
    appended to ``quarantine-<pid>-<token>.jsonl`` in the same folder, never replayed
    (:class:`Quarantine`); the log line names the column at fault, never a value.

Example:
    >>> f = SpoolFile.create(Path("/tmp/ledger.db.spool"))                      # doctest: +SKIP
    >>> f.append(b"".join(spool_lines(batch)))
    >>> for batch, bad in read_batches(f.path, 1000): ...
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costtrace._internal import logger, report_background_error
from costtrace.spend.losses import DROP_LOG_INTERVAL_S
from costtrace.spend.rows import CALL, EVENT, KINDS, TASK, Row, row_from_json, validate_row
from costtrace.spend.store import Batch

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


_flock: Callable[[int, int], Any] | None
try:
    import fcntl

    _flock, _LOCK_NOW = fcntl.flock, fcntl.LOCK_EX | fcntl.LOCK_NB
except ImportError:  # pragma: no cover - Windows: left-over spools are claimed by age instead of lock
    _flock, _LOCK_NOW = None, 0

_STALE_UNLOCKED_S = 3600.0
"""Without ``flock`` (Windows), another process's spool file is claimed once untouched this long."""


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


class SpoolFile:
    """One append-only spool file, held under an exclusive ``flock`` while open."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self.bad_reported = 0
        """Lines before this one whose problems were already counted (a replay retried after an outage)."""

    @classmethod
    def create(cls, directory: Path, prefix: str = "spool") -> SpoolFile:
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


def claim(path: Path) -> SpoolFile | None:
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
    return SpoolFile(claimed, fd)


@dataclass
class BadLines:
    """Spool lines that are not rows: unreadable (cut short by a crash) or refused by validation."""

    corrupt: list[tuple[int, bytes]] = field(default_factory=list)
    """(line number, line)."""
    invalid: list[tuple[int, bytes, str]] = field(default_factory=list)
    """(line number, line, reason); the reason names a column, never a value."""
    next_line: int = 0
    """The number of the first line after this batch."""


def _parse_line(line: bytes) -> tuple[str, Row] | str | None:
    """A spool line as (kind, row); a validation reason (str) for a bad row; None if unreadable."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("r"), dict) or entry.get("t") not in KINDS:
        return None
    kind = entry["t"]
    row = row_from_json(entry["r"])
    reason = validate_row(kind, row)
    return reason if reason is not None else (kind, row)


def add_row(batch: Batch, kind: str, row: Row) -> None:
    if kind == CALL:
        batch.calls.append(row)
    elif kind == TASK:
        batch.tasks.append(row)
    else:
        batch.events.append(row)
        if row["kind"] == "outcome_updated":
            batch.outcome_updates.append(row)


def read_batches(path: Path, batch_size: int) -> Iterator[tuple[Batch, BadLines]]:
    """The spool's valid rows in order, ``batch_size`` rows at a time, with the lines that are not."""
    batch, bad = Batch([], [], [], []), BadLines()
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
            add_row(batch, *parsed)
            if len(batch) >= batch_size:
                yield batch, bad
                batch, bad = Batch([], [], [], []), BadLines(next_line=i + 1)
    if len(batch) or bad.corrupt or bad.invalid:
        yield batch, bad


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_ENCODER = json.JSONEncoder(default=_iso)
"""Spool lines: the same text as ``json.dumps`` of :func:`~costtrace.spend.rows.row_to_json`, without the copy."""


def spool_line(kind: str, row: Row) -> bytes:
    return (_ENCODER.encode({"t": kind, "r": row}) + "\n").encode()


def spool_lines(batch: Batch) -> list[bytes]:
    lines = [spool_line(CALL, r) for r in batch.calls]
    lines += [spool_line(TASK, r) for r in batch.tasks]
    lines += [spool_line(EVENT, r) for r in batch.events]
    return lines


class Quarantine:
    """Refused rows, kept in ``quarantine-<pid>-<token>.jsonl`` beside the spool (never replayed), bounded
    like the spool (``max_bytes``). The file is created with the first refused row."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self._dir = directory
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self.file: SpoolFile | None = None
        self.count = 0
        """Rows put aside (including those the full file could not keep)."""
        self._logged_at: float | None = None

    def put_aside(self, lines: list[bytes], n: int, reason: str, source: str) -> None:
        """Keep ``n`` refused rows (their ``lines``). The log line names the reason (a column), never a value."""
        with self._lock:
            self.count += n
            try:
                f = self.file
                if f is None:
                    f = self.file = SpoolFile.create(self._dir, prefix="quarantine")
                room, keep = self._max_bytes - f.size, []
                for line in lines:
                    if len(line) > room:
                        break
                    keep.append(line if line.endswith(b"\n") else line + b"\n")
                    room -= len(keep[-1])
                if keep:
                    f.append(b"".join(keep), sync=False)
            except OSError as exc:
                report_background_error("ledger.spool.quarantine", exc)
            now = time.monotonic()
            if self._logged_at is not None and now - self._logged_at < DROP_LOG_INTERVAL_S:
                return
            self._logged_at = now
            where = self.file.path if self.file is not None else self._dir
        logger.warning(
            "costtrace ledger: %d %s row(s) refused (%s); kept in %s, not written; at most one such line per %.0f s",
            n,
            source,
            reason,
            where,
            DROP_LOG_INTERVAL_S,
        )
