"""Admission: each call in the scope of a hard-capped budget reserves its worst-case cost before it is sent.

While some budget blocks or downgrades, :mod:`costtrace.spend.ledger` installs :data:`HOOK` in the call
path (:func:`costtrace.calls.set_admission_hook`). For each call, :func:`admit` prices the call's worst
case (:func:`worst_case`) on every hard-capped budget in its scope and reserves it atomically in the
shared database (:func:`costtrace.spend.reservations.reserve`); a call that could exceed a limit is
downgraded (``action="downgrade"``) or raises :class:`costtrace.BudgetExceeded`. A call whose request
the SDK refuses before sending it gives its reservation back (:func:`release`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from costtrace import records
from costtrace import semconv as sc
from costtrace._internal import logger, report_internal_error
from costtrace.errors import BudgetExceeded, BudgetStoreUnavailable, TaskBudgetExceeded
from costtrace.records import TaskEvent, new_event_id
from costtrace.spend import runtime
from costtrace.spend.budgets import Budget
from costtrace.spend.runtime import Runtime

if TYPE_CHECKING:
    from costtrace.calls import LLMCall
    from costtrace.spend.store import BudgetState
    from costtrace.tasks import Task

_STORE_DOWN_LOG_INTERVAL_S = 60.0


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
    rt = runtime.current
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
    rt = runtime.current
    if rt is None or not call._reserved:
        return
    call._reserved = False
    from costtrace.spend import reservations

    try:
        rt.writer.forget_reserved(call.id)
        reservations.release(rt.budget_engine, [call.id])
    except Exception as exc:
        report_internal_error("admission.release", exc)


class _AdmissionHook:
    """:func:`admit` and :func:`release`, as the :class:`costtrace.calls.AdmissionHook` calls see."""

    admit = staticmethod(admit)
    release = staticmethod(release)


HOOK = _AdmissionHook()
"""What :mod:`costtrace.spend.ledger` installs in the call path while some budget blocks or downgrades."""


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
    rt: Runtime,
    call: LLMCall,
    task: Task | None,
    scoped: Sequence[Budget],
    request_input: object,
    at: datetime,
) -> tuple[Budget, BudgetExceeded] | None:
    from costtrace._money import from_nano
    from costtrace.spend import reservations

    try:
        n_in = _input_tokens(request_input, call.model)
    except Exception as exc:
        report_internal_error("admission.count_input", exc)
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
        denied = reservations.reserve(rt.budget_engine, holds, call_id=call.id, at=at, unwritten=unwritten)
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


def _store_unavailable(rt: Runtime, scoped: Sequence[Budget], exc: Exception) -> tuple[Budget, BudgetExceeded] | None:
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
        report_internal_error("admission.blocked", err)


def _alert_exhausted(rt: Runtime, budget: Budget, state: BudgetState) -> None:
    from costtrace.spend import alerts

    alerts.check_budgets(rt.engine, [budget])


def _alert_store_unavailable(rt: Runtime, scoped: Sequence[Budget], exc: Exception) -> None:
    from costtrace.spend import alerts

    for budget in scoped:
        alerts.notify_store_unavailable(budget, exc)
