"""Self-hosting as a what-if lever: a fixed monthly cost plus a per-token cost, against the API route.

:func:`costtrace.analysis.routing.whatif` with ``self_host_monthly_usd`` re-prices the projected route as
if its models ran on your own hardware: ``F`` USD a month (GPUs, ops) whatever the volume, plus ``a`` /
``b`` USD per million input / output tokens (power, spot capacity; 0 by default). The API route costs
``C_api`` per task (its projected cost / tasks: failed attempts and escalations included, the basis of
every what-if figure), self-hosting ``c`` per task in tokens, so ``V`` tasks a month cost ``V x C_api``
on the API and ``F + V x c`` self-hosted. They are equal at the break-even volume

    ``V* = F / (C_api - c)`` tasks a month,

and self-hosting costs less above it. When ``c >= C_api`` there is none: self-hosting never costs less.

The tokens of a task are the what-if's token need (each task's first recorded attempt, mean input and
output over the scope) times the route's expected attempts per task (1 for one model; ``1 + p_a`` for a
cascade ``a->b``, ...): the self-hosted models are the route's models, so they fail at the route's
rates (measured, or given). The measured volume is the scope's tasks divided by the time they cover,
from the first task's end to the last's, in months of 30.4375 days (365.25 / 12). A span under
:data:`MIN_SPAN` (one task, or a burst of tasks) measures no volume: the monthly figures are then left
out (None), and the assumptions say why, rather than extrapolating a month from a few minutes.

Example:
    >>> w = whatif(engine, route="gpt-4o", self_host_monthly_usd=2000, self_host_output_per_mtok=1)  # doctest: +SKIP
    >>> w.self_hosting.break_even_tasks_per_month, w.self_hosting.tasks_per_month                  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, Literal

from costtrace._money import usd
from costtrace.analysis.tco import _CTX, Amount, Filters, _amount, task_conditions
from costtrace.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["MIN_SPAN", "MONTH_DAYS", "SelfHostPrice", "SelfHosting", "SelfHostingVerdict"]

MONTH_DAYS = Decimal("30.4375")
"""Days in a month: 365.25 / 12."""
MIN_SPAN = timedelta(days=1)
"""The shortest time span of the scope's tasks from which a monthly volume is measured."""
_ZERO = Decimal(0)
_MTOK = Decimal(1_000_000)
_DAY_US = Decimal(86_400_000_000)

SelfHostingVerdict = Literal["above", "always", "never", "tie"]
"""When self-hosting costs less than the API route: above the break-even volume; at any volume (no
fixed cost, cheaper tokens); never (its cost per task is not below the API's); or the same at every
volume (no fixed cost, the same cost per task)."""


@dataclass(frozen=True, slots=True)
class SelfHostPrice:
    """What self-hosting costs: ``monthly_usd`` a month whatever the volume, plus a per-token cost."""

    monthly_usd: Decimal
    input_per_mtok: Decimal = _ZERO
    """USD per million input tokens (every input token: no prompt-cache discount)."""
    output_per_mtok: Decimal = _ZERO
    """USD per million output tokens (reasoning included)."""


def self_host_price(
    monthly_usd: Amount | None, input_per_mtok: Amount | None, output_per_mtok: Amount | None
) -> SelfHostPrice | None:
    """The validated price, None without ``monthly_usd``; ConfigError for a bad value or a per-token cost alone."""
    from costtrace import _validate

    if monthly_usd is None:
        given = [n for n, v in (("input", input_per_mtok), ("output", output_per_mtok)) if v is not None]
        if given:
            raise ConfigError(
                f"self_host_{given[0]}_per_mtok is given without self_host_monthly_usd: self-hosting needs its "
                "fixed monthly cost (GPUs, ops; 0 if none), e.g. self_host_monthly_usd=Decimal('2000')"
            )
        return None

    def rate(value: Amount | None, name: str) -> Decimal:
        if value is None:
            return _ZERO
        return _validate.number(
            value,
            name,
            maximum=_validate.MAX_PRICE_PER_MTOK,
            floats=False,
            hint="USD per million tokens, 0 or more, e.g. Decimal('0.4')",
        )

    return SelfHostPrice(
        monthly_usd=_amount(monthly_usd, "self_host_monthly_usd"),
        input_per_mtok=rate(input_per_mtok, "self_host_input_per_mtok"),
        output_per_mtok=rate(output_per_mtok, "self_host_output_per_mtok"),
    )


@dataclass(frozen=True, slots=True)
class SelfHosting:
    """The projected route self-hosted, against the same route on the API; see the module docstring."""

    price: SelfHostPrice
    attempts_per_task: Decimal
    """Expected attempts per task on the route: ``1 + p_a + p_a x p_b + ...``."""
    input_tokens_per_task: Decimal
    output_tokens_per_task: Decimal
    cost_per_task_usd: Decimal
    """``c``: the per-token cost of one task self-hosted (the fixed cost not included)."""
    api_cost_per_task_usd: Decimal
    """``C_api``: the projected API route's cost per task, failed attempts and escalations included."""
    success_rate: Decimal
    """The route's projected success rate, the same self-hosted and on the API."""
    verdict: SelfHostingVerdict
    break_even_tasks_per_month: Decimal | None
    """``V* = F / (C_api - c)``; 0 with no fixed cost and cheaper tokens; None when ``verdict`` is never or tie."""
    tasks: int
    first_ended_at: datetime
    last_ended_at: datetime
    """The first and last end of the scope's tasks (UTC): the span the volume is measured over."""
    tasks_per_month: Decimal | None
    """The measured volume: tasks / span in months; None when the span is under :data:`MIN_SPAN`."""

    @property
    def span(self) -> timedelta:
        return self.last_ended_at - self.first_ended_at

    @property
    def span_days(self) -> Decimal:
        with localcontext(_CTX):
            return Decimal(self.span // timedelta(microseconds=1)) / _DAY_US

    @property
    def break_even_tasks_per_month_whole(self) -> int | None:
        """The smallest whole monthly volume at which self-hosting costs no more than the API."""
        v = self.break_even_tasks_per_month
        return None if v is None else math.ceil(v)

    @property
    def api_monthly_cost_usd(self) -> Decimal | None:
        """The measured volume's monthly cost on the API route (None: no measured volume)."""
        v = self.tasks_per_month
        with localcontext(_CTX):
            return None if v is None else v * self.api_cost_per_task_usd

    @property
    def monthly_cost_usd(self) -> Decimal | None:
        """The measured volume's monthly cost self-hosted: ``F + V x c`` (None: no measured volume)."""
        v = self.tasks_per_month
        with localcontext(_CTX):
            return None if v is None else self.price.monthly_usd + v * self.cost_per_task_usd

    @property
    def cost_per_success_usd(self) -> Decimal | None:
        """Self-hosted cost per successful task at the measured volume: ``(F + V x c) / (V x success rate)``.

        None without a success, or without a measured volume when there is a fixed cost (with none it
        is ``c / success rate`` at any volume).
        """
        v, monthly = self.tasks_per_month, self.monthly_cost_usd
        with localcontext(_CTX):
            if not self.success_rate:
                return None
            if not self.price.monthly_usd:
                return self.cost_per_task_usd / self.success_rate
            if v is None or monthly is None or not v:
                return None
            return monthly / (v * self.success_rate)

    @property
    def api_cost_per_success_usd(self) -> Decimal | None:
        with localcontext(_CTX):
            return self.api_cost_per_task_usd / self.success_rate if self.success_rate else None


def scope_span(engine: Engine, filters: Filters) -> tuple[datetime, datetime] | None:
    """The first and last ``ended_at`` (UTC) of the scope's tasks that made LLM calls; None without any."""
    import sqlalchemy as sa

    from costtrace.spend import schema

    t = schema.tasks.c
    query = sa.select(sa.func.min(t.ended_at), sa.func.max(t.ended_at)).where(
        *task_conditions(filters), t.route.is_not(None)
    )
    with engine.connect() as conn:
        first, last = conn.execute(query).one()
    if first is None or last is None:
        return None
    return _utc(first), _utc(last)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def project(
    price: SelfHostPrice,
    *,
    route: str,
    tasks: int,
    input_tokens_per_task: Decimal,
    output_tokens_per_task: Decimal,
    attempts_per_task: Decimal,
    api_cost_per_task_usd: Decimal,
    success_rate: Decimal,
    span: tuple[datetime, datetime],
) -> tuple[SelfHosting, list[str]]:
    """The self-hosted figures and the assumptions that state how they were made."""
    first, last = span
    with localcontext(_CTX):
        tokens_in, tokens_out = input_tokens_per_task, output_tokens_per_task
        per_task = (tokens_in * price.input_per_mtok + tokens_out * price.output_per_mtok) / _MTOK
        gap = api_cost_per_task_usd - per_task
        verdict: SelfHostingVerdict
        if gap > 0:
            even: Decimal | None = price.monthly_usd / gap
            verdict = "above" if price.monthly_usd else "always"
        else:
            even = None
            verdict = "tie" if gap == 0 and not price.monthly_usd else "never"
        elapsed = last - first
        per_month = None
        if elapsed >= MIN_SPAN:
            per_month = tasks * MONTH_DAYS * _DAY_US / Decimal(elapsed // timedelta(microseconds=1))
    result = SelfHosting(
        price=price,
        attempts_per_task=attempts_per_task,
        input_tokens_per_task=tokens_in,
        output_tokens_per_task=tokens_out,
        cost_per_task_usd=per_task,
        api_cost_per_task_usd=api_cost_per_task_usd,
        success_rate=success_rate,
        verdict=verdict,
        break_even_tasks_per_month=even,
        tasks=tasks,
        first_ended_at=first,
        last_ended_at=last,
        tasks_per_month=per_month,
    )
    return result, _assumptions(result, route)


def _plain(amount: Decimal, places: int | None = None) -> str:
    if places is not None:
        amount = amount.quantize(Decimal(1).scaleb(-places))
    return f"{amount.normalize():f}"


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration_text(span: timedelta) -> str:
    """A span for reading: ``0.006 s``, ``42 min``, ``5.5 hours``, ``12.3 days``."""
    seconds = span.total_seconds()
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86_400:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86_400:.1f} days"


def volume_figure(per_month: Decimal) -> str:
    """A monthly volume for reading: whole tasks from 100 up, one decimal below."""
    return f"{per_month:,.0f}" if per_month >= 100 else f"{per_month:,.1f}"


def volume_text(s: SelfHosting) -> str:
    """How the monthly volume was measured, or why it was not."""
    if s.tasks_per_month is not None:
        return (
            f"tasks per month = {s.tasks} tasks / {_plain(s.span_days, 2)} days (from the first task's end, "
            f"{_when(s.first_ended_at)}, to the last's, {_when(s.last_ended_at)}) x 30.4375 days a month "
            f"(365.25 / 12) = {_plain(s.tasks_per_month, 1)}, assuming the scope's pace holds all month"
        )
    if s.tasks == 1:
        why = f"there is one task (ended {_when(s.first_ended_at)}): no time span to measure a pace over"
    else:
        why = (
            f"the {s.tasks} tasks all ended within {duration_text(s.span)} (from {_when(s.first_ended_at)} to "
            f"{_when(s.last_ended_at)}), under the minimum span of one day"
        )
    return (
        f"tasks per month: NOT MEASURED: {why}; the monthly costs and the self-hosted cost per successful "
        "task are left out rather than extrapolated (record tasks over a longer period, or widen the window)"
    )


def break_even_text(s: SelfHosting) -> str:
    """The break-even volume in words."""
    c, api = usd(s.cost_per_task_usd), usd(s.api_cost_per_task_usd)
    if s.verdict == "never":
        return (
            f"no break-even: self-hosting's token cost per task ({c}) is not below the API route's ({api}), "
            "so self-hosting never costs less, whatever the volume"
        )
    if s.verdict == "tie":
        return f"no break-even: with no fixed cost and the same cost per task ({c}), both cost the same at any volume"
    if s.verdict == "always":
        return f"no fixed cost and a lower cost per task ({c} vs {api}): self-hosting costs less at any volume"
    assert s.break_even_tasks_per_month is not None and s.break_even_tasks_per_month_whole is not None
    text = (
        f"break-even: {s.break_even_tasks_per_month_whole:,} tasks a month (V* = fixed / (API - self-hosted cost "
        f"per task) = {usd(s.price.monthly_usd)} / ({api} - {c})); self-hosting costs less above that"
    )
    if s.tasks_per_month is not None:
        with localcontext(_CTX):
            share = s.tasks_per_month / s.break_even_tasks_per_month
        side = "self-hosting costs less" if s.tasks_per_month > s.break_even_tasks_per_month else "the API costs less"
        volume = volume_figure(s.tasks_per_month)
        text += f"; measured volume {volume} tasks a month ({share * 100:.1f}% of it): {side} today"
    return text


def _assumptions(s: SelfHosting, route: str) -> list[str]:
    p = s.price
    return [
        f"self-hosting {route}: ${_plain(p.monthly_usd)} a month fixed (GPUs, ops) + "
        f"${_plain(p.input_per_mtok)}/${_plain(p.output_per_mtok)} per MTok input/output on every attempt (every "
        "input token, cached or not); the self-hosted models are the route's, failing at the same rates as above "
        "(measured on this scope, or given), so the attempts per task and the success rate are the API route's",
        f"self-hosted tokens per task = token need x {_plain(s.attempts_per_task, 4)} expected attempts per task "
        "(x each model's token multiplier, if any) = "
        f"{_plain(s.input_tokens_per_task, 1)} in / {_plain(s.output_tokens_per_task, 1)} out: "
        f"${_plain(s.cost_per_task_usd, 10)} per task self-hosted vs ${_plain(s.api_cost_per_task_usd, 10)} per "
        "task on the API route (its projected cost / tasks, failed attempts and escalations included)",
        volume_text(s),
        "break-even volume V* = fixed cost a month / (API - self-hosted cost per task); none when the self-hosted "
        "cost per task is not below the API route's",
    ]
