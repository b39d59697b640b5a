"""A console a person can read: one block per finished task, its calls as a tree, its cost last.

``costtrace.configure(console=True)`` (or ``console="human"``, or ``COSTTRACE_CONSOLE=human``) prints::

    task resolve_ticket  feature=support customer=acme  success
      chat gpt-4o-mini  1,200 in (1,024 cache read) / 80 out  $0.000151
      retry after attempt 1: validation_failed (missing field 'amount')
      chat gpt-4o       1,300 in / 120 out                    $0.00445
      cost $0.00460  wasted $0.000151  first pass no  attempts 2  1.53 s

``console="json"`` keeps the OpenTelemetry SDK's raw ``ConsoleSpanExporter`` (every span as JSON).

It reads the spans costtrace makes (task spans and call spans) and nothing else: the app's own spans
and other instrumentations' spans are not printed (``console="json"`` prints them). A task's calls and
subtasks end before it, so they wait in a bounded buffer (per trace) until their outermost task ends;
a call outside any task prints at once, on one line. Spans whose task never ends print at
:meth:`ConsoleSpanProcessor.force_flush` and at shutdown, marked "not ended"; when the buffer is full
the oldest trace's spans print early the same way (and the task's block later says how many of its
calls were printed before it). Money is fixed-point (:func:`costtrace._money.usd`); an unpriced call
shows "unpriced", and a cost that misses one is a lower bound, ``>=$0.0123``, never a bare ``$0``.

The processor never raises into the app: an error of its own is logged and counted
(:func:`costtrace._internal.report_internal_error`, site ``console``) and the span is skipped.

Example, with an app's own TracerProvider::

    from costtrace.console import ConsoleSpanProcessor
    provider.add_span_processor(ConsoleSpanProcessor(out=sys.stderr))
"""

from __future__ import annotations

import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, TextIO

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from costtrace import semconv as sc
from costtrace._internal import report_internal_error
from costtrace._money import usd
from costtrace.errors import ConfigError

Mode = Literal["human", "json"]
MODES: tuple[Mode, ...] = ("human", "json")
ENV_CONSOLE = "COSTTRACE_CONSOLE"
"""``human`` | ``json`` (``true``/``1`` mean ``human``; ``false``/``0``/``off``/empty mean no console)."""

DEFAULT_MAX_SPANS = 10_000
"""Spans held while their task runs, over all traces; past it the oldest trace prints early."""
DEFAULT_MAX_TRACES = 1_000
"""Traces with spans held at once; past it the oldest trace prints early."""
_MAX_REMEMBERED_TASKS = 4_096
"""Tasks printed recently, by id: a call or subtask ending after its task prints as a late line."""
_MAX_TEXT = 80
"""Reasons and details longer than this are cut (a validation message can be a whole document)."""

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "none", "")
_FAILED_OUTCOMES = ("failure", "escalated_to_human")
_DIMENSION_KEYS = (sc.FEATURE, sc.TEAM, sc.CUSTOMER, sc.USER)


def resolve_mode(value: object, env: Mapping[str, str] | None = None) -> Mode | None:
    """The console mode for ``configure(console=value)``: ``"human"``, ``"json"`` or None (no console).

    ``None`` (the argument not given) defers to ``COSTTRACE_CONSOLE``; ``False`` turns the console off
    whatever the variable says.

    Raises:
        ConfigError: A value other than True/False/None, ``"human"`` or ``"json"`` (or a bad variable).

    Example:
        >>> resolve_mode(True), resolve_mode("json"), resolve_mode(None, {"COSTTRACE_CONSOLE": "human"})
        ('human', 'json', 'human')
    """
    if value is None:
        raw = (os.environ if env is None else env).get(ENV_CONSOLE, "")
        word = raw.strip().lower()
        if word in MODES:
            return word
        if word in _TRUE:
            return "human"
        if word in _FALSE:
            return None
        raise ConfigError(f"{ENV_CONSOLE}={raw!r} is not a console mode; use 'human', 'json', or 'false' for none")
    if value is True:
        return "human"
    if value is False:
        return None
    if isinstance(value, str) and value.strip().lower() in MODES:
        return "json" if value.strip().lower() == "json" else "human"
    shown = repr(value) if len(repr(value)) <= 80 else f"{repr(value)[:80]}..."
    raise ConfigError(f"console={shown} is not a console mode; use True or 'human' (readable), 'json' (raw spans)")


def span_processor(mode: Mode) -> SpanProcessor:
    """The span processor ``configure()`` installs for ``mode``."""
    if mode == "json":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

        return SimpleSpanProcessor(ConsoleSpanExporter())
    return ConsoleSpanProcessor()


# --- what is kept of a span ----------------------------------------------------------------------


@dataclass(slots=True)
class _Span:
    """The part of a finished span the console reads (the span object itself is not kept)."""

    trace_id: int
    start_ns: int
    end_ns: int
    name: str
    attrs: dict[str, Any]
    is_task: bool
    events: tuple[tuple[str, int, dict[str, Any]], ...] = ()

    @property
    def task_id(self) -> str | None:
        value = self.attrs.get(sc.TASK_ID)
        return None if value is None else str(value)

    @property
    def parent_task_id(self) -> str | None:
        value = self.attrs.get(sc.TASK_PARENT_ID)
        return None if value is None else str(value)


def _read(span: ReadableSpan) -> _Span | None:
    """A costtrace task or call span as :class:`_Span`; None for any other span."""
    attrs = span.attributes or {}
    if sc.CALL_ID in attrs:
        is_task = False
    elif sc.TASK_ID in attrs and attrs.get(sc.GEN_AI_OPERATION_NAME) == sc.OPERATION_INVOKE_WORKFLOW:
        is_task = True
    else:
        return None
    ctx = span.context
    start = span.start_time or 0
    events: tuple[tuple[str, int, dict[str, Any]], ...] = ()
    if is_task:
        events = tuple((e.name, e.timestamp or 0, dict(e.attributes or {})) for e in span.events)
    return _Span(
        trace_id=ctx.trace_id if ctx is not None else 0,
        start_ns=start,
        end_ns=span.end_time or start,
        name=span.name,
        attrs=dict(attrs),
        is_task=is_task,
        events=events,
    )


# --- the processor -------------------------------------------------------------------------------


class ConsoleSpanProcessor(SpanProcessor):
    """Print costtrace's tasks as readable blocks (see the module docstring).

    Args:
        out: Where to write (default: ``sys.stdout`` at the time of each write).
        max_spans: Most spans held while their task runs, over all traces.
        max_traces: Most traces with spans held at once.

    Attributes:
        printed_early: Spans printed before their task ended, because the buffer was full.

    Example:
        >>> import io
        >>> processor = ConsoleSpanProcessor(out=io.StringIO(), max_spans=1_000)
    """

    def __init__(
        self, out: TextIO | None = None, *, max_spans: int = DEFAULT_MAX_SPANS, max_traces: int = DEFAULT_MAX_TRACES
    ) -> None:
        from costtrace import _validate

        self._out = out
        self._max_spans = _validate.count(max_spans, "max_spans", minimum=1)
        self._max_traces = _validate.count(max_traces, "max_traces", minimum=1)
        self._lock = threading.Lock()
        self._buffer: dict[int, list[_Span]] = {}  # by trace id, oldest trace first
        self._buffered = 0
        self._printed: OrderedDict[str, str] = OrderedDict()  # task id -> name, recently printed
        self._shutdown = False
        self.printed_early = 0

    # --- SpanProcessor ---

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        try:
            ctx = span.context
            if ctx is not None and not ctx.trace_flags.sampled:
                return  # as the SDK's own processors: unsampled spans are not exported
            info = _read(span)
            if info is None:
                return
            with self._lock:
                if self._shutdown:
                    return
                self._on_end_locked(info)
        except Exception as exc:
            report_internal_error("console.on_end", exc)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Print the spans of tasks that have not ended (marked "not ended")."""
        try:
            with self._lock:
                self._flush_all_locked("not ended at flush")
        except Exception as exc:
            report_internal_error("console.force_flush", exc)
        return True

    def shutdown(self) -> None:
        """Print the spans of tasks that never ended; later spans are ignored."""
        try:
            with self._lock:
                if self._shutdown:
                    return
                self._flush_all_locked("not ended at shutdown")
                self._shutdown = True
        except Exception as exc:
            report_internal_error("console.shutdown", exc)

    # --- internals (under self._lock) ---

    def _on_end_locked(self, info: _Span) -> None:
        task_id = info.task_id
        if not info.is_task:
            if task_id is None:
                self._write(_call_line(info, None))
            elif task_id in self._printed:
                self._write(_call_line(info, f"task {self._printed[task_id]} had already ended"))
            else:
                self._hold(info)
            return
        parent = info.parent_task_id
        if parent is None or parent in self._printed:
            spans = self._take_tree(info)
            late = None if parent is None else f"subtask of {self._printed[parent]}, which had already ended"
            self._write(_render_tree(info, spans, late=late))
        else:
            self._hold(info)

    def _hold(self, info: _Span) -> None:
        held = self._buffer.get(info.trace_id)
        while self._buffer and (
            self._buffered >= self._max_spans or (held is None and len(self._buffer) >= self._max_traces)
        ):
            oldest = next(iter(self._buffer))
            self._print_unfinished(oldest, "not ended yet; printed early, the console buffer is full", early=True)
            held = self._buffer.get(info.trace_id)
        if held is None:
            held = self._buffer[info.trace_id] = []
        held.append(info)
        self._buffered += 1

    def _take_tree(self, root: _Span) -> list[_Span]:
        """Remove and return the held spans of ``root``'s task tree (its subtasks at every depth, their calls)."""
        held = self._buffer.get(root.trace_id)
        root_id = root.task_id
        if root_id is not None:
            self._remember(root_id, str(root.attrs.get(sc.TASK_NAME, root.name)))
        if not held:
            return []
        ids = {root_id}
        grew = True
        while grew:
            grew = False
            for s in held:
                if s.is_task and s.task_id not in ids and s.parent_task_id in ids:
                    ids.add(s.task_id)
                    grew = True
        taken = [s for s in held if s.task_id in ids]
        rest = [s for s in held if s.task_id not in ids]
        for s in taken:
            if s.is_task and s.task_id is not None:
                self._remember(s.task_id, str(s.attrs.get(sc.TASK_NAME, s.name)))
        self._buffered -= len(taken)
        if rest:
            self._buffer[root.trace_id] = rest
        else:
            del self._buffer[root.trace_id]
        return taken

    def _remember(self, task_id: str, name: str) -> None:
        self._printed[task_id] = name
        self._printed.move_to_end(task_id)
        while len(self._printed) > _MAX_REMEMBERED_TASKS:
            self._printed.popitem(last=False)

    def _print_unfinished(self, trace_id: int, why: str, *, early: bool = False) -> None:
        held = self._buffer.pop(trace_id, [])
        self._buffered -= len(held)
        if early:
            self.printed_early += len(held)
        for s in held:
            if s.is_task and s.task_id is not None:
                self._remember(s.task_id, str(s.attrs.get(sc.TASK_NAME, s.name)))
        if held:
            self._write(_render_unfinished(held, why))

    def _flush_all_locked(self, why: str) -> None:
        for trace_id in list(self._buffer):
            self._print_unfinished(trace_id, why)

    def _write(self, text: str) -> None:
        out = self._out if self._out is not None else sys.stdout
        out.write(text + "\n")
        out.flush()


# --- rendering -----------------------------------------------------------------------------------


def _usd_of(value: object) -> Decimal:
    """A float span attribute as an exact Decimal of its shortest repr (``2.64e-05`` -> ``0.0000264``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return Decimal(0)
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _cut(text: object) -> str:
    """One line of at most ``_MAX_TEXT`` characters, cut at a word."""
    s = " ".join(str(text).split())
    if len(s) <= _MAX_TEXT:
        return s
    head = s[: _MAX_TEXT - 3]
    return (head.rsplit(" ", 1)[0] if " " in head else head) + "..."


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _money(amount: Decimal, complete: bool) -> str:
    return ("" if complete else ">=") + usd(amount)


def _duration(ns: int) -> str:
    s = max(ns, 0) / 1e9
    if s < 1:
        return f"{round(s * 1000):d} ms"
    if s < 60:
        return f"{s:.2f} s"
    minutes, rest = divmod(round(s), 60)
    return f"{minutes:d} min {rest:02d} s"


def _dimensions(attrs: Mapping[str, Any], parent: Mapping[str, Any] | None = None) -> str:
    """``feature=support customer=acme tier=gold``: the task's dimensions, those equal to its parent's left out."""
    keys = [k for k in _DIMENSION_KEYS if k in attrs]
    keys += sorted(k for k in attrs if k.startswith(sc.DIMENSION_PREFIX))
    parts = []
    for key in keys:
        if parent is not None and parent.get(key) == attrs[key]:
            continue
        short = key[len(sc.DIMENSION_PREFIX) :] if key.startswith(sc.DIMENSION_PREFIX) else key.split(".", 1)[1]
        parts.append(f"{short}={_cut(attrs[key])}")
    return " ".join(parts)


def _call_cells(call: _Span) -> tuple[str, str, str, str]:
    """(label, tokens, cost, notes) of a call span."""
    a = call.attrs
    operation, model = a.get(sc.GEN_AI_OPERATION_NAME), a.get(sc.GEN_AI_REQUEST_MODEL)
    label = _cut(f"{operation} {model}" if operation and model else call.name)
    source = a.get(sc.USAGE_SOURCE)
    notes: list[str] = []
    if a.get(sc.CALL_SENT) is False:
        return label, "", "", f"not sent: {a.get(sc.ERROR_TYPE, 'refused')} (no call, no cost)"
    if source == "unknown" or sc.GEN_AI_USAGE_INPUT_TOKENS not in a:
        tokens = "tokens unknown"
    else:
        extra_in = [
            f"{_int(a[key]):,} {what}"
            for key, what in (
                (sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, "cache read"),
                (sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, "cache write"),
            )
            if _int(a.get(key))
        ]
        tokens = f"{_int(a.get(sc.GEN_AI_USAGE_INPUT_TOKENS)):,} in"
        if extra_in:
            tokens += f" ({', '.join(extra_in)})"
        tokens += f" / {_int(a.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS)):,} out"
        reasoning = _int(a.get(sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS))
        if reasoning:
            tokens += f" ({reasoning:,} reasoning)"
    if sc.ERROR_TYPE in a:
        notes.append(f"failed: {a[sc.ERROR_TYPE]}")
    if source in ("estimated", "heuristic"):
        notes.append(f"{source} tokens")
    if a.get(sc.CALL_INCOMPLETE):
        notes.append("stream ended early")
    if a.get(sc.LITELLM_CACHE_HIT):
        notes.append("cache hit")
    if sc.BUDGET_DOWNGRADED_FROM in a:
        notes.append(f"downgraded from {a[sc.BUDGET_DOWNGRADED_FROM]}")
    if sc.CALL_COST_USD in a:
        cost = usd(_usd_of(a[sc.CALL_COST_USD]))
    else:
        cost = "unpriced"
        if source != "unknown" and a.get(sc.CALL_UNPRICED_REASON):
            notes.append(_cut(a[sc.CALL_UNPRICED_REASON]))
    return label, tokens, cost, "; ".join(notes)


def _call_line(call: _Span, note: str | None) -> str:
    """A call printed on its own: outside any task, or after its task ended."""
    label, tokens, cost, notes = _call_cells(call)
    parts = [f"call {label}", tokens, cost, "; ".join(n for n in (notes, note or "no task") if n)]
    return "  ".join(p for p in parts if p)


def _event_line(name: str, a: Mapping[str, Any]) -> str | None:
    """A task span event as a line between the calls; None for events the console does not show."""
    reason = _cut(a.get(sc.EVENT_ATTR_REASON) or "")
    details = _cut(a.get(sc.EVENT_ATTR_DETAILS) or "")
    attempt = a.get(sc.EVENT_ATTR_ATTEMPT, "?")
    if name == sc.EVENT_RETRY:
        return f"retry after attempt {attempt}: {reason}" + (f" ({details})" if details else "")
    if name == sc.EVENT_ESCALATION:
        route = f"{a.get(sc.EVENT_ATTR_FROM_MODEL, '?')} -> {a.get(sc.EVENT_ATTR_TO_MODEL, '?')}"
        why = ": ".join(p for p in (reason if reason != "escalation" else "", details) if p)
        return f"escalation after attempt {attempt}: {route}" + (f" ({why})" if why else "")
    if name == sc.EVENT_SDK_RETRY:
        return f"SDK re-sent the request ({a.get(sc.EVENT_ATTR_MODEL, '?')}): {reason}"
    if name == sc.EVENT_BUDGET_BLOCKED:
        what = f"budget {a[sc.BUDGET_NAME]}" if a.get(sc.BUDGET_NAME) else reason
        model = f" ({a[sc.EVENT_ATTR_MODEL]})" if a.get(sc.EVENT_ATTR_MODEL) else ""
        return f"call blocked before sending{model}: {what}" + (f" ({details})" if details else "")
    return None


@dataclass
class _Node:
    """One task in a printed tree: its span (None when it has not ended), its calls and subtasks."""

    task_id: str | None
    span: _Span | None
    calls: list[_Span] = field(default_factory=list)
    subtasks: list[_Node] = field(default_factory=list)
    name_hint: str | None = None
    dims_hint: Mapping[str, Any] | None = None


_Row = tuple[int, str, str, str, str] | tuple[int, str]
"""A call row (depth, label, tokens, cost, notes) or a text row (depth, text)."""
_Item = tuple[int, int, _Span | _Node | tuple[str, dict[str, Any]]]
"""A call, a subtask or a task event, keyed by (time, kind) for ordering."""
_LINEAGE = (sc.EVENT_RETRY, sc.EVENT_ESCALATION)


def _build(spans: Iterable[_Span], root: _Span | None) -> list[_Node]:
    """The task tree(s) of ``spans``: ``[root's node]`` when ``root`` is given, else every top-level node.

    A task whose span has not ended is a placeholder, known by what its calls say (name, dimensions).
    """
    nodes: dict[str | None, _Node] = {}
    if root is not None:
        nodes[root.task_id] = _Node(root.task_id, root)
    ordered = sorted(spans, key=lambda s: (s.start_ns, s.end_ns))
    for s in ordered:
        if s.is_task:
            nodes[s.task_id] = _Node(s.task_id, s)
    tops: list[_Node] = []
    placeholders: list[_Node] = []

    def node_for(task_id: str | None) -> _Node:
        node = nodes.get(task_id)
        if node is None:
            node = nodes[task_id] = _Node(task_id, None)
            placeholders.append(node)
        return node

    for s in ordered:
        if s.is_task:
            node = nodes[s.task_id]
            parent = s.parent_task_id
            if parent is None:
                tops.append(node)
            else:
                node_for(parent).subtasks.append(node)
        else:
            node = node_for(s.task_id)
            if node.span is None and node.name_hint is None:
                node.name_hint = str(s.attrs.get(sc.TASK_NAME, "")) or None
                node.dims_hint = s.attrs
            node.calls.append(s)
    if root is not None:
        return [nodes[root.task_id]]
    return [*tops, *placeholders]


def _task_rows(node: _Node, depth: int, parent_attrs: Mapping[str, Any] | None, note: str | None) -> list[_Row]:
    span = node.span
    attrs = span.attrs if span is not None else (node.dims_hint or {})
    name = _cut(
        attrs.get(sc.TASK_NAME, span.name) if span is not None else (node.name_hint or f"(id {str(node.task_id)[:12]})")
    )
    header = [f"task {name}", _dimensions(attrs, parent_attrs)]
    if span is not None:
        outcome = str(attrs.get(sc.TASK_OUTCOME) or "no outcome")
        reason = attrs.get(sc.TASK_OUTCOME_REASON)
        header.append(f"{outcome} ({_cut(reason)})" if reason else outcome)
    if note:
        header.append(f"[{note}]")
    rows: list[_Row] = [(depth, "  ".join(h for h in header if h))]

    items: list[_Item]
    items = [(call.start_ns, 0, call) for call in node.calls]
    items.extend((_start_ns(sub), 1, sub) for sub in node.subtasks)
    if span is not None:
        items.extend((ts, 2, (ev_name, ev_attrs)) for ev_name, ts, ev_attrs in span.events)
    items.sort(key=lambda item: (item[0], item[1]))
    for _, _, item in _lineage_before_its_attempt(items):
        if isinstance(item, _Span):
            rows.append((depth + 1, *_call_cells(item)))
        elif isinstance(item, _Node):
            rows.extend(_task_rows(item, depth + 1, attrs, None))
        else:
            line = _event_line(*item)
            if line is not None:
                rows.append((depth + 1, line))
    if span is not None:
        shown = sum(1 for c in node.calls if c.attrs.get(sc.CALL_SENT) is not False)
        missing = _int(attrs.get(sc.TASK_LLM_CALLS)) - shown
        if missing > 0:
            rows.append((depth + 1, f"{_plural(missing, 'more call')} printed before the task ended"))
        rows.append((depth + 1, _footer(node)))
    return rows


def _lineage_before_its_attempt(items: list[_Item]) -> list[_Item]:
    """Move a retry or escalation up to just before the first call of the attempt it opens.

    An implicit retry (after a call that raised) is recorded when the next call starts, so its timestamp
    falls a few microseconds after that call's start; read in time order it would follow the call.
    """
    out = list(items)
    for item in items:
        body = item[2]
        if not (isinstance(body, tuple) and body[0] in _LINEAGE):
            continue
        next_attempt = _int(body[1].get(sc.EVENT_ATTR_NEXT_ATTEMPT))
        first = next(
            (
                i
                for i, other in enumerate(out)
                if isinstance(other[2], _Span) and _int(other[2].attrs.get(sc.CALL_ATTEMPT)) >= next_attempt > 0
            ),
            None,
        )
        here = next(i for i, other in enumerate(out) if other is item)
        if first is not None and first < here:
            out.insert(first, out.pop(here))
    return out


def _start_ns(node: _Node) -> int:
    if node.span is not None:
        return node.span.start_ns
    return min((c.start_ns for c in node.calls), default=0)


def _footer(node: _Node) -> str:
    """``cost ...  wasted ...  first pass ...  attempts N  duration`` of an ended task."""
    assert node.span is not None
    a = node.span.attrs
    own = _usd_of(a.get(sc.TASK_COST_USD))
    subtasks = _usd_of(a.get(sc.TASK_SUBTASKS_COST_USD))
    own_unpriced = _int(a.get(sc.TASK_UNPRICED_CALLS))
    sub_unpriced = _int(a.get(sc.TASK_SUBTASKS_UNPRICED_CALLS))
    own_complete = own_unpriced == 0 and a.get(sc.TASK_COST_COMPLETE) is not False
    sub_complete = sub_unpriced == 0
    notes = []
    if own_unpriced + sub_unpriced:
        notes.append(_plural(own_unpriced + sub_unpriced, "unpriced call"))
    estimated = _int(a.get(sc.TASK_ESTIMATED_CALLS))
    if estimated:
        notes.append(f"{_plural(estimated, 'call')} with estimated tokens")
    if node.subtasks or subtasks or sub_unpriced:
        notes.append(f"own {_money(own, own_complete)} + subtasks {_money(subtasks, sub_complete)}")
    cost = f"cost {_money(own + subtasks, own_complete and sub_complete)}"
    if notes:
        cost += f" ({'; '.join(notes)})"
    parts = [cost, f"wasted {_money(_usd_of(a.get(sc.TASK_WASTED_COST_USD)), not _wasted_misses_calls(node))}"]
    first_pass = a.get(sc.TASK_FIRST_PASS)
    if isinstance(first_pass, bool):
        parts.append(f"first pass {'yes' if first_pass else 'no'}")
    parts.append(f"attempts {_int(a.get(sc.TASK_ATTEMPTS))}")
    parts.append(_duration(node.span.end_ns - node.span.start_ns))
    return "  ".join(parts)


def _wasted_misses_calls(node: _Node) -> bool:
    """True when an unpriced call of the task is in a failed attempt: the wasted cost is then a lower bound."""
    assert node.span is not None
    a = node.span.attrs
    failed_task = a.get(sc.TASK_OUTCOME) in _FAILED_OUTCOMES
    next_attempts = [
        _int(ev.get(sc.EVENT_ATTR_NEXT_ATTEMPT))
        for name, _, ev in node.span.events
        if name in (sc.EVENT_RETRY, sc.EVENT_ESCALATION, sc.EVENT_ATTEMPT_FAILED)
    ]
    current = max(next_attempts, default=1)
    for call in node.calls:
        c = call.attrs
        if sc.CALL_COST_USD in c or c.get(sc.CALL_SENT) is False:
            continue
        attempt = _int(c.get(sc.CALL_ATTEMPT)) or current
        if failed_task or attempt < current:
            return True
    shown = sum(1 for c in node.calls if c.attrs.get(sc.CALL_SENT) is not False)
    return shown < _int(a.get(sc.TASK_LLM_CALLS)) and _int(a.get(sc.TASK_UNPRICED_CALLS)) > 0


def _format(rows: Sequence[_Row]) -> str:
    """Rows as text: two spaces per depth; call rows aligned in columns across the block."""
    calls = [r for r in rows if len(r) == 5]
    label_w = max((2 * r[0] + len(r[1]) for r in calls), default=0)
    tokens_w = max((len(r[2]) for r in calls), default=0)
    cost_w = max((len(r[3]) for r in calls), default=0)
    lines = []
    for r in rows:
        indent = "  " * r[0]
        if len(r) == 2:
            lines.append(indent + r[1])
            continue
        _, label, tokens, cost, notes = r
        line = f"{indent}{label}".ljust(label_w) + f"  {tokens:<{tokens_w}}  {cost:>{cost_w}}  {notes}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def _render_tree(root: _Span, spans: Sequence[_Span], *, late: str | None = None) -> str:
    """The block of an ended task: ``root`` with its held calls and subtasks."""
    (node,) = _build(spans, root)
    return _format(_task_rows(node, 0, None, late))


def _render_unfinished(spans: Sequence[_Span], why: str) -> str:
    """Held spans whose outermost task has not ended: a block per task, marked ``why``."""
    rows: list[_Row] = []
    for node in _build(spans, None):
        rows.extend(_task_rows(node, 0, None, why if node.span is None else None))
    return _format(rows)
