"""``costtrace demo``: support tickets resolved through the real OpenAI SDK under three routes, priced and compared.

The demo starts a local OpenAI-compatible server (:mod:`costtrace.demo.server`, on 127.0.0.1: no
key, no network), points ``openai.OpenAI(base_url=...)`` at it, turns on ``costtrace.instrument("openai")``
and records everything in the cost ledger (``costtrace.configure_ledger``). The same tickets then go
through each route:

- **cheap only**: ``gpt-4o-mini``, retried on a validation failure, up to
  :data:`costtrace.demo.support_bot.MAX_ATTEMPTS` answers;
- **frontier only**: ``gpt-4o``, likewise;
- **cascade**: ``gpt-4o-mini`` first, then ``t.escalate(to_model="gpt-4o")`` on a validation failure.

Each ticket is one ``costtrace.task`` (feature ``support``, a ``routing`` dimension); each answer is
checked by :func:`costtrace.demo.support_bot.validate`, the kind of check a real support bot runs (one
JSON object, the fields present, the right category, a refund within policy). The server's simulated
models break that contract more often on hard tickets, and far more often for the cheap model
(:data:`costtrace.demo.server.FAILURE_RATE`). Tokens come from the server's ``usage`` and prices
from costtrace's price list, exactly as they would from OpenAI.

The report ends with what cheap-per-token hides: the retry tax, the first-pass rate, cost per
successful ticket, total cost of ownership with a rework cost for each unresolved ticket
(``--rework-cost``), and which route to use. Every sentence is computed from the run.

The package, by role: :mod:`~costtrace.demo.tickets` (the simulated tickets),
:mod:`~costtrace.demo.support_bot` (the task code: routes, prompt, validator),
:mod:`~costtrace.demo.summary` (the figures read back from the ledger, and the report),
:mod:`~costtrace.demo.server` (the stand-in for OpenAI); this module runs them (:func:`run`).

Example:
    >>> from costtrace import demo
    >>> from costtrace.demo import summary
    >>> result = demo.run(tickets=50, seed=1, ledger_url="sqlite:///demo.db")   # doctest: +SKIP
    >>> print(summary.render(result))                                          # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import costtrace
from costtrace.analysis.report import group_by
from costtrace.demo import server
from costtrace.demo.summary import DemoResult, ledger_reports
from costtrace.demo.support_bot import (
    PROVIDER,
    ROUTING_DIMENSION,
    RUN_DIMENSION,
    STRATEGIES,
    TIER_DIMENSION,
    Strategy,
    resolve,
)
from costtrace.demo.tickets import TIER_SHARE, make_tickets
from costtrace.errors import ConfigError
from costtrace.records import CallRecord, TaskSummary

__all__ = [
    "DEFAULT_REWORK_COST_USD",
    "DEFAULT_SEED",
    "DEFAULT_TICKETS",
    "INSTALL_HINT",
    "MAX_TICKETS",
    "default_ledger_path",
    "run",
    "unpriced_models",
]

API_KEY = "demo-not-a-key"
"""What the demo gives the SDK: the local server checks no key, and this one would open nothing."""
INSTALL_HINT = "the demo runs the OpenAI SDK against a local server; install it with: pip install 'costtrace[demo]'"

DEFAULT_TICKETS = 200
DEFAULT_SEED = 7
DEFAULT_REWORK_COST_USD = Decimal("2.00")
MAX_TICKETS = 10_000
"""Upper bound for ``--tasks``: the demo keeps every record in memory."""
DEMO_LEDGER_FILE = "demo.db"


class _Collector:
    """Receives every finished call record and task summary of this run (a ``costtrace.records`` listener)."""

    def __init__(self, run_id: str) -> None:
        self._run_key = f"costtrace.dimension.{RUN_DIMENSION}"
        self._run_id = run_id
        self._lock = threading.Lock()
        self.calls: list[CallRecord] = []
        self.tasks: list[TaskSummary] = []

    def on_call(self, record: CallRecord) -> None:
        if record.dimensions.get(self._run_key) == self._run_id:
            with self._lock:
                self.calls.append(record)

    def on_task(self, summary: TaskSummary) -> None:
        if summary.dimensions.get(self._run_key) == self._run_id:
            with self._lock:
                self.tasks.append(summary)


def _openai() -> Any:
    """The ``openai`` module, or ConfigError with the install hint (it is an optional dependency)."""
    try:
        openai = importlib.import_module("openai")
        importlib.import_module("costtrace.instrumentation.openai")  # needs opentelemetry-instrumentation
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return openai


@contextmanager
def _instrumented() -> Iterator[None]:
    """``costtrace.instrument("openai")`` for the run; undone afterwards unless it was on before."""
    from costtrace.instrumentation.openai import OpenAIInstrumentor

    was_on = OpenAIInstrumentor().is_instrumented_by_opentelemetry
    costtrace.instrument("openai")
    try:
        yield
    finally:
        if not was_on:
            costtrace.uninstrument("openai")


def run(
    *,
    tickets: int = DEFAULT_TICKETS,
    seed: int = DEFAULT_SEED,
    rework_cost_usd: Decimal = DEFAULT_REWORK_COST_USD,
    ledger_url: str | None = None,
    strategies: tuple[Strategy, ...] = STRATEGIES,
) -> DemoResult:
    """Resolve ``tickets`` tickets under each route through the OpenAI SDK and the local server, recording them.

    Opens the ledger at ``ledger_url`` (default: the demo's own SQLite file, :func:`default_ledger_path`,
    replaced at each run so that it holds this run only; never ``COSTTRACE_LEDGER_URL`` nor the default
    ledger, which belong to your apps), closes it once everything is written, and reads the report back
    from it (this run's rows only: feature ``support``, ended since the run started). The figures are
    the same for the same ``seed``; nothing leaves 127.0.0.1.

    Args:
        tickets: How many tickets (1 to :data:`MAX_TICKETS`).
        seed: Seed of the tickets and of the simulated models' answers.
        rework_cost_usd: Cost of one unresolved ticket outside the model, for TCO.
        ledger_url: SQLAlchemy URL of the ledger to add the run to (kept: the run is appended).
        strategies: The routes to compare (models the server serves: ``gpt-4o-mini``, ``gpt-4o``).

    Raises:
        ConfigError: The OpenAI SDK is not installed (with the install hint), or the ledger cannot be opened.
        ValueError: ``tickets`` is out of range, or ``rework_cost_usd`` is negative.
    """
    if not 1 <= tickets <= MAX_TICKETS:
        raise ValueError(f"tickets={tickets!r} must be between 1 and {MAX_TICKETS}")
    if rework_cost_usd < 0:
        raise ValueError(f"rework_cost_usd={rework_cost_usd!r} must be >= 0")
    openai = _openai()
    from costtrace import records
    from costtrace.spend.engine import safe_url

    own_ledger = not ledger_url
    url = ledger_url or _fresh_ledger(default_ledger_path())
    batch = make_tickets(tickets, seed)
    run_id = uuid.uuid4().hex[:12]
    collector = _Collector(run_id)
    costtrace.configure_ledger(url)
    started = datetime.now(UTC)
    records.add_listener(collector)
    try:
        with _instrumented(), server.DemoServer(seed=seed) as local:
            client = openai.OpenAI(base_url=local.url, api_key=API_KEY, max_retries=0)
            try:
                for strategy in strategies:
                    for ticket in batch:
                        resolve(client, ticket, strategy, run_id)
            finally:
                client.close()
    finally:
        records.remove_listener(collector)
        written = costtrace.flush_ledger(30)
        costtrace.close_ledger()
    if not written:
        raise ConfigError(f"the ledger at {safe_url(url)!r} did not take the run's records in time; is it reachable?")

    per_route, per_model, advice = ledger_reports(url, started, strategies, rework_cost_usd)
    routing_key, tier_key = f"costtrace.dimension.{ROUTING_DIMENSION}", f"costtrace.dimension.{TIER_DIMENSION}"
    per_tier = group_by(collector.tasks, lambda t: f"{t.dimensions.get(routing_key)}/{t.dimensions.get(tier_key)}")
    return DemoResult(
        tickets=tuple(batch),
        seed=seed,
        rework_cost_usd=rework_cost_usd,
        strategies=strategies,
        tasks=tuple(collector.tasks),
        calls=tuple(collector.calls),
        per_route=per_route,
        per_model=per_model,
        advice=advice,
        per_tier={
            (s.key, tier): per_tier[f"{s.key}/{tier}"]
            for s in strategies
            for tier in TIER_SHARE
            if f"{s.key}/{tier}" in per_tier
        },
        ledger_url=safe_url(url),
        run_id=run_id,
        sdk_version=str(getattr(openai, "__version__", "?")),
        own_ledger=own_ledger,
    )


def default_ledger_path() -> Path:
    """The demo's own ledger: ``demo.db`` in costtrace's per-user data folder (``$XDG_DATA_HOME/costtrace``,
    else ``~/.local/share/costtrace``), beside the default ledger ``ledger.db``, never in it.

    Example:
        >>> default_ledger_path().name
        'demo.db'
    """
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "costtrace" / DEMO_LEDGER_FILE


def _fresh_ledger(path: Path) -> str:
    """Delete the previous demo run's ledger at ``path`` (SQLite file, WAL, spool folder); its URL."""
    for leftover in (path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal"))):
        leftover.unlink(missing_ok=True)
    shutil.rmtree(path.with_name(path.name + ".spool"), ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def unpriced_models(strategies: tuple[Strategy, ...] = STRATEGIES) -> list[str]:
    """The routes' models that the price catalog cannot price (their costs would be missing).

    Example:
        >>> unpriced_models()
        []
    """
    from costtrace.price.catalog import default_catalog

    catalog = default_catalog()
    models = dict.fromkeys(m for s in strategies for m in s.models)
    return [m for m in models if not catalog.is_priced(PROVIDER, m)]
