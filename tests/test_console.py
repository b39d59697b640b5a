"""The human console (costtrace.console): golden output, buffering until the task ends, the memory bound,
unfinished tasks at flush and shutdown, the json mode, bad settings, and errors that never reach the app.

The golden test feeds hand-built spans (fixed ids and timestamps, the attributes costtrace writes) in
the order the SDK ends them: children before their task. Set COSTTRACE_UPDATE_GOLDEN=1 to rewrite the
golden file after a deliberate change of the format, and review its diff.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

import costtrace
from costtrace import console
from costtrace import semconv as sc
from costtrace._internal import internal_error_counts
from costtrace._money import usd
from costtrace.console import ConsoleSpanProcessor

GOLDEN = Path(__file__).parent / "golden" / "console_human.txt"
MS = 1_000_000
T0 = 1_796_000_000_000 * MS  # 2026-11-30, a fixed instant: nothing printed depends on the clock


class SpanFactory:
    """Hand-built finished spans with fixed ids, as costtrace's task and call spans carry them."""

    def __init__(self) -> None:
        self._next_span_id = 0x100

    def make(
        self,
        name: str,
        trace_id: int,
        start_ms: int,
        end_ms: int,
        attributes: Mapping[str, Any],
        *,
        parent: ReadableSpan | None = None,
        events: tuple[tuple[str, int, Mapping[str, Any]], ...] = (),
        error: str | None = None,
    ) -> ReadableSpan:
        self._next_span_id += 1
        ctx = SpanContext(trace_id, self._next_span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        is_call = sc.CALL_ID in attributes
        return ReadableSpan(
            name=name,
            context=ctx,
            parent=parent.context if parent is not None else None,
            attributes=dict(attributes),
            events=[Event(n, dict(a), timestamp=T0 + ms * MS) for n, ms, a in events],
            kind=SpanKind.CLIENT if is_call else SpanKind.INTERNAL,
            status=Status(StatusCode.ERROR, error) if error else Status(StatusCode.UNSET),
            start_time=T0 + start_ms * MS,
            end_time=T0 + end_ms * MS,
        )


def call_attrs(
    model: str,
    call_id: str,
    *,
    task: tuple[str, str] | None = None,
    dims: Mapping[str, str] | None = None,
    attempt: int = 1,
    tokens: tuple[int, int] | None = None,
    cost: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: model,
        sc.CALL_ID: call_id,
        sc.USAGE_SOURCE: "provider" if tokens is not None else "unknown",
        sc.CALL_PRICED: cost is not None,
        sc.PRICE_SOURCE: "genai-prices" if cost is not None else "none",
    }
    if task is not None:
        attrs.update(dims or {})
        attrs[sc.TASK_ID], attrs[sc.TASK_NAME] = task
        attrs[sc.CALL_ATTEMPT] = attempt
    if tokens is not None:
        attrs[sc.GEN_AI_USAGE_INPUT_TOKENS], attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = tokens
    if cost is not None:
        attrs[sc.CALL_COST_USD] = cost
    attrs.update(extra)
    return attrs


def task_attrs(name: str, task_id: str, dims: Mapping[str, str], **rollups: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        **dims,
        sc.GEN_AI_OPERATION_NAME: sc.OPERATION_INVOKE_WORKFLOW,
        sc.GEN_AI_WORKFLOW_NAME: name,
        sc.TASK_NAME: name,
        sc.TASK_ID: task_id,
        sc.TASK_OUTCOME: "success",
        sc.TASK_FIRST_PASS: True,
        sc.TASK_COST_USD: 0.0,
        sc.TASK_WASTED_COST_USD: 0.0,
        sc.TASK_SUBTASKS_COST_USD: 0.0,
        sc.TASK_LLM_CALLS: 0,
        sc.TASK_ATTEMPTS: 1,
        sc.TASK_UNPRICED_CALLS: 0,
        sc.TASK_ESTIMATED_CALLS: 0,
        sc.TASK_COST_COMPLETE: True,
    }
    attrs.update({getattr(sc, f"TASK_{k.upper()}"): v for k, v in rollups.items()})
    return attrs


SUPPORT = {sc.FEATURE: "support", sc.CUSTOMER: "acme", f"{sc.DIMENSION_PREFIX}tier": "gold"}
RESOLVE = ("a1" * 16, "resolve_ticket")
LOOKUP = ("b2" * 16, "lookup_customer")
SUMMARIZE = ("c3" * 16, "summarize_thread")
NEVER_ENDS = ("d4" * 16, "nightly_digest")


def scenario() -> list[ReadableSpan]:
    """Spans in the order the SDK ends them: a task with 3 calls, a retry, an escalation and an unpriced
    subtask; a failed task (a failed call, then one that returned an unusable answer); a call outside any
    task, ending while the first task runs; a task that never ends."""
    f = SpanFactory()
    resolve_id, lookup_id, summarize_id, never_id = RESOLVE[0], LOOKUP[0], SUMMARIZE[0], NEVER_ENDS[0]
    in_resolve = {"task": (resolve_id, "resolve_ticket"), "dims": SUPPORT}
    resolve = f.make(
        "invoke_workflow resolve_ticket",
        0xA1,
        1000,
        2530,
        task_attrs(
            "resolve_ticket",
            resolve_id,
            SUPPORT,
            first_pass=False,
            cost_usd=0.0048457,
            wasted_cost_usd=0.0003957,
            subtasks_unpriced_calls=1,
            llm_calls=3,
            attempts=3,
            retries=1,
            escalations=1,
            input_tokens=3750,
            output_tokens=295,
            cache_read_input_tokens=1024,
            estimated_calls=1,
        ),
        events=(
            (sc.EVENT_RETRY, 1300, {
                sc.EVENT_ATTR_ATTEMPT: 1, sc.EVENT_ATTR_NEXT_ATTEMPT: 2, sc.EVENT_ATTR_REASON: "validation_failed",
                sc.EVENT_ATTR_DETAILS: "missing field 'amount'", sc.EVENT_ATTR_MODEL: "gpt-4o-mini",
                sc.EVENT_ATTR_ATTEMPT_COST_USD: 0.0001512,
            }),
            (sc.EVENT_ESCALATION, 1505, {
                sc.EVENT_ATTR_ATTEMPT: 2, sc.EVENT_ATTR_NEXT_ATTEMPT: 3, sc.EVENT_ATTR_REASON: "low_confidence",
                sc.EVENT_ATTR_FROM_MODEL: "gpt-4o-mini", sc.EVENT_ATTR_TO_MODEL: "gpt-4o",
            }),
        ),
    )  # fmt: skip
    lookup = f.make(
        "invoke_workflow lookup_customer",
        0xA1,
        1510,
        1720,
        task_attrs("lookup_customer", lookup_id, SUPPORT, parent_id=resolve_id, llm_calls=1, unpriced_calls=1,
                   cost_complete=False, input_tokens=100, output_tokens=20),
        parent=resolve,
    )  # fmt: skip
    summarize = f.make(
        "invoke_workflow summarize_thread",
        0xC3,
        3000,
        4250,
        task_attrs("summarize_thread", summarize_id, {sc.FEATURE: "support"}, outcome="failure",
                   outcome_reason="validation_failed", first_pass=False, cost_usd=0.00054, wasted_cost_usd=0.00054,
                   llm_calls=2, failed_calls=1, attempts=2, retries=1, unpriced_calls=1, cost_complete=False),
        events=(
            (sc.EVENT_ATTEMPT_FAILED, 3900, {
                sc.EVENT_ATTR_ATTEMPT: 1, sc.EVENT_ATTR_NEXT_ATTEMPT: 2, sc.EVENT_ATTR_REASON: "exception",
                sc.EVENT_ATTR_DETAILS: "APITimeoutError", sc.ERROR_TYPE: "APITimeoutError",
            }),
            (sc.EVENT_RETRY, 3950, {
                sc.EVENT_ATTR_ATTEMPT: 1, sc.EVENT_ATTR_NEXT_ATTEMPT: 2, sc.EVENT_ATTR_REASON: "exception",
            }),
        ),
        error="failure: validation_failed",
    )  # fmt: skip
    in_summarize = {"task": (summarize_id, "summarize_thread"), "dims": {sc.FEATURE: "support"}}
    return [
        f.make("chat gpt-4o-mini", 0xA1, 1010, 1290, call_attrs(
            "gpt-4o-mini", "call-1", **in_resolve, tokens=(1200, 80), cost=0.0001512,
            **{sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 1024}), parent=resolve),
        f.make("chat gpt-4o-mini", 0xA1, 1310, 1500, call_attrs(
            "gpt-4o-mini", "call-2", **in_resolve, attempt=2, tokens=(1250, 95), cost=0.0002445), parent=resolve),
        f.make("chat gpt-4o-mini", 0xB7, 1400, 1460, call_attrs("gpt-4o-mini", "call-x", tokens=(10, 1),
                                                                cost=2.1e-06)),
        f.make("chat acme-llm", 0xA1, 1520, 1700, call_attrs(
            "acme-llm", "call-3", task=(lookup_id, "lookup_customer"), dims=SUPPORT, tokens=(100, 20),
            **{sc.CALL_UNPRICED_REASON: "unknown model 'acme-llm' for provider 'acme'"}), parent=lookup),
        lookup,
        f.make("chat gpt-4o", 0xA1, 1730, 2500, call_attrs(
            "gpt-4o", "call-4", **in_resolve, attempt=3, tokens=(1300, 120), cost=0.00445,
            **{sc.USAGE_SOURCE: "estimated"}), parent=resolve),
        resolve,
        f.make("chat gpt-4o", 0xC3, 3010, 3900, call_attrs(
            "gpt-4o", "call-5", **in_summarize, **{sc.ERROR_TYPE: "APITimeoutError"}),
            parent=summarize, error="APITimeoutError"),
        f.make("chat o4-mini", 0xC3, 3960, 4240, call_attrs(
            "o4-mini", "call-6", **in_summarize, attempt=2, tokens=(300, 400), cost=0.00054,
            **{sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 256}), parent=summarize),
        summarize,
        f.make("chat gpt-4o-mini", 0xD4, 5000, 5100, call_attrs(
            "gpt-4o-mini", "call-7", task=(never_id, "nightly_digest"), dims={sc.TEAM: "data"}, tokens=(500, 50),
            cost=0.000105)),
    ]  # fmt: skip


def run(spans: list[ReadableSpan], processor: ConsoleSpanProcessor) -> None:
    for span in spans:
        processor.on_end(span)


def test_golden_output():
    out = io.StringIO()
    processor = ConsoleSpanProcessor(out=out)
    run(scenario(), processor)
    processor.shutdown()
    if os.environ.get("COSTTRACE_UPDATE_GOLDEN"):
        GOLDEN.write_text(out.getvalue(), encoding="utf-8")
    assert out.getvalue() == GOLDEN.read_text(encoding="utf-8")


def test_a_task_prints_only_when_it_ends_with_its_calls_inside_and_a_call_outside_prints_at_once():
    out = io.StringIO()
    processor = ConsoleSpanProcessor(out=out)
    spans = scenario()
    run(spans[:2], processor)  # two calls of resolve_ticket: held
    assert out.getvalue() == ""
    run(spans[2:3], processor)  # the call outside any task: printed at once, one line
    assert out.getvalue() == "call chat gpt-4o-mini  10 in / 1 out  $0.00000210  no task\n"
    run(spans[3:6], processor)  # the subtask ends: it waits for its parent
    assert out.getvalue().count("\n") == 1
    run(spans[6:7], processor)  # resolve_ticket ends: one block, the subtask nested in it
    block = out.getvalue().splitlines()[1:]
    assert block[0] == "task resolve_ticket  feature=support customer=acme tier=gold  success"
    assert [line.split()[0] for line in block] == ["task", "chat", "retry", "chat", "escalation", "task", "chat",
                                                   "cost", "chat", "cost"]  # fmt: skip
    assert block[5] == "  task lookup_customer  success"  # inherited dimensions are not repeated
    assert processor._buffered == 0


def test_the_buffer_is_bounded_and_the_oldest_trace_prints_early():
    out = io.StringIO()
    processor = ConsoleSpanProcessor(out=out, max_spans=3)
    f = SpanFactory()
    task = ("e5" * 16, "agent_loop")
    calls = [
        f.make("chat gpt-4o-mini", 0xE5, 10 * i, 10 * i + 5,
               call_attrs("gpt-4o-mini", f"c{i}", task=task, tokens=(100, 10), cost=0.0001))
        for i in range(7)
    ]  # fmt: skip
    for i, span in enumerate(calls):
        processor.on_end(span)
        assert processor._buffered <= 3, i
    assert processor.printed_early == 6  # twice three calls, printed when the next one found the buffer full
    early = out.getvalue()
    assert early.count("task agent_loop  [not ended yet; printed early, the console buffer is full]") == 2
    assert early.count("chat gpt-4o-mini") == 6
    processor.on_end(
        f.make("invoke_workflow agent_loop", 0xE5, 0, 100, task_attrs("agent_loop", task[0], {}, llm_calls=7,
                                                                      cost_usd=0.0007))
    )  # fmt: skip
    last = out.getvalue()[len(early) :]
    assert last.splitlines() == [
        "task agent_loop  success",
        "  chat gpt-4o-mini  100 in / 10 out  $0.000100",
        "  6 more calls printed before the task ended",
        "  cost $0.000700  wasted $0  first pass yes  attempts 1  100 ms",
    ]


def test_at_most_max_traces_are_held():
    out = io.StringIO()
    processor = ConsoleSpanProcessor(out=out, max_traces=2)
    f = SpanFactory()
    for trace_id in (1, 2, 3):
        task = (f"{trace_id:032x}", f"job_{trace_id}")
        processor.on_end(f.make("chat m", trace_id, 0, 1, call_attrs("m", f"c{trace_id}", task=task, cost=0.1,
                                                                     tokens=(1, 1))))  # fmt: skip
    assert list(processor._buffer) == [2, 3]
    assert out.getvalue().startswith("task job_1  [not ended yet; printed early, the console buffer is full]\n")


def test_force_flush_prints_tasks_that_have_not_ended_and_empties_the_buffer():
    out = io.StringIO()
    processor = ConsoleSpanProcessor(out=out)
    spans = scenario()
    run(spans[:2], processor)
    assert processor.force_flush() is True
    assert out.getvalue().splitlines() == [
        "task resolve_ticket  feature=support customer=acme tier=gold  [not ended at flush]",
        "  chat gpt-4o-mini  1,200 in (1,024 cache read) / 80 out  $0.000151",
        "  chat gpt-4o-mini  1,250 in / 95 out                     $0.000245",
    ]
    assert processor._buffer == {} and processor._buffered == 0
    processor.force_flush()
    assert out.getvalue().count("\n") == 3  # nothing twice


def test_a_call_or_subtask_ending_after_its_task_prints_as_a_late_line():
    out = io.StringIO()
    processor = ConsoleSpanProcessor(out=out)
    f = SpanFactory()
    parent = f.make("invoke_workflow stream_answer", 7, 0, 50, task_attrs("stream_answer", "f6" * 16, {}))
    processor.on_end(parent)
    processor.on_end(f.make("chat gpt-4o", 7, 10, 90, call_attrs("gpt-4o", "c1", task=("f6" * 16, "stream_answer"),
                                                                 tokens=(10, 200), cost=0.002025)))  # fmt: skip
    child = task_attrs("background_check", "f7" * 16, {}, parent_id="f6" * 16)
    processor.on_end(f.make("invoke_workflow background_check", 7, 20, 120, child))
    lines = out.getvalue().splitlines()
    assert lines[2] == "call chat gpt-4o  10 in / 200 out  $0.00203  task stream_answer had already ended"
    assert lines[3] == "task background_check  success  [subtask of stream_answer, which had already ended]"


def test_spans_that_are_not_costtraces_are_not_printed():
    out = io.StringIO()
    processor = ConsoleSpanProcessor(out=out)
    processor.on_end(SpanFactory().make("GET /tickets", 9, 0, 1, {"http.request.method": "GET"}))
    processor.shutdown()
    assert out.getvalue() == "" and processor._buffer == {}


def test_real_tasks_read_as_their_summaries(spans):
    """Spans of real costtrace tasks (the conftest's in-memory exporter keeps them in ending order)."""
    with costtrace.task("resolve_ticket", feature="support") as t:
        costtrace.record_llm_call("openai", "gpt-4o-mini", 1200, 80, cache_read_input_tokens=1024)
        t.retry("validation_failed", details="missing field 'amount'")
        costtrace.record_llm_call("openai", "gpt-4o-mini", 1250, 95)
        t.escalate("gpt-4o", reason="low_confidence")
        with costtrace.task("lookup_customer"):
            costtrace.record_llm_call("openai", "no-such-model-xyz", 100, 20)
        costtrace.record_llm_call("openai", "gpt-4o", 1300, 120)
    s = t.summary
    out = io.StringIO()
    processor = ConsoleSpanProcessor(out=out)
    run(spans.all(), processor)
    lines = out.getvalue().splitlines()
    assert lines[0] == "task resolve_ticket  feature=support  success"
    assert lines[2] == "  retry after attempt 1: validation_failed (missing field 'amount')"
    assert lines[4] == "  escalation after attempt 2: gpt-4o-mini -> gpt-4o (low_confidence)"
    assert lines[6].split()[:3] == ["chat", "no-such-model-xyz", "100"] and "unpriced" in lines[6]
    assert lines[7].startswith("    cost >=$0 (1 unpriced call)  wasted $0  first pass yes  attempts 1  ")
    assert lines[9].startswith(
        f"  cost >={usd(s.known_cost_usd)} (1 unpriced call; own {usd(s.own_known_cost_usd)} + subtasks >=$0)"
        f"  wasted {usd(s.wasted_cost_usd)}  first pass no  attempts 3  "
    )
    assert len(lines) == 10


def test_the_retry_after_a_raising_call_reads_before_the_call_that_retries(spans):
    """The implicit retry is recorded when the next call starts, microseconds after that call's start."""
    with costtrace.task("summarize_thread") as t:
        with pytest.raises(TimeoutError), costtrace.llm_call("openai", "gpt-4o-mini"):
            raise TimeoutError
        costtrace.record_llm_call("openai", "gpt-4o-mini", 300, 40)
        t.fail("validation_failed")
    out = io.StringIO()
    run(spans.all(), ConsoleSpanProcessor(out=out))
    lines = out.getvalue().splitlines()
    assert lines[0] == "task summarize_thread  failure (validation_failed)"
    assert re.fullmatch(r"  chat gpt-4o-mini  tokens unknown +unpriced  failed: TimeoutError", lines[1])
    assert lines[2] == "  retry after attempt 1: exception"
    assert lines[3].startswith("  chat gpt-4o-mini  300 in / 40 out")
    assert lines[4].startswith(f"  cost >={usd(t.summary.known_cost_usd)} (1 unpriced call)  wasted >=$0.0000")


def test_names_and_dimensions_print_on_one_line():
    out = io.StringIO()
    attrs = task_attrs("resolve\nticket", "ab" * 16, {sc.FEATURE: "sup\nport", f"{sc.DIMENSION_PREFIX}x": "y" * 200})
    ConsoleSpanProcessor(out=out).on_end(SpanFactory().make("invoke_workflow t", 1, 0, 1, attrs))
    header = out.getvalue().splitlines()[0]
    assert header == f"task resolve ticket  feature=sup port x={'y' * 77}...  success"


def test_float_costs_print_in_fixed_point():
    assert console._usd_of(2.64e-05) == Decimal("0.0000264")
    out = io.StringIO()
    ConsoleSpanProcessor(out=out).on_end(
        SpanFactory().make("chat m", 1, 0, 1, call_attrs("m", "c", tokens=(1, 1), cost=2.64e-05))
    )
    assert "$0.0000264" in out.getvalue() and "e-" not in out.getvalue()


@pytest.mark.parametrize(
    ("value", "env", "mode"),
    [
        (True, "", "human"), ("human", "", "human"), ("json", "", "json"), ("JSON", "", "json"), (False, "human", None),
        (None, "", None), (None, "human", "human"), (None, " JSON ", "json"), (None, "true", "human"),
        (None, "0", None), (None, "off", None),
    ],
)  # fmt: skip
def test_resolve_mode(value, env, mode):
    assert console.resolve_mode(value, {"COSTTRACE_CONSOLE": env}) == mode


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({"console": "yes"}, None, "console='yes' is not a console mode; use True or 'human'"),
        ({"console": 1}, None, "console=1 is not a console mode"),
        ({}, "pretty", "COSTTRACE_CONSOLE='pretty' is not a console mode; use 'human', 'json'"),
    ],
)
def test_a_bad_console_setting_is_a_config_error(monkeypatch, kwargs, env, message):
    from costtrace import config

    if env is not None:
        monkeypatch.setenv("COSTTRACE_CONSOLE", env)
    with pytest.raises(costtrace.ConfigError, match=re.escape(message)):
        costtrace.configure(**kwargs)
    assert not config._configured


@pytest.mark.parametrize("max_spans", [0, -1, 1.5, True, "10"])
def test_a_bad_buffer_bound_is_a_config_error(max_spans):
    with pytest.raises(costtrace.ConfigError, match="max_spans="):
        ConsoleSpanProcessor(max_spans=max_spans)


class BrokenStream(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError("stdout closed")


@pytest.fixture
def production_errors(monkeypatch) -> Iterator[None]:
    """Internal errors handled as in production (logged and counted), not re-raised as under the suite."""
    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")
    yield


@pytest.mark.usefixtures("production_errors")
def test_an_error_in_the_console_never_reaches_the_app(monkeypatch):
    provider = TracerProvider()  # a private provider: spans end through the SDK's own processor chain
    provider.add_span_processor(ConsoleSpanProcessor(out=BrokenStream()))
    tracer = provider.get_tracer("app")
    tracer.start_span("chat m", attributes=call_attrs("m", "c1", tokens=(1, 1), cost=0.1)).end()
    assert internal_error_counts()["console.on_end"] == 1

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("a bug in the renderer")

    monkeypatch.setattr(console, "_render_unfinished", broken)
    processor = ConsoleSpanProcessor(out=io.StringIO())
    provider.add_span_processor(processor)
    attrs = call_attrs("m", "c2", task=("a" * 32, "t"), tokens=(1, 1), cost=0.1)
    tracer.start_span("chat m", attributes=attrs).end()
    assert provider.force_flush() is True  # both processors fail to print the held call: neither raises
    provider.shutdown()
    assert internal_error_counts() == {"console.on_end": 1, "console.force_flush": 2}


# --- through configure(), in a fresh interpreter (the suite's process already has its providers) ---------


APP = """
import costtrace
costtrace.configure({args})
costtrace.record_llm_call("openai", "gpt-4o-mini", 10, 1)
with costtrace.task("resolve_ticket", feature="support") as t:
    costtrace.record_llm_call("openai", "gpt-4o-mini", 1000, 100)
    t.retry("validation_failed")
    costtrace.record_llm_call("openai", "gpt-4o-mini", 1000, 100)
never = costtrace.task("nightly_digest")
never.__enter__()
costtrace.record_llm_call("openai", "gpt-4o-mini", 500, 50)
print("app done")
"""


def run_app(args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COSTTRACE_"))}
    return subprocess.run(
        [sys.executable, "-c", APP.format(args=args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


@pytest.mark.parametrize(("args", "env"), [("console=True", {}), ("console='human'", {}),
                                           ("", {"COSTTRACE_CONSOLE": "human"})])  # fmt: skip
def test_configure_console_prints_readable_tasks(args, env):
    result = run_app(args, env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("call chat gpt-4o-mini  10 in / 1 out  $0.00000")
    assert lines[1:5] == [
        "task resolve_ticket  feature=support  success",
        "  chat gpt-4o-mini  1,000 in / 100 out  $0.000210",
        "  retry after attempt 1: validation_failed",
        "  chat gpt-4o-mini  1,000 in / 100 out  $0.000210",
    ]
    assert lines[5].startswith("  cost $0.000420  wasted $0.000210  first pass no  attempts 2  ")
    assert lines[6:] == [
        "app done",
        "task nightly_digest  [not ended at shutdown]",  # printed by the shutdown configure() runs at exit
        "  chat gpt-4o-mini  500 in / 50 out  $0.000105",
    ]
    assert result.stderr == ""  # no OTLP export attempted: the console is the destination


@pytest.mark.parametrize(("args", "env"), [("console='json'", {}), ("", {"COSTTRACE_CONSOLE": "json"})])
def test_configure_console_json_prints_the_sdks_raw_spans(args, env):
    result = run_app(args, env)
    assert result.returncode == 0, result.stderr
    assert '"name": "invoke_workflow resolve_ticket"' in result.stdout
    assert '"costtrace.task.retries": 1' in result.stdout
    assert "task resolve_ticket" not in result.stdout


def test_console_false_wins_over_the_variable():
    result = run_app("console=False, otlp=False", {"COSTTRACE_CONSOLE": "human"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "app done\n"


def test_the_sample_in_docs_configuration_is_what_the_console_prints():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = doc.split("## Console\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    shown = section.split("```text\n", 1)[1].split("```", 1)[0]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COSTTRACE_"))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=clean)
    assert result.returncode == 0, result.stderr

    def no_durations(text: str) -> str:
        return re.sub(r"  (\d+ ms|\d+\.\d\d s|\d+ min \d\d s)$", "  <duration>", text, flags=re.MULTILINE)

    assert no_durations(result.stdout) == no_durations(shown)


def test_tasks_ending_in_many_threads_print_whole_blocks(monkeypatch):
    """Each block holds its own task's calls, whatever the interleaving of the threads."""
    import threading

    from costtrace import _otel

    out = io.StringIO()
    provider = TracerProvider()
    provider.add_span_processor(ConsoleSpanProcessor(out=out))
    monkeypatch.setattr(_otel, "_tracer", provider.get_tracer("costtrace"))

    def work(n: int) -> None:
        for i in range(20):
            with costtrace.task(f"job_{n}", customer=f"c{n}"):
                for _ in range(3):
                    costtrace.record_llm_call("openai", "gpt-4o-mini", 100 + n, i + 1)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    blocks = out.getvalue().split("task job_")[1:]
    assert len(blocks) == 8 * 20
    for block in blocks:
        lines = block.splitlines()
        n = int(lines[0].split()[0])
        assert lines[0] == f"{n}  customer=c{n}  success"
        assert len(lines) == 5 and all(line.startswith(f"  chat gpt-4o-mini  {100 + n} in") for line in lines[1:4])
        assert lines[4].startswith("  cost $")


# Append to tests/test_console.py after the merge with i12-recipes.


def test_otel_traces_exporter_console_prints_json_unless_costtrace_console_says_human():
    assert '"name": "invoke_workflow resolve_ticket"' in run_app("", {"OTEL_TRACES_EXPORTER": "console"}).stdout
    human = run_app("", {"OTEL_TRACES_EXPORTER": "console", "COSTTRACE_CONSOLE": "human"})
    assert human.returncode == 0, human.stderr
    assert "task resolve_ticket  feature=support  success" in human.stdout.splitlines()
