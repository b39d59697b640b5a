"""``costtrace demo``: a simulated support-ticket workload run through three model-routing strategies.

No model is called and nothing goes over the network (unless you ask for ``--otlp-endpoint``). Each
ticket is a real ``costtrace.task``; each simulated model call goes through costtrace's manual call API
with token counts drawn from a seeded RNG, and is priced from the real price list. The same tickets
then go through each strategy, so the tables compare routings, not luck.

The simulated workload (the constants below):

- A ticket's prompt is the system prompt (:data:`SYSTEM_PROMPT_TOKENS`), the ticket text
  (:data:`TICKET_TOKENS`) and retrieved help-center articles (:data:`ARTICLE_TOKENS`). The answer is
  :data:`OUTPUT_TOKENS` long and must pass a validator (schema and refund-policy checks).
- The validator rejects an attempt with a fixed probability per model (:data:`VALIDATION_FAILURE_RATE`:
  35% for ``gpt-4o-mini``, 5% for ``gpt-4o``), independently of earlier attempts. Real failures are
  often tied to hard tickets, which makes retries less useful than they are here.
- A rejected attempt is retried on the same model (the prompt grows by the rejected answer and
  :data:`RETRY_FEEDBACK_TOKENS` of validator feedback, and its prefix is read from the prompt cache)
  or escalated to the next model of the strategy; after :data:`MAX_ATTEMPTS` the task fails.
- Prompt caching follows OpenAI's rule: prefixes of 1,024 tokens or more are cached in 128-token
  steps. A share of tickets (:data:`WARM_CACHE_SHARE`) finds the shared system prompt still cached.
- The rework cost (``--rework-cost``, default $2.00) is what one unresolved ticket costs outside the
  model: an agent picking it up by hand. It turns cost per successful task into total cost of
  ownership (see :mod:`costtrace.report`).

Example:
    >>> from costtrace import demo
    >>> result = demo.run(tickets=50, seed=1)                     # doctest: +SKIP
    >>> print(demo.render(result))                               # doctest: +SKIP
"""

from __future__ import annotations

import random
import textwrap
from dataclasses import dataclass
from decimal import Decimal

import costtrace
from costtrace.records import CallRecord, TaskSummary
from costtrace.report import CallStats, TaskStats, by_model, group_by, group_calls_by

__all__ = [
    "CHEAP_MODEL",
    "DEFAULT_REWORK_COST_USD",
    "DEFAULT_SEED",
    "DEFAULT_TICKETS",
    "FRONTIER_MODEL",
    "MAX_ATTEMPTS",
    "MAX_TICKETS",
    "PROVIDER",
    "STRATEGIES",
    "VALIDATION_FAILURE_RATE",
    "DemoResult",
    "Strategy",
    "Ticket",
    "findings",
    "make_tickets",
    "render",
    "run",
    "unpriced_models",
]

# --- the simulated workload --------------------------------------------------------------------

PROVIDER = "openai"
CHEAP_MODEL = "gpt-4o-mini"
FRONTIER_MODEL = "gpt-4o"

VALIDATION_FAILURE_RATE: dict[str, float] = {CHEAP_MODEL: 0.35, FRONTIER_MODEL: 0.05}
"""Probability that the validator rejects one attempt of the model, independent of other attempts."""

MAX_ATTEMPTS = 3
"""Attempts per ticket in every strategy; a ticket still rejected after them fails (a human takes it)."""

SYSTEM_PROMPT_TOKENS = 1_150
"""Instructions, tone guide and answer schema: the same for every ticket."""
TICKET_TOKENS = (120, 900)
"""Range of the ticket text (customer message and thread), uniform."""
ARTICLE_TOKENS = (600, 2_400)
"""Range of the retrieved help-center articles, uniform."""
OUTPUT_TOKENS: dict[str, tuple[int, int]] = {CHEAP_MODEL: (120, 420), FRONTIER_MODEL: (150, 480)}
"""Range of an answer's length per model, uniform."""
RETRY_FEEDBACK_TOKENS = 80
"""The validator's message appended, with the rejected answer, to a retry's prompt."""
WARM_CACHE_SHARE = 0.6
"""Share of tickets whose shared system-prompt prefix is still in the provider's prompt cache."""

CACHE_MIN_TOKENS = 1_024
CACHE_STEP_TOKENS = 128

CUSTOMERS = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka")
REJECTIONS = (
    "schema: missing field 'resolution'",
    "schema: 'refund_amount' is not a number",
    "policy: refund above the agent limit",
    "policy: promised a delivery date",
)

DEFAULT_TICKETS = 200
DEFAULT_SEED = 7
DEFAULT_REWORK_COST_USD = Decimal("2.00")
MAX_TICKETS = 10_000
"""Upper bound for ``--tasks``: the demo keeps every record in memory."""

TASK_NAME = "resolve_ticket"
ROUTING_DIMENSION = "routing"
"""The custom task dimension holding the strategy key (set in :func:`_resolve`)."""


@dataclass(frozen=True, slots=True)
class Strategy:
    """A routing strategy: which model serves each attempt."""

    key: str
    """The value of the task's ``routing`` dimension (``costtrace.dimension.routing``)."""
    label: str
    models: tuple[str, ...]
    """The model of attempt 1, 2, ...; a change of model is an escalation, a repeat is a retry."""

    def describe(self) -> str:
        """The attempt sequence in words, e.g. ``gpt-4o-mini, then gpt-4o x2``."""
        runs: list[tuple[str, int]] = []
        for model in self.models:
            if runs and runs[-1][0] == model:
                runs[-1] = (model, runs[-1][1] + 1)
            else:
                runs.append((model, 1))
        return ", then ".join(model if n == 1 else f"{model} x{n}" for model, n in runs)


STRATEGIES = (
    Strategy("cheap_only", "cheap only", (CHEAP_MODEL,) * MAX_ATTEMPTS),
    Strategy("cheap_then_frontier", "cheap -> frontier", (CHEAP_MODEL,) + (FRONTIER_MODEL,) * (MAX_ATTEMPTS - 1)),
    Strategy("frontier_only", "frontier only", (FRONTIER_MODEL,) * MAX_ATTEMPTS),
)


@dataclass(frozen=True, slots=True)
class Ticket:
    """One simulated support ticket: the parts of its prompt that do not depend on the model."""

    id: str
    customer: str
    ticket_tokens: int
    article_tokens: int
    warm_cache: bool
    """The shared system prompt is still cached from other tickets."""

    @property
    def prompt_tokens(self) -> int:
        return SYSTEM_PROMPT_TOKENS + self.ticket_tokens + self.article_tokens


def make_tickets(n: int, seed: int) -> list[Ticket]:
    """``n`` tickets drawn from ``random.Random(seed)``: the same seed gives the same tickets.

    Example:
        >>> make_tickets(2, seed=1) == make_tickets(2, seed=1)
        True
    """
    rng = random.Random(seed)
    return [
        Ticket(
            id=f"T-{i:05d}",
            customer=rng.choice(CUSTOMERS),
            ticket_tokens=rng.randint(*TICKET_TOKENS),
            article_tokens=rng.randint(*ARTICLE_TOKENS),
            warm_cache=rng.random() < WARM_CACHE_SHARE,
        )
        for i in range(1, n + 1)
    ]


def _cached_prefix(tokens: int) -> int:
    """Tokens of a ``tokens``-long prefix that the provider's prompt cache can serve (OpenAI's rule)."""
    if tokens < CACHE_MIN_TOKENS:
        return 0
    return CACHE_MIN_TOKENS + (tokens - CACHE_MIN_TOKENS) // CACHE_STEP_TOKENS * CACHE_STEP_TOKENS


def _resolve(ticket: Ticket, strategy: Strategy, seed: int) -> tuple[TaskSummary, list[CallRecord]]:
    """Run one ticket under one strategy as a costtrace task; returns its summary and call records.

    The k-th attempt of a model on a ticket draws from its own RNG, seeded by (seed, ticket, model, k),
    so that it succeeds or fails alike under every strategy that makes it (common random numbers).
    """
    calls: list[CallRecord] = []
    tries: dict[str, int] = {}
    previous: tuple[str, int, int] | None = None  # model, prompt tokens, output tokens
    with costtrace.task(
        TASK_NAME,
        feature="support",
        customer=ticket.customer,
        attributes={"ticket.id": ticket.id},
        routing=strategy.key,  # a custom dimension: costtrace.dimension.routing
    ) as t:
        for attempt, model in enumerate(strategy.models, start=1):
            tries[model] = tries.get(model, 0) + 1
            rng = random.Random(f"{seed}/{ticket.id}/{model}/{tries[model]}")
            rejected = rng.random() < VALIDATION_FAILURE_RATE[model]
            output_tokens = rng.randint(*OUTPUT_TOKENS[model])
            rejection = rng.choice(REJECTIONS)
            if previous is not None and previous[0] == model:
                # A retry resends the conversation, plus the rejected answer and the validator's feedback.
                prompt_tokens = previous[1] + previous[2] + RETRY_FEEDBACK_TOKENS
                cached = _cached_prefix(previous[1])
            else:
                prompt_tokens = ticket.prompt_tokens
                cached = _cached_prefix(SYSTEM_PROMPT_TOKENS) if ticket.warm_cache else 0

            with costtrace.llm_call(provider=PROVIDER, model=model) as call:
                call.set_usage(prompt_tokens, output_tokens, cache_read_input_tokens=cached)
            if call.record is not None:
                calls.append(call.record)
            previous = (model, prompt_tokens, output_tokens)

            if not rejected:
                t.succeed()
                break
            if attempt == len(strategy.models):
                t.fail("validation_failed")
            elif strategy.models[attempt] == model:
                t.retry(reason="validation_failed", details=rejection)
            else:
                t.escalate(to_model=strategy.models[attempt], reason="validation_failed", details=rejection)
    return t.summary, calls


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What one demo run produced: the raw records and the two tables' figures."""

    tickets: int
    seed: int
    rework_cost_usd: Decimal
    strategies: tuple[Strategy, ...]
    tasks: tuple[TaskSummary, ...]
    calls: tuple[CallRecord, ...]
    per_model: dict[str, CallStats]
    per_routing: dict[str, TaskStats]
    """By :attr:`Strategy.key`, in the order of :attr:`strategies`."""


def run(
    *,
    tickets: int = DEFAULT_TICKETS,
    seed: int = DEFAULT_SEED,
    rework_cost_usd: Decimal = DEFAULT_REWORK_COST_USD,
    strategies: tuple[Strategy, ...] = STRATEGIES,
) -> DemoResult:
    """Resolve ``tickets`` simulated tickets under each strategy, recording them with costtrace.

    Deterministic for a given ``seed`` (records' ids and timestamps aside), with no network and no sleep.

    Args:
        tickets: How many tickets (1 to :data:`MAX_TICKETS`).
        seed: Seed of every random draw.
        rework_cost_usd: Cost of one unresolved ticket outside the model, for TCO.
        strategies: The routings to compare; their models need an entry in
            :data:`VALIDATION_FAILURE_RATE` and :data:`OUTPUT_TOKENS`.

    Raises:
        ValueError: ``tickets`` is out of range, or ``rework_cost_usd`` is negative.
    """
    if not 1 <= tickets <= MAX_TICKETS:
        raise ValueError(f"tickets={tickets!r} must be between 1 and {MAX_TICKETS}")
    all_tasks: list[TaskSummary] = []
    all_calls: list[CallRecord] = []
    batch = make_tickets(tickets, seed)
    for strategy in strategies:
        for ticket in batch:
            summary, calls = _resolve(ticket, strategy, seed)
            all_tasks.append(summary)
            all_calls.extend(calls)
    per_routing = group_by(all_tasks, ROUTING_DIMENSION, rework_cost_usd=rework_cost_usd)
    return DemoResult(
        tickets=tickets,
        seed=seed,
        rework_cost_usd=rework_cost_usd,
        strategies=strategies,
        tasks=tuple(all_tasks),
        calls=tuple(all_calls),
        per_model=group_calls_by(all_calls, by_model),
        per_routing={s.key: per_routing[s.key] for s in strategies if s.key in per_routing},
    )


def unpriced_models(strategies: tuple[Strategy, ...] = STRATEGIES) -> list[str]:
    """The strategies' models that the price catalog cannot price (their costs would be missing).

    Example:
        >>> unpriced_models()
        []
    """
    from costtrace.pricing import default_catalog

    catalog = default_catalog()
    models = dict.fromkeys(m for s in strategies for m in s.models)
    return [m for m in models if not catalog.is_priced(PROVIDER, m)]


# --- display -----------------------------------------------------------------------------------


def _usd(value: Decimal | None, places: int) -> str:
    """Money for display, rounded here and only here; ``n/a`` for an undefined figure."""
    return "n/a" if value is None else f"${value:,.{places}f}"


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.1%}"


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Plain-text columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join((first, *rest)).rstrip()

    return [line(headers), line(tuple("-" * w for w in widths)), *(line(row) for row in rows)]


_PER_TASK_PLACES = 5
_PER_MTOK_PLACES = 3
_WRAP = 100


def _model_rows(per_model: dict[str, CallStats]) -> list[tuple[str, ...]]:
    return [
        (
            model + ("" if s.cost_complete else " *"),
            f"{s.calls:,}",
            f"{s.input_tokens:,}",
            f"{s.cache_read_input_tokens:,}",
            f"{s.output_tokens:,}",
            _usd(s.cost_usd, 4),
            _usd(s.cost_per_mtok_usd, _PER_MTOK_PLACES),
        )
        for model, s in per_model.items()
    ]


def _routing_rows(result: DemoResult) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for strategy in result.strategies:
        s = result.per_routing.get(strategy.key)
        if s is None:
            continue
        rows.append(
            (
                strategy.label + ("" if s.cost_complete else " *"),
                f"{s.tasks:,}",
                _pct(s.success_rate),
                _pct(s.first_pass_rate),
                f"{s.retries:,}",
                f"{s.escalations:,}",
                _usd(s.cost_usd, 4),
                _usd(s.cost_per_task_usd, _PER_TASK_PLACES),
                _usd(s.cost_per_successful_task_usd, _PER_TASK_PLACES),
                _pct(s.retry_tax),
                _usd(s.tco_per_successful_task_usd, _PER_TASK_PLACES),
            )
        )
    return rows


def _quoted(strategy: Strategy) -> str:
    return f"'{strategy.label}'"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def findings(result: DemoResult) -> list[str]:
    """Plain sentences computed from the result's numbers (never written in advance)."""
    out: list[str] = []
    per_routing = result.per_routing
    ran = [s for s in result.strategies if s.key in per_routing]

    cheap, frontier = result.per_model.get(CHEAP_MODEL), result.per_model.get(FRONTIER_MODEL)
    cheap_rate = cheap.cost_per_mtok_usd if cheap is not None else None
    frontier_rate = frontier.cost_per_mtok_usd if frontier is not None else None
    if cheap_rate and frontier_rate:
        ratio = frontier_rate / cheap_rate
        comparison = f"{ratio:.1f}x less" if ratio >= 1 else f"{1 / ratio:.1f}x more"
        cheap_usd, frontier_usd = _usd(cheap_rate, _PER_MTOK_PLACES), _usd(frontier_rate, _PER_MTOK_PLACES)
        out.append(
            f"Per token, {CHEAP_MODEL} costs {comparison} than {FRONTIER_MODEL} ({cheap_usd} vs "
            f"{frontier_usd} per million tokens, cache discounts included)."
        )

    def per_success(s: Strategy) -> Decimal | None:
        return per_routing[s.key].cost_per_successful_task_usd

    priced = [s for s in ran if per_success(s) is not None]
    if priced:
        figures = [f"{_usd(per_success(s), _PER_TASK_PLACES)} with {_quoted(s)}" for s in priced]
        out.append(
            "In token spend alone, counting every retry and every failed ticket, a successful ticket costs "
            f"{_join(figures)}."
        )
    out.extend(
        f"{_quoted(s)} resolved no ticket, so its cost per successful ticket is undefined."
        for s in ran
        if per_success(s) is None
    )
    taxed = [s for s in ran if per_routing[s.key].retry_tax]
    if taxed:
        worst = max(taxed, key=lambda s: per_routing[s.key].retry_tax or 0.0)
        out.append(
            f"{per_routing[worst.key].retry_tax:.0%} of the {_quoted(worst)} spend bought attempts "
            "that failed validation (its retry tax)."
        )

    if priced and result.rework_cost_usd > 0:
        rework = _usd(result.rework_cost_usd, 2)
        cheapest = min(priced, key=lambda s: per_success(s) or Decimal(0))

        def tco(s: Strategy) -> Decimal:
            value = per_routing[s.key].tco_per_successful_task_usd
            assert value is not None  # a strategy with a cost per successful task has successes
            return value

        best = min(priced, key=tco)
        if best == cheapest:
            out.append(
                f"With {rework} of human rework per unresolved ticket, {_quoted(best)} stays the cheapest: "
                f"{_usd(tco(best), _PER_TASK_PLACES)} per successful ticket, all costs included."
            )
        else:
            b, c = per_routing[best.key], per_routing[cheapest.key]
            out.append(
                f"With {rework} of human rework per unresolved ticket, {_quoted(best)} is the cheapest: "
                f"{_usd(tco(best), _PER_TASK_PLACES)} per successful ticket against "
                f"{_usd(tco(cheapest), _PER_TASK_PLACES)} for {_quoted(cheapest)}, because it leaves "
                f"{b.unsuccessful:,} of {b.tasks:,} tickets unresolved "
                f"against {c.unsuccessful:,} of {c.tasks:,}."
            )
    elif priced:
        out.append("With no rework cost (--rework-cost 0), total cost of ownership is the token spend alone.")

    if not all(s.cost_complete for s in per_routing.values()):
        out.append("Some calls had no price (marked *): their costs are missing, so the figures are lower bounds.")
    return out


def render(result: DemoResult) -> str:
    """The demo's report: header, per-model table, per-routing table and findings, as text."""
    sources = sorted({src for s in result.per_model.values() for src in s.price_sources})
    rates = ", ".join(f"{m} {VALIDATION_FAILURE_RATE[m]:.0%}" for m in VALIDATION_FAILURE_RATE)
    lines = [
        f"costtrace demo: {_count(result.tickets, 'simulated support ticket')} (seed {result.seed}), "
        f"each resolved under {len(result.strategies)} routing strategies.",
        "No model is called: token counts are simulated; prices are real "
        f"({PROVIDER} list prices from {', '.join(sources) or 'no price source'}).",
        f"The validator rejects an attempt with probability {rates}; at most {MAX_ATTEMPTS} attempts per ticket.",
        "",
        "Per model",
        *_table(
            ("model", "calls", "input tok", "cached tok", "output tok", "cost", "$/1M tok"),
            _model_rows(result.per_model),
        ),
        "",
        f"Per routing strategy (rework cost per unresolved ticket: {_usd(result.rework_cost_usd, 2)})",
        *_table(
            (
                "routing",
                "tasks",
                "success",
                "1st pass",
                "retries",
                "escal.",
                "cost",
                "cost/task",
                "cost/success",
                "retry tax",
                "TCO/success",
            ),
            _routing_rows(result),
        ),
        *(f"  {s.label}: {s.describe()}" for s in result.strategies),
        "",
        "cost/success = all spend / successful tickets; retry tax = spend on failed attempts / all spend;",
        "TCO/success = (all spend + unresolved tickets x rework cost) / successful tickets.",
        "",
        *(line for sentence in findings(result) for line in textwrap.wrap(sentence, width=_WRAP)),
    ]
    return "\n".join(lines)
