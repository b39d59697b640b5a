"""The process-wide ledger and budgets: set-up, admission of each call against hard caps, late outcomes.

:func:`configure_ledger` opens the ledger database (SQLite by default, PostgreSQL by URL), starts the
background writer and installs the budgets. From then on:

- every finished call, task and task event is written to the ledger off the hot path;
- every call in the scope of a hard-capped budget (``action="block"`` or ``"downgrade"``) is admitted by
  :func:`admit` before its request is sent: its worst-case cost is reserved atomically in the shared
  database, and a call that could exceed the limit raises :class:`costtrace.BudgetExceeded`;
- after each committed batch, budget thresholds are checked and alerts fire once per period.

Admission reaches the call path through :func:`costtrace.calls.set_admission_hook`: installed while some
budget blocks or downgrades, removed otherwise, so calls in no hard-capped scope pay nothing here.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costtrace import _validate, calls, records
from costtrace import semconv as sc
from costtrace._internal import logger, report_internal_error, report_misuse
from costtrace.errors import BudgetExceeded, BudgetStoreUnavailable, ConfigError, TaskBudgetExceeded
from costtrace.records import TaskEvent, new_event_id
from costtrace.spend.budgets import Budget

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from costtrace.calls import LLMCall
    from costtrace.spend.outcome_rules import OutcomeRule
    from costtrace.spend.store import BudgetState
    from costtrace.spend.webhooks import Webhook
    from costtrace.spend.writer import LedgerWriter
    from costtrace.tasks import Task

DEFAULT_CLOSE_TIMEOUT_S = 5.0
DEFAULT_BUDGET_TIMEOUT_S = 5.0
_STORE_DOWN_LOG_INTERVAL_S = 60.0
_OUTCOMES = ("success", "failure", "partial", "escalated_to_human")


@dataclass
class _Runtime:
    engine: Engine
    budget_engine: Engine
    """A pool of its own for reservations (on the app's thread), with a short SQLite busy timeout."""
    writer: LedgerWriter
    url: str
    budgets: dict[str, Budget] = field(default_factory=dict)
    enforcing: tuple[Budget, ...] = ()
    store_down_since: float | None = None
    store_down_logged: float = 0.0
    admitted_fail_open: int = 0
    closed: bool = False
    rules: _RuleRunner | None = None
    unsubscribe: list[Callable[[], None]] = field(default_factory=list)
    lost_reported: dict[str, int] = field(default_factory=dict)
    """The writer's lost-record counts already returned by :func:`flush_ledger`."""

    def budget_list(self) -> tuple[Budget, ...]:
        return tuple(self.budgets.values())


_lock = threading.Lock()
_runtime: _Runtime | None = None


def _set_budgets(rt: _Runtime, budgets: Iterable[Budget]) -> None:
    for b in budgets:
        rt.budgets[b.name] = b
    rt.enforcing = tuple(b for b in rt.budgets.values() if b.enforcing)
    rt.writer.set_enforcing(rt.enforcing)
    # Calls pass admission only while some budget blocks or downgrades: otherwise they pay nothing here.
    calls.set_admission_hook(_HOOK if rt.enforcing else None)


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
    global _runtime
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
    holder: list[_Runtime] = []  # the writer keeps its runtime's budgets through close_ledger()
    writer = LedgerWriter(
        engine,
        budgets=lambda: holder[0].budget_list() if holder else (),
        spool_path=spool_path,
        max_queue=max_queue,
        on_committed=_committed_hook(holder),
        write_through=write_through,
    )
    rt = _Runtime(engine=engine, budget_engine=budget_engine, writer=writer, url=safe_url(resolved))
    holder.append(rt)
    _set_budgets(rt, all_budgets)
    if webhooks or outcome_rules:
        from costtrace.spend import alerts

        rt.unsubscribe = [alerts.add_webhook(w) for w in webhooks]
        if outcome_rules:
            rt.rules = _RuleRunner(engine, outcome_rules, float(outcome_rules_interval_s))
    with _lock:
        _runtime = rt
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


def _require(what: str) -> _Runtime:
    rt = _runtime
    if rt is None or rt.closed:
        raise ConfigError(f"costtrace.{what}() needs the ledger: call costtrace.configure_ledger() first")
    return rt


def ledger_engine() -> Engine | None:
    """The running ledger's engine (None when no ledger is configured), e.g. for reports."""
    rt = _runtime
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
        report_internal_error("spending.budget_status", exc)
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
    rt = _runtime
    if rt is None or rt.closed:
        return FlushResult(True)
    deadline = time.monotonic() + timeout_s
    ok: bool = rt.writer.flush(timeout_s)
    from costtrace.spend import alerts

    ok = alerts.default_dispatcher().flush(max(0.0, deadline - time.monotonic())) and ok
    st = rt.writer.stats()
    with _lock:
        lost = {r: n - rt.lost_reported.get(r, 0) for r, n in st.dropped.items() if n > rt.lost_reported.get(r, 0)}
        rt.lost_reported = dict(st.dropped)
    return FlushResult(ok, lost, st.pending, st.spool_bytes)


def close_ledger(timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S) -> bool:
    """Flush and stop the ledger writer (registered at exit). Idempotent; never hangs past ``timeout_s``."""
    global _runtime
    with _lock:
        rt = _runtime
        _runtime = None
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
        report_internal_error("spending.dispose", exc)
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


# --- admission: hard caps before the call ------------------------------------------------------------


def _input_tokens(request_input: object, model: str) -> int:
    from costtrace.price.tokens import count_tokens

    if request_input is None:
        return 0
    if isinstance(request_input, tuple):
        return sum(_input_tokens(part, model) for part in request_input)
    return int(count_tokens(request_input, model))  # type: ignore[arg-type]


@dataclass(frozen=True)
class WorstCase:
    """A call's worst-case cost for a budget: what is reserved before it is sent."""

    nano_usd: int | None
    """None when the model has no price and the budget no fallback price: the call is blocked."""
    input_tokens: int
    output_tokens: int
    fallback: bool


def worst_case(budget: Budget, *, provider: str, model: str, input_tokens: int, max_tokens: int | None) -> WorstCase:
    """All input at the higher of the uncached and cache-write price, plus ``max_tokens`` of output
    (or the budget's ``max_output_tokens``), priced as the call would be.

    Example:
        >>> b = Budget("b", limit_usd=1, action="block")
        >>> worst_case(b, provider="openai", model="gpt-4o-mini", input_tokens=1000, max_tokens=100).nano_usd
        210000
    """
    from costtrace._money import to_nano
    from costtrace.price.catalog import default_catalog
    from costtrace.usage import Usage

    out = max_tokens if max_tokens is not None and max_tokens >= 0 else budget.max_output_tokens
    catalog = default_catalog()
    plain = catalog.cost(Usage(input_tokens=input_tokens, output_tokens=out), provider=provider, model=model)
    if plain.total_usd is not None:
        cached = catalog.cost(
            Usage(
                input_tokens=input_tokens,
                output_tokens=out,
                cache_write_input_tokens=input_tokens,
                cache_write_1h_input_tokens=input_tokens,
            ),
            provider=provider,
            model=model,
        )
        amount = max(plain.total_usd, cached.total_usd or plain.total_usd)
        return WorstCase(to_nano(amount), input_tokens, out, False)
    fb = budget.fallback_price
    if fb is not None and not isinstance(fb, tuple):
        return WorstCase(to_nano(fb.cost_usd(input_tokens, out)), input_tokens, out, True)
    return WorstCase(None, input_tokens, out, False)


def admit(call: LLMCall, task: Task | None, request_input: object, at: datetime) -> None:
    """Reserve the call's worst-case cost on every hard-capped budget in its scope, or raise.

    May change ``call.model`` (``downgrade``). Raises only :class:`BudgetExceeded` (and subclasses);
    costtrace's own failures are reported and let the call through.
    """
    rt = _runtime
    if rt is None or rt.closed or not rt.enforcing:
        return
    dims = task._dimensions if task is not None else {}
    task_name = task.name if task is not None else None
    tried: set[str] = set()
    while True:
        model = call.model
        tried.add(model)
        scoped = [b for b in rt.enforcing if b.matches(dims, task_name=task_name, provider=call.provider, model=model)]
        if not scoped:
            return
        denied = _try_reserve(rt, call, task, scoped, request_input, at)
        if denied is None:
            return
        budget, exc = denied
        alt = _downgrade(budget, model) if budget.action == "downgrade" and call.downgradable else None
        if alt is not None and alt not in tried:
            logger.info("costtrace: budget %r is exhausted; downgrading %r to %r", budget.name, model, alt)
            call.model = alt
            call._downgraded_from = call._downgraded_from or model
            continue
        _blocked(task, call, exc)
        raise exc


def release(call: LLMCall) -> None:
    """Give back the reservation of a call that will never be recorded: the SDK refused its request before
    sending it. Runs on the app's thread, like :func:`admit`; a failure is reported (the reservation's
    lease then frees it) and never raised."""
    rt = _runtime
    if rt is None or not call._reserved:
        return
    call._reserved = False
    from costtrace.spend import store

    try:
        rt.writer.forget_reserved(call.id)
        store.release(rt.budget_engine, [call.id])
    except Exception as exc:
        report_internal_error("spending.release", exc)


class _AdmissionHook:
    """:func:`admit` and :func:`release`, as the :class:`costtrace.calls.AdmissionHook` calls see."""

    admit = staticmethod(admit)
    release = staticmethod(release)


_HOOK = _AdmissionHook()


def _downgrade(budget: Budget, model: str) -> str | None:
    hook = budget.downgrade_to
    try:
        if isinstance(hook, Mapping):
            alt = hook.get(model)
        elif callable(hook):
            alt = hook(model)
        else:
            return None
    except Exception as exc:
        logger.warning("costtrace: downgrade_to of budget %r raised %s", budget.name, type(exc).__qualname__)
        return None
    return str(alt) if alt else None


def _try_reserve(
    rt: _Runtime,
    call: LLMCall,
    task: Task | None,
    scoped: Sequence[Budget],
    request_input: object,
    at: datetime,
) -> tuple[Budget, BudgetExceeded] | None:
    from costtrace._money import from_nano
    from costtrace.spend import store

    try:
        n_in = _input_tokens(request_input, call.model)
    except Exception as exc:
        report_internal_error("spending.count_input", exc)
        n_in = 0
    holds: list[tuple[Budget, int]] = []
    for budget in scoped:
        wc = worst_case(
            budget, provider=call.provider, model=call.model, input_tokens=n_in, max_tokens=call._max_tokens
        )
        if wc.nano_usd is None:
            return budget, BudgetExceeded(
                f"budget {budget.name!r} blocked a call to {call.model!r}: the model has no price, so its cost "
                "cannot be bounded; add a price (costtrace.set_price) or a fallback_price to the budget",
                budget=budget.name,
                limit_usd=budget.limit,
            )
        holds.append((budget, wc.nano_usd))
    try:
        unwritten = rt.writer.pending_nano([b for b, _ in holds], at)
        denied = store.reserve(rt.budget_engine, holds, call_id=call.id, at=at, unwritten=unwritten)
    except Exception as exc:
        refused = _store_unavailable(rt, scoped, exc)
        if refused is None:
            call._budget_unchecked = True  # let through unreserved (fail_open): flagged on its span
        return refused
    if rt.store_down_since is not None:
        logger.warning("costtrace: the budget store is reachable again")
        rt.store_down_since = None
    if denied is None:
        call._reserved = True
        rt.writer.note_reserved(call.id)
        return None
    st = denied.state
    budget = rt.budgets[denied.budget]
    requested = from_nano(denied.requested_nano_usd)
    resets = f"; resets {st.resets_at.isoformat()}" if st.resets_at is not None else ""
    message = (
        f"budget {budget.name!r} would be exceeded by a call to {call.model!r}: spent ${st.spent_usd:.6f} + "
        f"in flight ${st.reserved_usd:.6f} + this call's worst case ${requested:.6f} > limit "
        f"${st.limit_usd}{resets}"
    )
    _alert_exhausted(rt, budget, st)
    return budget, BudgetExceeded(
        message,
        budget=budget.name,
        spent_usd=st.spent_usd,
        reserved_usd=st.reserved_usd,
        limit_usd=st.limit_usd,
        requested_usd=requested,
        resets_at=st.resets_at,
    )


def _store_unavailable(rt: _Runtime, scoped: Sequence[Budget], exc: Exception) -> tuple[Budget, BudgetExceeded] | None:
    now = time.monotonic()
    if rt.store_down_since is None:
        rt.store_down_since = now
    closed = [b for b in scoped if not b.fail_open]
    if now - rt.store_down_logged >= _STORE_DOWN_LOG_INTERVAL_S:
        rt.store_down_logged = now
        logger.error(
            "costtrace: the budget store at %s is unreachable (%s); hard caps %s",
            rt.url,
            type(exc).__name__,
            "block calls (fail_open=False)" if closed else "let calls through (fail_open=True)",
        )
        _alert_store_unavailable(rt, scoped, exc)
    if closed:
        b = closed[0]
        return b, BudgetStoreUnavailable(
            f"budget {b.name!r} blocked the call: the budget store at {rt.url} is unreachable "
            f"({type(exc).__name__}) and the budget has fail_open=False",
            budget=b.name,
            limit_usd=b.limit,
        )
    rt.admitted_fail_open += 1
    return None


def _blocked(task: Task | None, call: LLMCall, exc: BudgetExceeded) -> None:
    """Leave a trace of a blocked call: a task span event and a ledger event."""
    try:
        attrs: dict[str, Any] = {sc.BUDGET_NAME: exc.budget, sc.EVENT_ATTR_MODEL: call.model}
        if isinstance(exc, TaskBudgetExceeded):
            attrs[sc.EVENT_ATTR_REASON] = exc.cap
        if task is not None:
            task._span.add_event(sc.EVENT_BUDGET_BLOCKED, attrs)
        records.emit_event(
            TaskEvent(
                event_id=new_event_id(),
                kind="budget_blocked",
                at=datetime.now(UTC),
                task_id=task.id if task is not None else None,
                attempt=task.attempt if task is not None else None,
                reason=str(exc),
                to_model=call.model,
                amount_usd=exc.requested_usd,
                data={"budget": exc.budget},
            )
        )
    except Exception as err:
        report_internal_error("spending.blocked", err)


# --- alerts glue ---------------------------------------------------------------------------------------


def _committed_hook(holder: list[_Runtime]) -> Callable[[list[Any]], None]:
    """After each commit (on the writer's thread): check the thresholds of the budgets it changed."""

    def on_committed(touched: list[Any]) -> None:
        if not holder or not touched:
            return
        from costtrace.spend import alerts

        rt = holder[0]
        names = {t.budget for t in touched}
        alerts.check_budgets(rt.engine, [b for b in rt.budget_list() if b.name in names], touched)

    return on_committed


def _alert_exhausted(rt: _Runtime, budget: Budget, state: BudgetState) -> None:
    from costtrace.spend import alerts

    alerts.check_budgets(rt.engine, [budget])


def _alert_store_unavailable(rt: _Runtime, scoped: Sequence[Budget], exc: Exception) -> None:
    from costtrace.spend import alerts

    for budget in scoped:
        alerts.notify_store_unavailable(budget, exc)


class _RuleRunner:
    """Evaluates outcome rules every ``interval_s`` on a daemon thread of its own."""

    def __init__(self, engine: Engine, rules: Sequence[OutcomeRule], interval_s: float) -> None:
        self._engine = engine
        self._rules = tuple(rules)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="costtrace-outcome-rules", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from costtrace.spend.outcome_rules import evaluate_outcome_rules

        while not self._stop.wait(self._interval_s):
            try:
                evaluate_outcome_rules(self._engine, self._rules)
            except Exception as exc:
                try:
                    report_internal_error("spending.outcome_rules", exc)
                except Exception:  # under the test suite it re-raises: never kill the thread
                    pass

    def stop(self, timeout_s: float) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
