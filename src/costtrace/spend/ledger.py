"""The process-wide ledger and budgets: set-up, flush and close, budget status, late outcomes.

:func:`configure_ledger` opens the ledger database (SQLite by default, PostgreSQL by URL), starts the
background writer and installs the budgets (the :class:`~costtrace.spend.runtime.Runtime`). From then on:

- every finished call, task and task event is written to the ledger off the hot path;
- every call in the scope of a hard-capped budget (``action="block"`` or ``"downgrade"``) is admitted
  before its request is sent (:mod:`costtrace.spend.admission`);
- after each committed batch, budget thresholds are checked and alerts fire once per period.

Admission reaches the call path through :func:`costtrace.calls.set_admission_hook`: installed while some
budget blocks or downgrades, removed otherwise, so calls in no hard-capped scope pay nothing here.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costtrace import _validate, calls, records
from costtrace._internal import report_internal_error, report_misuse
from costtrace.errors import ConfigError
from costtrace.records import TaskEvent, new_event_id
from costtrace.spend import admission, runtime
from costtrace.spend.budgets import Budget
from costtrace.spend.runtime import RuleRunner, Runtime

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from costtrace.spend.outcome_rules import OutcomeRule
    from costtrace.spend.store import BudgetState
    from costtrace.spend.webhooks import Webhook

DEFAULT_CLOSE_TIMEOUT_S = 5.0
DEFAULT_BUDGET_TIMEOUT_S = 5.0
_OUTCOMES = ("success", "failure", "partial", "escalated_to_human")


def _set_budgets(rt: Runtime, budgets: Iterable[Budget]) -> None:
    for b in budgets:
        rt.budgets[b.name] = b
    rt.enforcing = tuple(b for b in rt.budgets.values() if b.enforcing)
    rt.writer.set_enforcing(rt.enforcing)
    # Calls pass admission only while some budget blocks or downgrades: otherwise they pay nothing here.
    calls.set_admission_hook(admission.HOOK if rt.enforcing else None)


def configure_ledger(
    url: str | None = None,
    *,
    budgets: Sequence[Budget] = (),
    budgets_file: str | os.PathLike[str] | None = None,
    spool_path: str | Path | None = None,
    max_queue: int = 100_000,
    budget_timeout_s: float = DEFAULT_BUDGET_TIMEOUT_S,
    outcome_rules: Sequence[OutcomeRule] = (),
    outcome_rules_interval_s: float = 60.0,
    webhooks: Sequence[Webhook] = (),
    write_through: bool | None = None,
) -> None:
    """Open the cost ledger and install budgets. Call once at start-up (again to replace it).

    Spool files left by processes that died (a killed worker, a crash while the database was down) are
    replayed into the database from now on, in the background.

    Args:
        url: SQLAlchemy URL: ``sqlite:///path/ledger.db`` or ``postgresql://user@host/db``. Default:
            ``COSTTRACE_LEDGER_URL``, else ``~/.local/share/costtrace/ledger.db``.
        budgets: :class:`costtrace.Budget` definitions.
        budgets_file: A TOML or JSON file of ``[[budget]]``, ``[[outcome_rule]]`` and ``[[webhook]]``
            tables (see :func:`load_config`).
        spool_path: Where records wait while the database is unreachable (default: beside the ledger).
        max_queue: Records held in memory before new ones are dropped (and counted).
        budget_timeout_s: How long a hard-cap reservation may wait for a busy SQLite database before
            the budget store counts as unreachable (then ``fail_open`` decides). PostgreSQL uses its
            connect and statement timeouts (3 s, 10 s).
        outcome_rules: :class:`costtrace.OutcomeRule` alerts (cost per success, first-pass rate ...),
            evaluated every ``outcome_rules_interval_s`` seconds over the ledger.
        webhooks: :class:`costtrace.Webhook` targets for every alert (JSON or Slack payloads).
        write_through: Write each record to the spool file before the recording call returns, so a
            process terminated at any moment loses nothing. Default (None): the
            ``COSTTRACE_LEDGER_WRITE_THROUGH`` environment variable if set, else on in worker processes
            (multiprocessing and Celery pool workers, gunicorn workers, any process forked after
            costtrace was imported) and off in the main program. See docs/ledger.md.

    Raises:
        ConfigError: A bad URL or budget, a missing driver, or a database that cannot be reached or
            migrated now (the message names the URL with its password hidden).

    Example:
        >>> costtrace.configure_ledger("sqlite:///costs.db", budgets=[            # doctest: +SKIP
        ...     costtrace.Budget("support", limit_usd=100, period="month", scope={"feature": "support"},
        ...                      action="block")])
    """
    from sqlalchemy.exc import SQLAlchemyError

    from costtrace.spend import schema, store
    from costtrace.spend.engine import default_url, make_engine, safe_url
    from costtrace.spend.writer import LedgerWriter

    budget_timeout_s = _validate.seconds(budget_timeout_s, "budget_timeout_s", maximum=_validate.MAX_TIMEOUT_S)
    outcome_rules_interval_s = _validate.seconds(
        outcome_rules_interval_s, "outcome_rules_interval_s", maximum=_validate.MAX_INTERVAL_S
    )
    max_queue = _validate.count(max_queue, "max_queue", minimum=1, maximum=_validate.MAX_QUEUE)
    wt_setting: object = write_through  # checked at run time whatever the annotation says
    if wt_setting is not None and not isinstance(wt_setting, bool):
        raise ConfigError(f"write_through={write_through!r} must be True, False or None (automatic)")
    if url is not None and not isinstance(url, str):
        raise ConfigError(f"url={url!r} must be a database URL string or None")
    given: tuple[tuple[str, object], ...] = (
        ("budgets", budgets),
        ("outcome_rules", outcome_rules),
        ("webhooks", webhooks),
    )
    for kind, items in given:
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise ConfigError(f"{kind}= must be a list, got {type(items).__name__}")
    all_budgets = list(budgets)
    outcome_rules = list(outcome_rules)
    webhooks = list(webhooks)
    from costtrace.spend.outcome_rules import OutcomeRule
    from costtrace.spend.webhooks import Webhook

    for kind, items, cls in (
        ("budgets", all_budgets, Budget),
        ("outcome_rules", outcome_rules, OutcomeRule),
        ("webhooks", webhooks, Webhook),
    ):
        for item in items:
            if not isinstance(item, cls):
                raise ConfigError(f"{kind}= takes costtrace.{cls.__name__} objects, got {item!r}")
    if budgets_file is not None:
        file_budgets, file_rules, file_hooks = load_config(budgets_file)
        all_budgets.extend(file_budgets)
        outcome_rules.extend(file_rules)
        webhooks.extend(file_hooks)
    names = [b.name for b in all_budgets]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"budget names must be unique; defined twice: {dupes}")
    resolved = default_url() if url is None else url
    engine = make_engine(resolved)
    try:
        schema.migrate(engine)
        store.save_budget_definitions(engine, all_budgets)
    except SQLAlchemyError as exc:
        engine.dispose()
        cause: BaseException = getattr(exc, "orig", None) or exc
        first_line = (str(cause).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"cannot open the ledger at {safe_url(resolved)!r}: {type(cause).__name__}: {first_line}"
        ) from None
    budget_engine = make_engine(resolved, sqlite_busy_timeout_s=float(budget_timeout_s))
    close_ledger()
    holder: list[Runtime] = []  # the writer keeps its runtime's budgets through close_ledger()
    writer = LedgerWriter(
        engine,
        budgets=lambda: holder[0].budget_list() if holder else (),
        spool_path=spool_path,
        max_queue=max_queue,
        on_committed=_committed_hook(holder),
        write_through=write_through,
    )
    rt = Runtime(engine=engine, budget_engine=budget_engine, writer=writer, url=safe_url(resolved))
    holder.append(rt)
    _set_budgets(rt, all_budgets)
    if webhooks or outcome_rules:
        from costtrace.spend import alerts

        rt.unsubscribe = [alerts.add_webhook(w) for w in webhooks]
        if outcome_rules:
            rt.rules = RuleRunner(engine, outcome_rules, float(outcome_rules_interval_s))
    with runtime.lock:
        runtime.current = rt
    records.add_listener(writer)
    writer.start()  # replays what dead processes left in the spool folder, without waiting for a record
    atexit.register(close_ledger)


_WEBHOOK_KEYS = ("url", "url_env", "slack", "headers", "timeout_s", "retries", "backoff_s")


def load_config(path: str | os.PathLike[str]) -> tuple[list[Budget], list[OutcomeRule], list[Webhook]]:
    """Read budgets, outcome rules and webhooks from one TOML or JSON file.

    Example file (TOML)::

        [[budget]]
        name = "support-daily"
        limit_usd = 50
        period = "day"
        scope = { feature = "support" }
        action = "block"

        [[outcome_rule]]
        name = "support-quality"
        feature = "support"
        window = "1h"
        min_first_pass_rate = 0.8

        [[webhook]]
        url_env = "SLACK_WEBHOOK_URL"     # the URL is a secret: read it from the environment
        slack = true

    Raises:
        ConfigError: The file is unreadable, or an entry is invalid (the message names it), or a
            ``url_env`` variable is not set.
    """
    from costtrace.spend.budgets import budgets_from_config, config_entries, read_config_file
    from costtrace.spend.outcome_rules import OutcomeRule
    from costtrace.spend.webhooks import Webhook

    where = f"config file {str(path)!r}"
    data = read_config_file(path)
    unknown = set(data) - {"budget", "budgets", "outcome_rule", "outcome_rules", "webhook", "webhooks"}
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)}; use budget, outcome_rule, webhook")
    budgets = budgets_from_config(data, where)
    rules: list[OutcomeRule] = []
    for i, entry in enumerate(config_entries(data, ("outcome_rule", "outcome_rules"), where)):
        try:
            rules.append(OutcomeRule.from_dict(entry))
        except (TypeError, ConfigError) as exc:
            raise ConfigError(f"{where}, outcome_rule {i + 1}: {exc}") from exc
    hooks: list[Webhook] = []
    for i, entry in enumerate(config_entries(data, ("webhook", "webhooks"), where)):
        at = f"{where}, webhook {i + 1}"
        unknown = set(entry) - set(_WEBHOOK_KEYS)
        if unknown:
            raise ConfigError(f"{at}: unknown setting(s) {sorted(unknown)}; allowed: {list(_WEBHOOK_KEYS)}")
        settings = dict(entry)
        env = settings.pop("url_env", None)
        if env is not None:
            if "url" in settings:
                raise ConfigError(f"{at}: set url or url_env, not both")
            value = os.environ.get(str(env), "").strip()
            if not value:
                raise ConfigError(f"{at}: the environment variable {env!r} (url_env) is not set")
            settings["url"] = value
        if "url" not in settings:
            raise ConfigError(f"{at}: 'url' or 'url_env' is required")
        try:
            hooks.append(Webhook(**settings))
        except (TypeError, ConfigError) as exc:
            raise ConfigError(f"{at}: {exc}") from exc
    return budgets, rules, hooks


def add_budget(budget: Budget) -> None:
    """Install (or replace, by name) one budget in the running ledger.

    Raises:
        ConfigError: :func:`configure_ledger` was not called.
    """
    from costtrace.spend import store

    if not isinstance(budget, Budget):
        raise ConfigError(f"add_budget() takes a costtrace.Budget, got {budget!r}")
    rt = _require("add_budget")
    store.save_budget_definitions(rt.engine, [budget])
    _set_budgets(rt, [budget])


def _require(what: str) -> Runtime:
    rt = runtime.current
    if rt is None or rt.closed:
        raise ConfigError(f"costtrace.{what}() needs the ledger: call costtrace.configure_ledger() first")
    return rt


def ledger_engine() -> Engine | None:
    """The running ledger's engine (None when no ledger is configured), e.g. for reports."""
    rt = runtime.current
    return rt.engine if rt is not None and not rt.closed else None


def budget_status(name: str | None = None) -> list[BudgetState]:
    """The current period's spend, reservations and limit of each budget (or of ``name``).

    Raises:
        ConfigError: No ledger is configured, or no budget is named ``name``. Nothing else: if the
            ledger cannot be read, the error is logged and counted and the list is empty.

    Example:
        >>> for s in costtrace.budget_status():                   # doctest: +SKIP
        ...     print(s.budget, s.spent_usd, s.limit_usd, s.resets_at)
    """
    from costtrace.spend import store

    rt = _require("budget_status")
    budgets = rt.budget_list() if name is None else tuple(b for b in rt.budget_list() if b.name == name)
    if name is not None and not budgets:
        raise ConfigError(f"no budget named {name!r}; installed: {sorted(rt.budgets)}")
    try:
        return store.budget_states(rt.engine, budgets)
    except Exception as exc:
        report_internal_error("ledger.budget_status", exc)
        return []


@dataclass(frozen=True)
class FlushResult:
    """What :func:`flush_ledger` found: true when nothing recorded is missing, false otherwise.

    ``if costtrace.flush_ledger(): ...`` keeps working as with the plain bool it used to return.

    Attributes:
        complete: Everything recorded before the call reached the database or the spool (and queued
            alert webhooks were delivered) within the timeout.
        lost: Records that can never be written, by reason (``queue_full``, ``spool_full``,
            ``spool_error``, ``invalid``...), counted since the previous ``flush_ledger()`` call.
        pending: Records still in memory.
        spool_bytes: Bytes waiting in this process's spool files (the database was unreachable); they
            are written when it is back.
    """

    complete: bool
    lost: Mapping[str, int] = field(default_factory=dict)
    pending: int = 0
    spool_bytes: int = 0

    def __bool__(self) -> bool:
        return self.complete and not self.lost

    @property
    def lost_total(self) -> int:
        return sum(self.lost.values())


def flush_ledger(timeout_s: float = 5.0) -> FlushResult:
    """Write everything recorded so far to the ledger (or its spool) within ``timeout_s``.

    Spool files that dead processes left on this ledger's spool folder (pool workers write through to
    theirs) are replayed too before it returns, so after ``with multiprocessing.Pool(...)`` one call in
    the parent writes what the workers recorded.

    Returns a :class:`FlushResult`, false if something was not written in time or records were lost
    since the previous call (its ``lost`` says how many, by reason).

    Example:
        >>> result = costtrace.flush_ledger(10)                   # doctest: +SKIP
        >>> if not result:
        ...     print(result.lost, result.pending)
    """
    rt = runtime.current
    if rt is None or rt.closed:
        return FlushResult(True)
    deadline = time.monotonic() + timeout_s
    ok: bool = rt.writer.flush(timeout_s)
    from costtrace.spend import alerts

    ok = alerts.default_dispatcher().flush(max(0.0, deadline - time.monotonic())) and ok
    st = rt.writer.stats()
    with runtime.lock:
        lost = {r: n - rt.lost_reported.get(r, 0) for r, n in st.dropped.items() if n > rt.lost_reported.get(r, 0)}
        rt.lost_reported = dict(st.dropped)
    return FlushResult(ok, lost, st.pending, st.spool_bytes)


def close_ledger(timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S) -> bool:
    """Flush and stop the ledger writer (registered at exit). Idempotent; never hangs past ``timeout_s``."""
    with runtime.lock:
        rt = runtime.current
        runtime.current = None
        calls.set_admission_hook(None)
    if rt is None or rt.closed:
        return True
    rt.closed = True
    deadline = time.monotonic() + timeout_s
    if rt.rules is not None:
        rt.rules.stop(min(1.0, timeout_s))
    records.remove_listener(rt.writer)
    ok: bool = rt.writer.close(max(0.0, deadline - time.monotonic()))
    from costtrace.spend import alerts

    ok = alerts.default_dispatcher().flush(max(0.0, deadline - time.monotonic())) and ok
    for unsubscribe in rt.unsubscribe:
        unsubscribe()
    try:
        rt.engine.dispose()
        rt.budget_engine.dispose()
    except Exception as exc:
        report_internal_error("ledger.dispose", exc)
    return bool(ok)


# --- late outcomes -----------------------------------------------------------------------------------


def record_outcome(
    task_id: str,
    outcome: str,
    *,
    reason: str | None = None,
    rework_cost_usd: Decimal | float | str | None = None,
) -> None:
    """Restate a finished task's outcome: a ticket reopened, a reviewer fixed the output.

    The task id is ``t.summary.task_id`` (or ``costtrace.task.id`` on the task span). Works from any
    process sharing the ledger, even before the task's own row is written.

    Args:
        task_id: The task to restate.
        outcome: ``success`` | ``failure`` | ``partial`` | ``escalated_to_human``.
        reason: Why (free text).
        rework_cost_usd: Human cost of fixing it, counted in TCO reports.

    Never raises into your app: with no ledger configured or a bad argument (an unknown outcome, a
    negative or NaN rework cost), the call is ignored, logged (at most once a minute) and counted. Under
    pytest it raises :class:`costtrace.ConfigError` instead, so your tests catch the mistake.

    Example:
        >>> costtrace.record_outcome(task_id, "escalated_to_human", reason="ticket reopened",  # doctest: +SKIP
        ...                          rework_cost_usd=37.5)
    """
    try:
        _require("record_outcome")
        value = getattr(outcome, "value", outcome)
        if not isinstance(value, str) or value not in _OUTCOMES:
            raise ConfigError(f"record_outcome: outcome={outcome!r} is not one of {_OUTCOMES}")
        if not isinstance(task_id, str) or not task_id:
            raise ConfigError(f"record_outcome: task_id={task_id!r} must be the task's id (t.summary.task_id)")
        if reason is not None and not isinstance(reason, str):
            raise ConfigError(f"record_outcome: reason={reason!r} must be a str or None")
        rework = None if rework_cost_usd is None else _validate.usd(rework_cost_usd, "record_outcome: rework_cost_usd")
    except ConfigError as exc:
        report_misuse("record_outcome", exc)
        return
    records.emit_event(
        TaskEvent(
            event_id=new_event_id(),
            kind="outcome_updated",
            at=datetime.now(UTC),
            task_id=task_id,
            reason=reason,
            outcome=str(value),
            amount_usd=rework,
        )
    )


# --- alerts glue ---------------------------------------------------------------------------------------


def _committed_hook(holder: list[Runtime]) -> Callable[[list[Any]], None]:
    """After each commit (on the writer's thread): check the thresholds of the budgets it changed."""

    def on_committed(touched: list[Any]) -> None:
        if not holder or not touched:
            return
        from costtrace.spend import alerts

        rt = holder[0]
        names = {t.budget for t in touched}
        alerts.check_budgets(rt.engine, [b for b in rt.budget_list() if b.name in names], touched)

    return on_committed
