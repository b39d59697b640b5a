"""pytest plugin: cost tests in your own suite, so a cost regression fails CI.

Installed with costtrace (entry point ``pytest11``, name ``costtrace``; disable with
``-p no:costtrace``). It is inert until a test asks for it: no autouse fixture, no output, no extra
imports beyond ``costtrace`` itself.

- Fixtures ``costtrace_tasks`` (a :class:`costtrace.testing.Captured` holding every task and call
  finished while the test runs, in any thread) and ``costtrace_calls`` (its ``calls`` list).
- Marker ``@pytest.mark.costtrace(max_cost_usd=..., max_attempts=..., max_tokens_per_task=...,
  max_llm_calls=..., task=None, require_priced=True, allow_none=False)``: after the test body passed,
  every task the body finished (named ``task``, or all) is checked, and the test fails listing each
  task over a limit.
- ``--costtrace-report``: a per-task-name summary (tasks, mean and max cost, attempts) at the end of
  the run.

Example:
    >>> @pytest.mark.costtrace(task="resolve_ticket", max_cost_usd="0.01", max_attempts=2)  # doctest: +SKIP
    ... def test_resolve_ticket_stays_cheap():
    ...     resolve_ticket("T-1")
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import pytest

from costtrace.errors import ConfigError
from costtrace.records import CallRecord, TaskSummary, add_listener, remove_listener
from costtrace.testing import (
    Captured,
    _attempts_problem,
    _calls_problem,
    _cost_problems,
    _int_limit,
    _n,
    _tokens_problem,
    _usd,
    _usd_limit,
    capture,
)

MARKER = "costtrace"

_MARKER_HELP = (
    "costtrace(max_cost_usd=None, max_attempts=None, max_tokens_per_task=None, max_llm_calls=None, "
    "task=None, require_priced=True, allow_none=False): fail the test when a task its body runs (named "
    "`task`, or any) costs more than max_cost_usd, takes more than max_attempts attempts, uses more than "
    "max_tokens_per_task tokens or makes more than max_llm_calls LLM calls; see costtrace docs/testing.md"
)


# --- Fixtures -----------------------------------------------------------------------------------------


@pytest.fixture
def costtrace_tasks() -> Iterator[Captured]:
    """Every task summary and call record finished while the test runs (``.tasks``, ``.calls``,
    ``.task(name)``), from any thread: costtrace's listeners are process-wide."""
    with capture() as got:
        yield got


@pytest.fixture
def costtrace_calls(costtrace_tasks: Captured) -> list[CallRecord]:
    """The call records finished while the test runs (the same list as ``costtrace_tasks.calls``)."""
    return costtrace_tasks.calls


# --- The marker ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Limits:
    max_cost_usd: Decimal | None = None
    max_attempts: int | None = None
    max_tokens_per_task: int | None = None
    max_llm_calls: int | None = None
    task: str | None = None
    require_priced: bool = True
    allow_none: bool = False


def _limits(mark: pytest.Mark) -> _Limits:
    """The marker's arguments, validated (ConfigError names the bad one)."""
    if mark.args:
        raise ConfigError(f"@pytest.mark.costtrace takes keyword arguments only, got {mark.args!r}")
    kwargs: dict[str, Any] = dict(mark.kwargs)
    known = set(_Limits.__dataclass_fields__)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(
            f"@pytest.mark.costtrace got unknown argument(s) {', '.join(unknown)}; it takes {', '.join(sorted(known))}"
        )
    if kwargs.get("max_cost_usd") is not None:
        kwargs["max_cost_usd"] = _usd_limit(kwargs["max_cost_usd"])
    for name in ("max_attempts", "max_tokens_per_task", "max_llm_calls"):
        if kwargs.get(name) is not None:
            _int_limit(kwargs[name], name)
    task_name = kwargs.get("task")
    if task_name is not None and not isinstance(task_name, str):
        raise ConfigError(f"@pytest.mark.costtrace task={task_name!r} must be a task name (str) or None")
    for flag in ("require_priced", "allow_none"):
        if not isinstance(kwargs.get(flag, False), bool):
            raise ConfigError(f"@pytest.mark.costtrace {flag}={kwargs[flag]!r} must be True or False")
    return _Limits(**kwargs)


def _violations(limits: _Limits, tasks: list[TaskSummary]) -> list[str]:
    checked = [t for t in tasks if limits.task is None or t.name == limits.task]
    if not checked and not limits.allow_none:
        what = f"no task named {limits.task!r} ran" if limits.task is not None else "no costtrace task ran"
        seen = sorted({t.name for t in tasks})
        return [f"{what} in the test body" + (f" (tasks that ran: {', '.join(seen)})" if seen else "")]
    found: list[str] = []
    for s in checked:
        if limits.max_cost_usd is not None:
            found += _cost_problems(s, limits.max_cost_usd, limits.require_priced, tasks)
        problems = (
            None if limits.max_attempts is None else _attempts_problem(s, limits.max_attempts),
            None if limits.max_tokens_per_task is None else _tokens_problem(s, limits.max_tokens_per_task),
            None if limits.max_llm_calls is None else _calls_problem(s, limits.max_llm_calls),
        )
        found += [p for p in problems if p]
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """Around the test body of a marked test: capture its tasks, then check them."""
    mark = item.get_closest_marker(MARKER)
    if mark is None:
        return (yield)
    bad: str | None = None
    try:
        limits = _limits(mark)
    except ConfigError as exc:
        bad = str(exc)
    if bad is not None:
        pytest.fail(bad, pytrace=False)  # outside the except: no "during handling" chain in the report
    with capture() as got:
        result = yield  # the body's own failure propagates from here, unchecked
    tasks = list(got.tasks)
    problems = _violations(limits, tasks)
    if problems:
        head = "costtrace: " + (problems[0] if len(problems) == 1 else f"{len(problems)} cost limits exceeded")
        body = "" if len(problems) == 1 else "".join(f"\n  {p}" for p in problems)
        pytest.fail(head + body, pytrace=False)
    return result


# --- Options, marker registration, the end-of-run report ---------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("costtrace", "costtrace (LLM cost per task)")
    group.addoption(
        "--costtrace-report",
        action="store_true",
        default=False,
        help="print a per-task-name summary (tasks, mean and max cost, attempts) of the tasks the tests ran",
    )


@dataclass
class _Row:
    tasks: int = 0
    total_usd: Decimal = Decimal(0)
    max_usd: Decimal = Decimal(0)
    attempts: int = 0
    max_attempts: int = 0
    incomplete: int = 0


class _Report:
    """Running totals per task name (no summaries kept, so a long suite stays small)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, _Row] = {}

    def on_call(self, record: CallRecord) -> None:
        pass

    def on_task(self, summary: TaskSummary) -> None:
        cost = summary.known_cost_usd  # a lower bound when incomplete: the row then says so
        with self._lock:
            row = self._rows.setdefault(summary.name, _Row())
            row.tasks += 1
            row.total_usd += cost
            row.max_usd = max(row.max_usd, cost)
            row.attempts += summary.attempts
            row.max_attempts = max(row.max_attempts, summary.attempts)
            row.incomplete += 0 if summary.cost_complete else 1

    def lines(self) -> list[str]:
        with self._lock:
            rows = sorted((name, replace(row)) for name, row in self._rows.items())
        if not rows:
            return ["no costtrace task ran"]
        width = max(len("task"), *(len(name) for name, _ in rows))
        out = [
            f"{'task':<{width}}  {'tasks':>6}  {'mean cost':>13}  {'max cost':>13}  attempts mean/max  unpriced tasks"
        ]
        for name, r in rows:
            # A row with an unpriced task has no known mean or max: show the lower bound, marked ">=".
            bound = ">=" if r.incomplete else ""
            mean = bound + _usd((r.total_usd / r.tasks).quantize(Decimal("1e-9")))
            top = bound + _usd(r.max_usd)
            attempts = f"{r.attempts / r.tasks:.1f}/{r.max_attempts}"
            out.append(f"{name:<{width}}  {r.tasks:>6}  {mean:>13}  {top:>13}  {attempts:>17}  {r.incomplete:>14}")
        out.append("cost: the task's calls and its subtasks', as max_cost_usd counts it")
        incomplete = sum(r.incomplete for _, r in rows)
        if incomplete:
            out.append(
                f"{_n(incomplete, 'task')} had unpriced calls (no price or unknown usage): the costs on their "
                "rows are lower bounds (>=)"
            )
        return out


_REPORT = pytest.StashKey[_Report]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)
    if config.getoption("costtrace_report"):
        report = _Report()
        config.stash[_REPORT] = report
        add_listener(report)


def pytest_unconfigure(config: pytest.Config) -> None:
    report = config.stash.get(_REPORT, None)
    if report is not None:
        remove_listener(report)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    report = config.stash.get(_REPORT, None)
    if report is None:
        return
    terminalreporter.write_sep("-", "costtrace: tasks run by the tests")
    for line in report.lines():
        terminalreporter.write_line(line)
