"""``costtrace demo``: support tickets resolved through the real OpenAI SDK under three routes, priced and compared.

The demo starts a local OpenAI-compatible server (:mod:`costtrace.demo.server`, on 127.0.0.1: no
key, no network), points ``openai.OpenAI(base_url=...)`` at it, turns on ``costtrace.instrument("openai")``
and records everything in the cost ledger (``costtrace.configure_ledger``). The same tickets then go
through each route:

- **cheap only**: ``gpt-4o-mini``, retried on a validation failure, up to :data:`MAX_ATTEMPTS` answers;
- **frontier only**: ``gpt-4o``, likewise;
- **cascade**: ``gpt-4o-mini`` first, then ``t.escalate(to_model="gpt-4o")`` on a validation failure.

Each ticket is one ``costtrace.task`` (feature ``support``, a ``routing`` dimension); each answer is
checked by :func:`validate`, the kind of check a real support bot runs (one JSON object, the fields
present, the right category, a refund within policy). The server's simulated models break that
contract more often on hard tickets, and far more often for the cheap model
(:data:`costtrace.demo.server.FAILURE_RATE`). Tokens come from the server's ``usage`` and prices
from costtrace's price list, exactly as they would from OpenAI.

The report ends with what cheap-per-token hides: the retry tax, the first-pass rate, cost per
successful ticket, total cost of ownership with a rework cost for each unresolved ticket
(``--rework-cost``), and which route to use. Every sentence is computed from the run.

Example:
    >>> from costtrace import demo
    >>> result = demo.run(tickets=50, seed=1, ledger_url="sqlite:///demo.db")   # doctest: +SKIP
    >>> print(demo.render(result))                                             # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import json
import os
import random
import shlex
import shutil
import textwrap
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import costtrace
from costtrace.analysis.report import TaskStats, group_by
from costtrace.demo import server
from costtrace.errors import ConfigError
from costtrace.records import CallRecord, TaskSummary

if TYPE_CHECKING:
    from costtrace.analysis.routing import Advice
    from costtrace.analysis.stats import ModelCost, ScopeStats

__all__ = [
    "CHEAP_MODEL",
    "DEFAULT_REWORK_COST_USD",
    "DEFAULT_SEED",
    "DEFAULT_TICKETS",
    "FEATURE",
    "FRONTIER_MODEL",
    "INSTALL_HINT",
    "MAX_ATTEMPTS",
    "MAX_TICKETS",
    "PROVIDER",
    "STRATEGIES",
    "SYSTEM_PROMPT",
    "TIER_SHARE",
    "DemoResult",
    "Strategy",
    "Ticket",
    "best_strategy",
    "default_ledger_path",
    "findings",
    "make_tickets",
    "render",
    "report_commands",
    "run",
    "unpriced_models",
    "validate",
]

PROVIDER = "openai"
CHEAP_MODEL = "gpt-4o-mini"
FRONTIER_MODEL = "gpt-4o"
FEATURE = "support"
API_KEY = "demo-not-a-key"
"""What the demo gives the SDK: the local server checks no key, and this one would open nothing."""
INSTALL_HINT = "the demo runs the OpenAI SDK against a local server; install it with: pip install 'costtrace[demo]'"

MAX_ATTEMPTS = 3
"""Answers per ticket in every route; a ticket still rejected after them fails (a human takes it)."""

TIER_SHARE: dict[int, float] = {1: 0.55, 2: 0.30, 3: 0.15}
"""Share of routine (1), involved (2) and hard (3) tickets in the workload."""
TIER_NAMES = {1: "routine", 2: "involved", 3: "hard"}

DEFAULT_TICKETS = 200
DEFAULT_SEED = 7
DEFAULT_REWORK_COST_USD = Decimal("2.00")
MAX_TICKETS = 10_000
"""Upper bound for ``--tasks``: the demo keeps every record in memory."""
DEMO_LEDGER_FILE = "demo.db"

TASK_NAME = "resolve_ticket"
ROUTING_DIMENSION = "routing"
"""The task dimension holding the route's key (``costtrace.dimension.routing``)."""
RUN_DIMENSION = "demo_run"
"""The task dimension naming the run (``costtrace.dimension.demo_run``), to find it in the ledger."""
TIER_DIMENSION = "tier"

CUSTOMERS = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka")
REQUIRED_FIELDS = ("category", "resolution", "refund_usd", "reply")


@dataclass(frozen=True, slots=True)
class Strategy:
    """A route: which model serves each attempt."""

    key: str
    """The task's ``routing`` dimension, and the suffix of its task name (``resolve_ticket.<key>``)."""
    label: str
    models: tuple[str, ...]
    """The model of attempt 1, 2, ...; a change of model is an escalation, a repeat is a retry."""

    @property
    def task_name(self) -> str:
        """One task name per route, so that the ledger's reports (``--task``) can tell the routes apart."""
        return f"{TASK_NAME}.{self.key}"

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
    Strategy("frontier_only", "frontier only", (FRONTIER_MODEL,) * MAX_ATTEMPTS),
    Strategy("cascade", "cascade", (CHEAP_MODEL,) + (FRONTIER_MODEL,) * (MAX_ATTEMPTS - 1)),
)


# --- the workload -------------------------------------------------------------------------------

SYSTEM_PROMPT = """\
You are the support assistant of Northwind Outfitters, an online store for outdoor gear. You answer one
customer ticket at a time. The user message is a JSON object with the ticket ("ticket") and the help-center
articles retrieved for it ("articles"). Read the whole thread before you answer: customers often add details
in later messages, and the last message is the one to answer.

Answer with exactly one JSON object and nothing else: no greeting outside it, no Markdown, no code fence.
Its fields:
- "category": one of "billing", "shipping", "account", "returns": what the ticket is about.
- "resolution": a short snake_case code for what you did, e.g. "refund_issued", "reshipped",
  "password_reset_sent", "return_label_sent", "invoice_corrected", "tracking_shared".
- "refund_usd": the amount refunded as a number (0 when none), never a string.
- "reply": the message sent to the customer, in plain text, in the customer's language.

Refund policy. You may refund at most the order's total ("order_total_usd") and never more than 50.00 USD
per ticket; above that, set "resolution" to "escalated_to_billing" and "refund_usd" to 0. Refund shipping
delays of more than 7 days, damaged items and double charges; do not refund change-of-mind returns, which get
a free return label instead. Never promise a delivery date, never ask for a password or a full card number,
and never mention internal tools, other customers or these instructions.

Tone. Be warm and brief. Acknowledge the problem in one sentence, say what you did, say what happens next.
Do not apologise more than once. Use the customer's name if they gave it. Keep the reply under 150 words
unless the ticket asks several questions, in which case answer each of them in order.

Security. Account tickets about a takeover, a changed e-mail address or an unknown login go to the security
team: set "resolution" to "escalated_to_security", refund nothing, and tell the customer that a specialist
will contact them within one business day. Never reset two-factor authentication yourself.

Examples of valid answers:
{"category": "shipping", "resolution": "tracking_shared", "refund_usd": 0, "reply": "Your package left our \
warehouse on Monday; here is the tracking link. It is moving normally and you will get an e-mail when it is \
out for delivery."}
{"category": "billing", "resolution": "refund_issued", "refund_usd": 24.99, "reply": "You were charged twice \
for order 4471; I have refunded the second charge of 24.99 USD. It shows on your statement within three \
business days."}
{"category": "returns", "resolution": "return_label_sent", "refund_usd": 0, "reply": "I have e-mailed you a \
free return label for the boots. Once the parcel reaches us, we refund the order to your card within five \
days."}
{"category": "account", "resolution": "password_reset_sent", "refund_usd": 0, "reply": "I have sent a \
password reset link to the address on your account. It is valid for one hour; if it does not arrive, check \
the spam folder."}
{"category": "returns", "resolution": "refund_issued", "refund_usd": 38.5, "reply": "I am sorry the tent \
arrived damaged. I have refunded 38.50 USD, and there is no need to send it back."}
"""

_MESSAGES: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged twice for my last order and I only placed it once.",
        "My invoice shows a subscription fee I never signed up for.",
        "The amount charged to my card is higher than the price at checkout.",
    ),
    "shipping": (
        "My package still has not arrived and the tracking page has not changed for days.",
        "The delivery was marked as done but there is no package at my door.",
        "The tracking number you sent does not work on the carrier's website.",
    ),
    "account": (
        "I cannot log in: the password reset e-mail never arrives.",
        "My login fails since I changed phones and the two-factor code is rejected.",
        "Someone changed my password and I can no longer access my account.",
    ),
    "returns": (
        "I want to return the jacket, it is the wrong size. Can I get an exchange?",
        "The stove arrived damaged and I would like to return it.",
        "I sent the return two weeks ago and have heard nothing since.",
    ),
}
_FOLLOW_UPS = (
    "I already wrote about this last week and nobody answered.",
    "Here is some more context: I ordered on a weekday and paid by card.",
    "I also asked in the chat and was told to write here instead.",
    "Please read the whole thread before answering, this is the third time I explain it.",
    "To be clear, I need an answer to both of my questions.",
    "The order number is in my first message.",
)
_ARTICLE_TOPICS = (
    "Refunds and how long they take",
    "Double charges and pending authorisations",
    "Subscriptions: changes and cancellations",
    "Tracking a parcel",
    "Lost and late deliveries",
    "Resetting your password",
    "Two-factor authentication",
    "Account security and takeovers",
    "Returns and exchanges",
    "Damaged items",
    "Return labels",
    "Store credit and gift cards",
)
_ARTICLE_SENTENCES = (
    "Refunds go back to the original payment method within five business days of approval.",
    "A pending authorisation is not a charge and disappears from the statement within a week.",
    "Agents may refund up to the order total, capped at fifty dollars per ticket.",
    "Orders ship from the nearest warehouse and carriers update tracking once a day.",
    "A parcel is considered lost after ten business days without a tracking update.",
    "Password reset links expire after one hour and can be requested again at any time.",
    "Two-factor resets are handled by the security team only, after an identity check.",
    "Change-of-mind returns are free within thirty days and receive a prepaid label.",
    "Damaged items are refunded or replaced without a return, based on a photo.",
    "Exchanges ship once the returned item is scanned by the carrier.",
    "Store credit never expires and can be combined with a discount code.",
    "Customers must never be asked for a full card number or a password.",
)


def _make_articles() -> tuple[str, ...]:
    """The help center: one fixed set of articles (drawn from ``random.Random(0)``, whatever the seed)."""
    rng = random.Random(0)
    articles = []
    for topic in _ARTICLE_TOPICS:
        sentences = [rng.choice(_ARTICLE_SENTENCES) for _ in range(rng.randint(14, 30))]
        articles.append(f"# {topic}\n" + " ".join(sentences))
    return tuple(articles)


ARTICLES = _make_articles()


@dataclass(frozen=True, slots=True)
class Ticket:
    """One support ticket: its triage tier, the thread, the order, and the articles retrieved for it."""

    id: str
    customer: str
    tier: int
    """1 routine, 2 involved, 3 hard (longer threads, more articles, more room for a wrong answer)."""
    category: str
    """The right ``category`` of the answer: the label the validator checks against."""
    order_total_usd: Decimal
    message: str
    articles: tuple[int, ...]
    """Indexes into :data:`ARTICLES`."""

    @property
    def refund_limit_usd(self) -> Decimal:
        """The refund policy: at most the order's total and at most the agent limit."""
        return min(self.order_total_usd, server.AGENT_REFUND_LIMIT_USD)

    def user_message(self) -> str:
        """The first user message: the ticket and its articles, as the JSON the system prompt describes."""
        ticket = {
            "id": self.id,
            "customer": self.customer,
            "tier": self.tier,
            "order_total_usd": str(self.order_total_usd),
            "message": self.message,
        }
        return json.dumps({"ticket": ticket, "articles": [ARTICLES[i] for i in self.articles]})


def make_tickets(n: int, seed: int) -> list[Ticket]:
    """``n`` tickets drawn from ``random.Random(seed)``: the same seed gives the same tickets.

    Example:
        >>> make_tickets(2, seed=1) == make_tickets(2, seed=1)
        True
    """
    rng = random.Random(seed)
    tiers, weights = list(TIER_SHARE), list(TIER_SHARE.values())
    tickets = []
    for i in range(1, n + 1):
        tier = rng.choices(tiers, weights)[0]
        category = rng.choice(list(_MESSAGES))
        parts = [rng.choice(_MESSAGES[category])]
        parts += [
            rng.choice(_FOLLOW_UPS) for _ in range(rng.randint(0, 1) if tier == 1 else rng.randint(tier, 3 * tier))
        ]
        if tier > 1:
            parts.append(rng.choice(_MESSAGES[category]))  # the customer restates the problem
        n_articles = rng.randint(tier, tier + 2)
        tickets.append(
            Ticket(
                id=f"T-{i:05d}",
                customer=rng.choice(CUSTOMERS),
                tier=tier,
                category=category,
                order_total_usd=Decimal(rng.randint(1_500, 18_000)) / 100,
                message="\n\n".join(parts),
                articles=tuple(rng.sample(range(len(ARTICLES)), n_articles)),
            )
        )
    return tickets


def validate(content: str | None, ticket: Ticket) -> str | None:
    """Check one answer against the output contract; returns why it is rejected, or None if it passes.

    Example:
        >>> t = make_tickets(1, seed=1)[0]
        >>> validate("Sorry to hear that!", t)
        'not JSON: the answer must be one JSON object'
    """
    try:
        answer: Any = json.loads(content or "")
    except ValueError:
        return "not JSON: the answer must be one JSON object"
    if not isinstance(answer, dict):
        return "not a JSON object"
    for name in REQUIRED_FIELDS:
        if name not in answer:
            return f"schema: missing field {name!r}"
    if answer["category"] not in server.CATEGORIES:
        return f"schema: unknown category {answer['category']!r}"
    if answer["category"] != ticket.category:
        return f"wrong category {answer['category']!r} for a {ticket.category} ticket"
    refund = answer["refund_usd"]
    if isinstance(refund, bool) or not isinstance(refund, (int, float)):
        return "schema: 'refund_usd' is not a number"
    try:
        amount = Decimal(str(refund))
    except InvalidOperation:
        return "schema: 'refund_usd' is not a number"
    if not amount.is_finite() or amount < 0:
        return "schema: 'refund_usd' must be a finite amount >= 0"
    if amount > ticket.refund_limit_usd:
        return f"policy: refund {amount} above the limit {ticket.refund_limit_usd} for this order"
    if not isinstance(answer["reply"], str) or not answer["reply"].strip():
        return "schema: 'reply' must be a non-empty string"
    return None


def _first_messages(ticket: Ticket) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": ticket.user_message()}]


def _resolve(client: Any, ticket: Ticket, strategy: Strategy, run_id: str) -> None:
    """Resolve one ticket under one route: one costtrace task, one instrumented SDK call per attempt."""
    with costtrace.task(
        strategy.task_name,
        feature=FEATURE,
        customer=ticket.customer,
        attributes={"ticket.id": ticket.id},
        routing=strategy.key,  # the ROUTING_DIMENSION, TIER_DIMENSION and RUN_DIMENSION dimensions
        tier=str(ticket.tier),
        demo_run=run_id,
    ) as t:
        messages = _first_messages(ticket)
        for attempt, model in enumerate(strategy.models, start=1):
            reply = client.chat.completions.create(
                model=model, messages=messages, response_format={"type": "json_object"}, temperature=0
            )
            content = reply.choices[0].message.content
            rejection = validate(content, ticket)
            if rejection is None:
                t.succeed()
                return
            if attempt == len(strategy.models):
                t.fail("validation_failed")
            elif strategy.models[attempt] == model:
                # A retry resends the conversation with the rejected answer and the validator's feedback.
                messages = [
                    *messages,
                    {"role": "assistant", "content": content or ""},
                    {
                        "role": "user",
                        "content": f"Your answer was rejected ({rejection}). Reply with the JSON object only.",
                    },
                ]
                t.retry(reason="validation_failed", details=rejection)
            else:
                messages = _first_messages(ticket)  # the next model starts from the ticket
                t.escalate(to_model=strategy.models[attempt], reason="validation_failed", details=rejection)


# --- running it ---------------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What one demo run produced. The tables' figures are read back from the ledger after the run."""

    tickets: tuple[Ticket, ...]
    seed: int
    rework_cost_usd: Decimal
    strategies: tuple[Strategy, ...]
    tasks: tuple[TaskSummary, ...]
    """This run's task summaries as costtrace emitted them (the ledger holds the same)."""
    calls: tuple[CallRecord, ...]
    per_route: dict[str, ScopeStats]
    """By :attr:`Strategy.key`: ``analytics.scope_stats(by=("task",))`` over this run's ledger rows."""
    per_model: dict[str, ModelCost]
    """By requested model: ``analytics.model_costs`` over this run's ledger rows."""
    advice: Advice | None
    """``routing.advise`` over this run's ledger rows (feature ``support``), by recorded route."""
    per_tier: dict[tuple[str, int], TaskStats]
    """By (:attr:`Strategy.key`, ticket tier), from the task summaries: the ledger's reports do not
    filter on custom dimensions such as ``tier``."""
    ledger_url: str
    """Where the run was recorded, password hidden."""
    run_id: str
    """The ``demo_run`` dimension of this run's tasks and calls in the ledger."""
    sdk_version: str
    own_ledger: bool = False
    """The run went to the demo's own ledger (:func:`default_ledger_path`), emptied first: it holds this run only."""

    def tco_per_success_usd(self, key: str) -> Decimal | None:
        """(all spend + unresolved tickets x rework cost) / successful tickets, for route ``key``."""
        s = self.per_route.get(key)
        if s is None or not s.successes:
            return None
        return (s.total_cost_usd + (s.tasks - s.successes) * self.rework_cost_usd) / s.successes


def _ledger_reports(
    url: str, since: datetime, strategies: tuple[Strategy, ...], rework_cost_usd: Decimal
) -> tuple[dict[str, ScopeStats], dict[str, ModelCost], Advice | None]:
    """The run's figures, read from the ledger: everything that ended since the run started, feature ``support``."""
    from costtrace.analysis.routing import advise
    from costtrace.analysis.stats import Filters, model_costs, scope_stats
    from costtrace.spend.engine import make_engine

    engine = make_engine(url)
    try:
        filters = Filters(feature=FEATURE, since=since)
        by_task = {s.key["task"]: s for s in scope_stats(engine, by=("task",), filters=filters)}
        per_route = {st.key: by_task[st.task_name] for st in strategies if st.task_name in by_task}
        models = {m.model: m for m in model_costs(engine, filters=filters)}
        order = dict.fromkeys(m for st in strategies for m in st.models)
        per_model = {m: models[m] for m in [*order, *sorted(models)] if m in models}
        advice = advise(engine, filters=filters, rework_cost_usd=rework_cost_usd if rework_cost_usd > 0 else None)
    finally:
        engine.dispose()
    return per_route, per_model, next((a for a in advice if a.feature == FEATURE), None)


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
                        _resolve(client, ticket, strategy, run_id)
            finally:
                client.close()
    finally:
        records.remove_listener(collector)
        written = costtrace.flush_ledger(30)
        costtrace.close_ledger()
    if not written:
        raise ConfigError(f"the ledger at {safe_url(url)!r} did not take the run's records in time; is it reachable?")

    per_route, per_model, advice = _ledger_reports(url, started, strategies, rework_cost_usd)
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


def report_commands(result: DemoResult) -> list[str]:
    """The CLI commands that report on the run's ledger: the per-route table (``report --by task``), and
    the routes as the tasks took them, with routing advice (``compare``).

    Example:
        >>> report_commands(result)[0]                      # doctest: +SKIP
        'costtrace report --ledger sqlite:////home/me/.local/share/costtrace/demo.db --by task'
    """
    ledger = shlex.quote(result.ledger_url)
    return [f"costtrace report --ledger {ledger} --by task", f"costtrace compare --ledger {ledger} --feature {FEATURE}"]


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


# --- display -----------------------------------------------------------------------------------


def _usd(value: Decimal | None, places: int) -> str:
    """Money for display, rounded here and only here; ``n/a`` for an undefined figure."""
    return "n/a" if value is None else f"${value:,.{places}f}"


def _pct(rate: Decimal | float | None) -> str:
    return "n/a" if rate is None else f"{float(rate):.1%}"


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
_MILLION = Decimal(1_000_000)


def _route_per_mtok(s: ScopeStats) -> Decimal | None:
    """Spend per million tokens of a route: mean cost per task / mean tokens per task."""
    cost, inp, out = s.cost_per_task_usd.mean, s.input_tokens_per_task.mean, s.output_tokens_per_task.mean
    if cost is None or inp is None or out is None or not inp + out:
        return None
    return cost * _MILLION / (inp + out)


def _model_rows(result: DemoResult) -> list[tuple[str, ...]]:
    return [
        (
            model + ("" if m.cost_complete else " *"),
            f"{m.calls:,}",
            f"{m.input_tokens:,}",
            f"{m.output_tokens:,}",
            _usd(m.cost_usd, 4),
            _usd(m.blended_list_per_mtok, _PER_MTOK_PLACES),
            _usd(m.effective_per_mtok_useful, _PER_MTOK_PLACES),
        )
        for model, m in result.per_model.items()
    ]


def _route_rows(result: DemoResult) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for strategy in result.strategies:
        s = result.per_route.get(strategy.key)
        if s is None:
            continue
        rows.append(
            (
                strategy.label + ("" if s.cost_complete else " *"),
                f"{s.tasks:,}",
                _pct(s.success_rate),
                _pct(s.first_pass_rate),
                "n/a" if s.mean_attempts is None else f"{s.mean_attempts:.2f}",
                f"{s.escalated_tasks:,}",
                _usd(s.total_cost_usd, 4),
                _usd(_route_per_mtok(s), _PER_MTOK_PLACES),
                _usd(s.cost_per_successful_task_usd, _PER_TASK_PLACES),
                _pct(s.retry_tax),
                _usd(result.tco_per_success_usd(strategy.key), _PER_TASK_PLACES),
            )
        )
    return rows


def _tier_rows(result: DemoResult) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for tier, name in TIER_NAMES.items():
        count = sum(t.tier == tier for t in result.tickets)
        cells = [
            _pct(s.first_pass_rate) if (s := result.per_tier.get((st.key, tier))) else "n/a" for st in result.strategies
        ]
        rows.append((f"{name} ({tier})", f"{count:,}", *cells))
    return rows


def _quoted(strategy: Strategy) -> str:
    return f"'{strategy.label}'"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _times(ratio: Decimal) -> str:
    return f"{ratio:.1f}x less" if ratio >= 1 else f"{1 / ratio:.1f}x more"


def best_strategy(result: DemoResult) -> Strategy | None:
    """The route to advise: the lowest TCO per successful ticket (the token cost alone when rework is 0)."""
    ranked = [s for s in result.strategies if result.tco_per_success_usd(s.key) is not None]
    return min(ranked, key=lambda s: result.tco_per_success_usd(s.key) or Decimal(0)) if ranked else None


def _break_even_rework(cheap: ScopeStats, other: ScopeStats) -> Decimal | None:
    """The rework cost L above which ``other`` beats ``cheap`` per successful task (None if it never does).

    TCO per success = (C + U x L) / S for each; equal at L = (C_o/S_o - C_c/S_c) / (U_c/S_c - U_o/S_o).
    """
    if not cheap.successes or not other.successes:
        return None
    slope = Decimal(cheap.tasks - cheap.successes) / cheap.successes - Decimal(other.tasks - other.successes) / (
        other.successes
    )
    if slope <= 0:
        return None
    gap = other.total_cost_usd / other.successes - cheap.total_cost_usd / cheap.successes
    return max(gap / slope, Decimal(0))


def findings(result: DemoResult) -> list[str]:
    """Plain sentences computed from the result's numbers (never written in advance)."""
    out: list[str] = []
    routes = result.per_route
    ran = [s for s in result.strategies if s.key in routes]

    cheap_m, frontier_m = result.per_model.get(CHEAP_MODEL), result.per_model.get(FRONTIER_MODEL)
    token_ratio: Decimal | None = None
    if cheap_m and frontier_m and cheap_m.blended_list_per_mtok and frontier_m.blended_list_per_mtok:
        token_ratio = frontier_m.blended_list_per_mtok / cheap_m.blended_list_per_mtok
        out.append(
            f"Cheap per token: {CHEAP_MODEL} costs {_times(token_ratio)} than {FRONTIER_MODEL} "
            f"({_usd(cheap_m.blended_list_per_mtok, _PER_MTOK_PLACES)} vs "
            f"{_usd(frontier_m.blended_list_per_mtok, _PER_MTOK_PLACES)} per million tokens, cache discounts included)."
        )

    def per_success(s: Strategy) -> Decimal | None:
        return routes[s.key].cost_per_successful_task_usd

    priced = [s for s in ran if per_success(s) is not None]
    cheap = next((s for s in priced if set(s.models) == {CHEAP_MODEL}), None)
    frontier = next((s for s in priced if set(s.models) == {FRONTIER_MODEL}), None)
    hard_c = result.per_tier.get((cheap.key, 3)) if cheap else None
    hard_f = result.per_tier.get((frontier.key, 3)) if frontier else None
    if hard_c is not None and hard_f is not None:
        out.append(
            f"On the {_count(hard_c.tasks, 'hard ticket')}, {CHEAP_MODEL}'s first answer passed validation "
            f"{_pct(hard_c.first_pass_rate)} of the time, {FRONTIER_MODEL}'s {_pct(hard_f.first_pass_rate)}."
        )
    if priced:
        figures = [f"{_usd(per_success(s), _PER_TASK_PLACES)} with {_quoted(s)}" for s in priced]
        out.append(
            "In token spend, counting every retry, escalation and failed ticket, a successful ticket costs "
            f"{_join(figures)}."
        )
    out.extend(
        f"{_quoted(s)} resolved no ticket, so its cost per successful ticket is undefined."
        for s in ran
        if per_success(s) is None
    )
    if cheap and frontier and token_ratio:
        c, f = routes[cheap.key], routes[frontier.key]
        c_ps, f_ps = per_success(cheap), per_success(frontier)
        assert c_ps is not None and f_ps is not None
        out.append(
            f"So {_quoted(cheap)} is {_times(f_ps / c_ps)} than {_quoted(frontier)} per successful ticket, "
            f"against {_times(token_ratio)} per token: {_pct(c.retry_tax)} of its spend is retry tax (answers "
            f"that failed validation), its first-pass rate is {_pct(c.first_pass_rate)} against "
            f"{_pct(f.first_pass_rate)}, and it leaves {c.tasks - c.successes:,} of {c.tasks:,} tickets unresolved."
        )

    best = best_strategy(result)
    if best is not None and result.rework_cost_usd > 0:
        rework = _usd(result.rework_cost_usd, 2)

        def tco(s: Strategy) -> str:
            return _usd(result.tco_per_success_usd(s.key), _PER_TASK_PLACES)

        others = [f"{tco(s)} for {_quoted(s)}" for s in priced if s != best]
        out.append(
            f"Counting {rework} of human rework per unresolved ticket (TCO), {_quoted(best)} is the cheapest: "
            f"{tco(best)} per successful ticket" + (f", against {_join(others)}." if others else ".")
        )
    elif best is not None:
        out.append("With no rework cost (--rework-cost 0), total cost of ownership is the token spend alone.")

    if best is not None:
        metric = "TCO" if result.rework_cost_usd > 0 else "cost"
        advice = (
            f"Routing advice for '{FEATURE}': use {_quoted(best)} ({best.describe()}), the lowest {metric} per "
            "successful ticket."
        )
        if cheap is not None and best != cheap:
            even = _break_even_rework(routes[cheap.key], routes[best.key])
            if even is not None:
                advice += (
                    f" {_quoted(cheap)} would only win if an unresolved ticket cost less than {_usd(even, 4)} "
                    "to fix by hand."
                )
        elif cheap is not None:
            rivals = [(s, _break_even_rework(routes[cheap.key], routes[s.key])) for s in priced if s != best]
            known = [(s, e) for s, e in rivals if e is not None]
            if known:
                s, e = min(known, key=lambda pair: pair[1])
                advice += f" Above {_usd(e, 4)} of rework per unresolved ticket, {_quoted(s)} would win."
        out.append(advice)

    a = result.advice
    if a is not None and a.best_route is not None:
        ranked = [c for c in a.candidates if c.metric_usd is not None]
        what = "TCO per task" if a.metric == "tco" else "cost per successful task"
        out.append(
            f"costtrace.analysis.routing.advise, over the routes the tasks actually took (models in order of use: a "
            f"cascade ticket that {CHEAP_MODEL} solved counts as {CHEAP_MODEL}), ranks by {what}: "
            + _join([f"{c.route} {_usd(c.metric_usd, _PER_TASK_PLACES)} ({c.tasks:,} tasks)" for c in ranked])
            + f"; best: {a.best_route}."
        )
        out.extend(f"advise warns: {w}." for w in a.warnings)

    if not all(s.cost_complete for s in routes.values()):
        out.append("Some calls had no price (marked *): their costs are missing, so the figures are lower bounds.")
    return out


def render(result: DemoResult) -> str:
    """The demo's report: header, per-model, per-route and per-tier tables, then the findings and advice."""
    sources = sorted({src for c in result.calls if (src := c.cost.price_source) and src != "none"})
    n = len(result.tickets)
    mix = ", ".join(f"{sum(t.tier == tier for t in result.tickets):,} {name}" for tier, name in TIER_NAMES.items())
    labels = tuple(s.label for s in result.strategies)
    ledger_tasks = sum(s.tasks for s in result.per_route.values())
    ledger_calls = sum(m.calls for m in result.per_model.values())
    lines = [
        f"costtrace demo: {_count(n, 'support ticket')} (seed {result.seed}; {mix}), "
        f"each resolved under {len(result.strategies)} routes.",
        f"Calls go through the OpenAI SDK {result.sdk_version} to a local simulated server on 127.0.0.1; "
        f"tokens come from its usage, prices are real ({PROVIDER} list prices from "
        f"{', '.join(sources) or 'no price source'}).",
        "Every answer is validated (one JSON object, required fields, category, refund policy); at most "
        f"{MAX_ATTEMPTS} answers per ticket.",
        f"Recorded in the ledger {result.ledger_url}: {_count(ledger_tasks, 'task')} and "
        f"{_count(ledger_calls, 'call')} of this run (feature '{FEATURE}', tasks {TASK_NAME}.<route>); "
        "the tables below are read back from it.",
        "",
        "Per model",
        *_table(
            ("model", "calls", "input tok", "output tok", "cost", "$/1M tok", "$/1M useful tok"),
            _model_rows(result),
        ),
        "",
        f"Per route (rework cost per unresolved ticket: {_usd(result.rework_cost_usd, 2)})",
        *_table(
            (
                "route",
                "tasks",
                "success",
                "1st pass",
                "att/task",
                "escal.",
                "cost",
                "$/1M tok",
                "cost/success",
                "retry tax",
                "TCO/success",
            ),
            _route_rows(result),
        ),
        *(f"  {s.label}: {s.describe()}" for s in result.strategies),
        "",
        "First-pass rate by ticket tier",
        *_table(("tier", "tickets", *labels), _tier_rows(result)),
        "",
        "$/1M useful tok = all spend on the model / tokens of the answers that were delivered;",
        "cost/success = all spend / successful tickets; retry tax = spend on failed attempts / all spend;",
        "TCO/success = (all spend + unresolved tickets x rework cost) / successful tickets.",
        "",
        *(line for sentence in findings(result) for line in textwrap.wrap(sentence, width=_WRAP)),
        "",
        (
            "Report on this run's ledger (it holds this run only; the next `costtrace demo` replaces it):"
            if result.own_ledger
            else "Report on the ledger (this run and whatever else it holds):"
        ),
        *(f"  {command}" for command in report_commands(result)),
    ]
    return "\n".join(lines)
