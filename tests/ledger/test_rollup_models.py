"""The rollups' model cells equal a recomputation from the raw call rows.

Random ledgers (SQLite and PostgreSQL, ``ledger_engine``) hold tasks and their LLM calls, written through
the ledger's write path (:func:`costtrace.spend.store.write_batch`, rows from
:func:`costtrace.spend.rows.call_row`): several calls per task over several attempts (and calls without
an attempt), five (provider, model) pairs on three providers, priced and unpriced calls, unknown usage,
cache reads and writes, calls without a task, calls written in a batch before their task row, with it,
just after it and a round (a refresh) later, late outcomes and partial refreshes. Then everything the
model cells feed is compared with its raw counterpart: ``model_sums`` with a recomputation in Python
over the raw rows (the definitions of ``ROLLUP_MODEL_SUMS``), the context tax of ``scope_stats``,
``model_costs`` without a window (cells) and with one (raw), ``routing.whatif`` and
``tco.from_ledger`` with the model cells and with their raw SQL.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from unittest import mock

import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from costtrace.analysis import routing, stats, tco
from costtrace.analysis.stats import Filters, model_costs, model_sums
from costtrace.errors import ConfigError
from costtrace.price.arithmetic import Cost
from costtrace.records import CallRecord
from costtrace.spend import rollups, schema
from costtrace.spend.rows import call_row, task_row
from costtrace.spend.store import Batch, write_batch
from costtrace.usage import Usage
from tests.ledger.test_rollups import NANO, check_report, no_marks, outcome_event, run_refresh, summary

MODELS = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o"),
    ("azure", "gpt-4o"),  # the same model name on two providers
    ("anthropic", "claude-3-5-haiku-20241022"),
    ("anthropic", "mystery-model"),  # not in the catalog: no caching bound, no list price
]
LOOSE_MODELS = [m for m in MODELS if m[1] != "gpt-4o"]
ROUTES: list[tuple[tuple[str, ...], str | None]] = [
    ((), None),
    (("gpt-4o-mini",), "gpt-4o-mini"),
    (("gpt-4o-mini", "gpt-4o"), "gpt-4o"),
    (("gpt-4o-mini", "gpt-4o"), "gpt-4o-mini"),
    (("claude-3-5-haiku-20241022",), "claude-3-5-haiku-20241022"),
]
OUTCOMES = [None, "success", "success", "failure", "partial", "escalated_to_human"]
FIRST, LAST = datetime(2024, 1, 30), datetime(2024, 3, 3)
instants = st.one_of(
    st.datetimes(min_value=FIRST, max_value=LAST),
    st.builds(
        lambda base, us: base + timedelta(microseconds=us),
        st.sampled_from([datetime(2024, 1, 31, 23), datetime(2024, 2, 29, 23)]),
        st.integers(0, 2 * 3600 * 10**6),
    ),
)
WHEN = ["with", "with", "with", "after", "next", "before"]
"""When a task's call is written: in its task's batch, in a batch just after it, a round later (after
that round's refresh), or a round earlier (before its task row exists)."""


@st.composite
def call_specs(draw: st.DrawFn, attempts: int, models: Sequence[tuple[str, str]] = MODELS) -> dict[str, Any]:
    provider, model = draw(st.sampled_from(models))
    source = draw(st.sampled_from(["provider", "provider", "estimated", "unknown"]))
    inp = draw(st.one_of(st.integers(0, 50), st.integers(0, 200_000)))
    cache_read = draw(st.one_of(st.just(0), st.integers(0, inp)))
    cache_write = draw(st.one_of(st.just(0), st.integers(0, inp - cache_read)))
    return {
        "provider": provider,
        "model": model,
        "attempt": draw(st.one_of(st.none(), st.integers(1, attempts), st.integers(1, attempts))),
        "source": source,
        "priced": source != "unknown" and draw(st.sampled_from([True, True, True, False])),
        "tokens": {
            "input_tokens": inp,
            "output_tokens": draw(st.integers(0, 5000)),
            "cache_read_input_tokens": cache_read,
            "cache_write_input_tokens": cache_write,
            "cache_write_1h_input_tokens": draw(st.integers(0, cache_write)),
            "reasoning_output_tokens": draw(st.sampled_from([0, 0, 17, 900])),
        },
        "nanos": draw(st.lists(st.integers(0, 10**9), min_size=6, max_size=6)),
        "when": draw(st.sampled_from(WHEN)),
    }


@st.composite
def task_specs(draw: st.DrawFn) -> dict[str, Any]:
    models, final_model = draw(st.sampled_from(ROUTES))
    attempts = draw(st.integers(1, 3))
    return {
        "spec": {
            "name": draw(st.sampled_from(["resolve", "triage"])),
            "feature": draw(st.sampled_from([None, "support", "billing"])),
            "team": draw(st.sampled_from([None, "red"])),
            "models": models,
            "final_model": final_model,
            "outcome": draw(st.sampled_from(OUTCOMES)),
            "attempts": attempts,
            "cost": draw(st.integers(0, 10**9)),
            "unpriced": draw(st.integers(0, 2)),
            "llm_calls": draw(st.integers(0, 4)),
        },
        "at": draw(instants),
        "calls": draw(st.lists(call_specs(attempts), max_size=5)),
    }


@st.composite
def ledgers(draw: st.DrawFn) -> dict[str, Any]:
    rounds = draw(st.lists(st.lists(task_specs(), min_size=1, max_size=8), min_size=2, max_size=3))
    n_tasks = sum(len(r) for r in rounds)
    # calls without a task, per round; not on gpt-4o (two providers): test_whatif_provider_counts_calls_without_a_task
    loose = [draw(st.lists(call_specs(2, LOOSE_MODELS), max_size=3)) for _ in rounds]
    outcomes = [
        draw(st.lists(st.tuples(st.integers(0, n_tasks - 1), st.sampled_from(OUTCOMES[1:])), max_size=4))
        for _ in rounds
    ]
    refreshes = [draw(st.sampled_from(["all", 2, None, "all"])) for _ in rounds]
    final = draw(st.sampled_from([None, 1, "all"]))
    ats = [t["at"] for r in rounds for t in r]
    a, b = sorted(draw(st.lists(st.sampled_from(ats), min_size=2, max_size=2)))
    filters = draw(
        st.sampled_from(
            [
                Filters(),
                Filters(feature="support"),
                Filters(route="gpt-4o-mini->gpt-4o"),
                Filters(task="triage", team="red"),
                Filters(since=a - timedelta(minutes=20)),
                Filters(until=b),
                Filters(since=a, until=b + timedelta(minutes=20), feature="billing"),
            ]
        )
    )
    return {"rounds": rounds, "loose": loose, "outcomes": outcomes, "refreshes": refreshes, "final": final,
            "filters": filters}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Writing


def record(call_id: str, c: dict[str, Any], at: datetime, task: dict[str, Any] | None, task_id: str | None) -> Any:
    """The ``costtrace_calls`` row of a call spec, built from a ``CallRecord`` as the SDK does."""
    parts = [Decimal(n) * NANO for n in c["nanos"]]
    cost = Cost(
        total_usd=sum(parts, Decimal(0)) if c["priced"] else None,
        input_usd=parts[0] if c["priced"] else Decimal(0),
        cache_read_usd=parts[1] if c["priced"] else Decimal(0),
        cache_write_usd=parts[2] if c["priced"] else Decimal(0),
        output_usd=parts[3] if c["priced"] else Decimal(0),
        reasoning_usd=parts[4] if c["priced"] else Decimal(0),
        other_usd=parts[5] if c["priced"] else Decimal(0),
        cache_savings_usd=Decimal(0),
        priced=c["priced"],
        price_source="test",
        price_date=None,
        model_id=c["model"] if c["priced"] else None,
        provider_id=c["provider"],
        unpriced_reason=None if c["priced"] else "no price",
    )
    dims = {} if task is None else {f"costtrace.{k}": task[k] for k in ("feature", "team") if task[k] is not None}
    return call_row(
        CallRecord(
            call_id=call_id,
            provider=c["provider"],
            operation="chat",
            request_model=c["model"],
            response_model=None,
            usage=Usage(**c["tokens"], source=c["source"]),
            cost=cost,
            start_time=at,
            duration_s=0.5,
            task_id=task_id,
            task_name=None if task is None else task["name"],
            attempt=c["attempt"] if task is not None else None,
            dimensions=dims,
        )
    )


def batch(
    engine: sa.Engine, calls: Sequence[Any] = (), tasks: Sequence[Any] = (), outcomes: Sequence[Any] = ()
) -> None:
    write_batch(
        engine, Batch(calls=list(calls), tasks=list(tasks), events=list(outcomes), outcome_updates=list(outcomes)),
        budgets=[],
    )  # fmt: skip


def clear(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        for table in (schema.calls, schema.tasks, schema.events, schema.rollup_cells, schema.rollup_models,
                      schema.rollup_periods, schema.rollup_marks):  # fmt: skip
            conn.execute(table.delete())


def write_ledger(engine: sa.Engine, ledger: dict[str, Any], *, refresh: bool = True) -> None:
    rounds = ledger["rounds"]
    n = len(rounds)
    pending: dict[tuple[int, str], list[Any]] = {}  # (round, "with" | "after") -> call rows
    ids = itertools.count()
    for r, tasks in enumerate(rounds):
        for j, t in enumerate(tasks):
            task_id = f"r{r}t{j}"
            for k, c in enumerate(t["calls"]):
                row = record(f"{task_id}c{k}", c, t["at"] - timedelta(seconds=k + 1), t["spec"], task_id)
                target = {"with": (r, "with"), "after": (r, "after"), "next": (r + 1, "with"),
                          "before": (max(r - 1, 0), "with")}[c["when"]]  # fmt: skip
                pending.setdefault(target, []).append(row)
        for k, c in enumerate(ledger["loose"][r]):
            pending.setdefault((r, "with"), []).append(record(f"loose{next(ids)}", c, rounds[r][0]["at"], None, None))
    task_ids = [f"r{r}t{j}" for r, tasks in enumerate(rounds) for j in range(len(tasks))]
    clock = itertools.count()
    for r, tasks in enumerate(rounds):
        rows = [task_row(summary(f"r{r}t{j}", **t["spec"]), t["at"]) for j, t in enumerate(tasks)]
        events = [
            outcome_event(f"e{next(clock)}", task_ids[target], outcome, datetime(2024, 3, 10) + timedelta(minutes=r))
            for target, outcome in ledger["outcomes"][r]
        ]
        batch(engine, pending.get((r, "with"), []), rows, events)
        if (r, "after") in pending:
            batch(engine, pending[(r, "after")])
        if refresh:
            run_refresh(engine, ledger["refreshes"][r])
    if (n, "with") in pending:  # a round later than the last one
        batch(engine, pending[(n, "with")])


# --------------------------------------------------------------------------------------------------
# The raw recomputation


def raw_model_sums(engine: sa.Engine, f: Filters, by: Sequence[str]) -> dict[tuple[Any, ...], dict[str, int]]:
    """``model_sums`` from the raw rows, by the definitions of ``ROLLUP_MODEL_SUMS``, in plain Python.

    An attempt is a (task, attempt, requested model); with ``provider`` in ``by`` it counts under the
    first provider (alphabetically) among its calls.
    """
    with engine.connect() as conn:
        tasks = {r["task_id"]: r for r in conn.execute(sa.select(schema.tasks)).mappings()}
        calls = [dict(r) for r in conn.execute(sa.select(schema.calls)).mappings()]
    columns = {"feature": "feature", "task": "name", "route": "route", "team": "team"}

    def selected(task: Any) -> bool:
        if any(getattr(f, k) is not None and task[c] != getattr(f, k) for k, c in columns.items()):
            return False
        return (f.since is None or task["ended_at"] >= f.since) and (f.until is None or task["ended_at"] < f.until)

    names = schema.ROLLUP_MODEL_SUMS
    tokens = schema.CALL_TOKENS
    nanos = [n for n in names if n.endswith("_nano_usd") and n != "cost_nano_usd"]
    groups: dict[tuple[Any, ...], dict[str, int]] = {}
    last: dict[str, int | None] = {}
    for call in calls:
        if call["task_id"] in tasks and call["attempt"] is not None:
            last[call["task_id"]] = max(last.get(call["task_id"]) or 0, call["attempt"])
    attempt_provider: dict[tuple[str, int, str], str] = {}
    for call in calls:
        if call["attempt"] is not None:
            key = (call["task_id"], call["attempt"], call["request_model"])
            attempt_provider[key] = min(attempt_provider.get(key, call["provider"]), call["provider"])
    counted: set[tuple[Any, ...]] = set()
    for call in sorted(calls, key=lambda c: c["call_id"]):
        task = tasks.get(call["task_id"])
        if task is None or not selected(task):
            continue
        keys = {**{k: task[k] for k in rollups.CELL_KEYS}, "provider": call["provider"],
                "request_model": call["request_model"]}  # fmt: skip
        group = tuple(keys[k] for k in by)
        g = groups.setdefault(group, dict.fromkeys(names, 0))
        unknown = int(call["usage_source"] == "unknown")
        g["calls"] += 1
        g["unpriced_calls"] += int(call["cost_nano_usd"] is None)
        g["unknown_usage_calls"] += unknown
        uncached = call["input_tokens"] - call["cache_read_input_tokens"] - call["cache_write_input_tokens"]
        g["uncached_input_calls"] += int(uncached > 0)
        g["cost_nano_usd"] += call["cost_nano_usd"] or 0
        for n in (*tokens, *nanos):
            g[n] += call[n]
        if call["attempt"] == 1:
            g["first_calls"] += 1
            g["first_unknown_usage_calls"] += unknown
            for n in tokens:
                g[f"first_{n}"] += call[n]
        success = task["outcome"] == "success"
        if call["attempt"] is not None:
            attempt = (call["task_id"], call["attempt"], call["request_model"])
            owner = attempt_provider[attempt] if "provider" in by else call["provider"]
            if attempt not in counted and owner == call["provider"]:
                counted.add(attempt)
                g["attempts"] += 1
                g["failed_attempts"] += 0 if success and call["attempt"] == last[call["task_id"]] else 1
            if success and call["attempt"] == task["attempts"]:
                g["useful_tokens"] += call["input_tokens"] + call["output_tokens"]
    return groups


MODEL_BYS: list[tuple[str, ...]] = [
    ("request_model",),
    ("route",),
    ("request_model", "provider"),
    ("feature", "outcome", "request_model"),
    rollups.MODEL_KEYS,
]
CONTEXT_BYS: list[tuple[str, ...]] = [(), ("feature",), ("route", "final_model"), ("team", "day")]


@contextmanager
def raw_sql_everywhere() -> Iterator[None]:
    """The analyses' raw SQL paths: no model sums from the rollups, exact scope figures."""
    real = stats.scope_stats

    def exact(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **{**kwargs, "exact": True})

    with mock.patch.object(stats, "model_sums", lambda *a, **k: None), mock.patch.object(stats, "scope_stats", exact):
        yield


def analyses(engine: sa.Engine, f: Filters) -> list[Any]:
    """``whatif`` on a one-model and a cascade route, and ``tco.from_ledger``; a ConfigError as its message."""
    out: list[Any] = []
    rates = {m: Decimal("0.25") for _, m in MODELS}
    for scope in (Filters(), f):
        for route in ("gpt-4o-mini", "gpt-4o-mini->gpt-4o", "claude-3-5-haiku-20241022"):
            try:
                out.append(routing.whatif(engine, route=route, filters=scope, failure_rates=rates))
            except ConfigError as e:
                out.append(str(e))
        out.append(tco.from_ledger(engine, filters=scope, rework_cost_usd=Decimal(2)))
    return out


def no_window(f: Filters) -> Filters:
    return Filters(feature=f.feature, task=f.task, route=f.route, team=f.team)


def check_models(engine: sa.Engine, f: Filters) -> None:
    for by in CONTEXT_BYS:  # every field of scope_stats, the context tax (from the model cells) included
        for scope in (Filters(), f):
            check_report(engine, by, scope)
    for by in MODEL_BYS:
        for scope in (Filters(), f):
            assert model_sums(engine, filters=scope, by=by) == raw_model_sums(engine, scope, by), (by, scope)
    everything = datetime(1970, 1, 1)
    for scope in (Filters(), no_window(f)):
        raw = model_costs(engine, filters=Filters(**{**vars_of(scope), "since": everything}))
        assert model_costs(engine, filters=scope) == raw, scope


def vars_of(f: Filters) -> dict[str, Any]:
    return {k: getattr(f, k) for k in ("feature", "task", "route", "team")}


@settings(
    max_examples=9,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ledger=ledgers())
def test_model_cells_equal_a_recomputation_from_raw_calls(ledger_engine, ledger):
    engine = ledger_engine
    clear(engine)
    write_ledger(engine, ledger, refresh=False)
    f = ledger["filters"]
    with raw_sql_everywhere():
        raw = analyses(engine, f)
    assert analyses(engine, f) == raw  # no period built: the model sums read raw rows
    check_models(engine, f)
    assert rollups.refresh(engine).still_dirty == 0
    assert analyses(engine, f) == raw  # every period built: the cells
    check_models(engine, f)

    clear(engine)  # the same ledger again, refreshed in part as it is written
    write_ledger(engine, ledger)
    run_refresh(engine, ledger["final"])
    check_models(engine, f)
    assert analyses(engine, f) == raw
    if ledger["final"] == "all":
        assert no_marks(engine)


# --------------------------------------------------------------------------------------------------
# Calls outside the cells: calls without a task, calls of a task never written


def gpt4o_call(provider: str, attempt: int | None) -> dict[str, Any]:
    return {"provider": provider, "model": "gpt-4o", "attempt": attempt, "source": "provider", "priced": True,
            "tokens": dict.fromkeys(schema.CALL_TOKENS, 0) | {"input_tokens": 100, "output_tokens": 10},
            "nanos": [1, 2, 3, 4, 5, 6]}  # fmt: skip


def two_provider_ledger(engine: sa.Engine) -> None:
    """gpt-4o: two task calls on openai, one on azure; two azure calls without a task, one of a task never written."""
    at = datetime(2024, 2, 1, 10)
    spec = {"name": "resolve", "feature": "support", "team": None, "models": ("gpt-4o",), "final_model": "gpt-4o"}
    calls = [
        record("a", gpt4o_call("openai", 1), at, spec, "T"),
        record("b", gpt4o_call("openai", 1), at, spec, "T"),
        record("c", gpt4o_call("azure", 1), at, spec, "T"),
        record("l1", gpt4o_call("azure", None), at, None, None),
        record("l2", gpt4o_call("azure", None), at, None, None),
        record("o1", gpt4o_call("azure", 1), at, spec, "never-written"),
    ]
    batch(engine, calls, [task_row(summary("T", **spec), at)])
    assert rollups.refresh(engine).still_dirty == 0


def test_whatif_provider_counts_calls_without_a_task(ledger_engine):
    two_provider_ledger(ledger_engine)
    rates = {"gpt-4o": Decimal("0.1")}
    with raw_sql_everywhere():
        raw = routing.whatif(ledger_engine, route="gpt-4o", failure_rates=rates)
    # 3 azure calls (one of the task, two outside any task) against 2 openai; the call of a task never
    # written is left out on both paths.
    assert [s.provider for s in raw.steps] == ["azure"]
    assert routing.whatif(ledger_engine, route="gpt-4o", failure_rates=rates) == raw


def test_model_costs_count_calls_of_a_task_never_written(ledger_engine):
    two_provider_ledger(ledger_engine)
    (raw,) = model_costs(ledger_engine, filters=Filters(since=datetime(1970, 1, 1)))
    assert raw.calls == 6
    assert model_costs(ledger_engine) == [raw]  # the cells and the calls outside tasks count 5: read raw
