"""Webhooks: where alerts are POSTed, and the queue, thread and retries that deliver them.

A :class:`Webhook` says where and how (JSON, or Slack's shape; timeout, retries, backoff). The dispatcher
(:class:`costtrace.spend.alerts.AlertDispatcher`) hands each alert's body to a :class:`_WebhookSender`,
which gives every webhook its own bounded queue and daemon thread: a stuck endpoint delays only its own
alerts, the app never waits on the network, and every delivery ends counted (sent, failed or dropped).
One attempt is one HTTP POST under a deadline (:mod:`costtrace.spend._deadline_http`).

Example:
    >>> from costtrace.spend.alerts import add_webhook
    >>> add_webhook(Webhook("https://hooks.slack.com/services/T0/B0/XXX", slack=True))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.parse
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from typing import Any, Literal, Protocol

from costtrace import _validate
from costtrace._internal import logger, report_internal_error
from costtrace._version import __version__
from costtrace.errors import ConfigError

__all__ = ["WEBHOOK_QUEUE_SIZE", "Webhook"]

WEBHOOK_QUEUE_SIZE = 1000
"""Deliveries waiting at once for one webhook (each has its own queue); past it new ones are dropped and counted."""
_LOG_INTERVAL_S = 60.0


class _AlertFields(Protocol):
    """What a webhook reads of a :class:`costtrace.spend.alerts.Alert` (that module imports this one)."""

    @property
    def kind(self) -> str: ...
    @property
    def rule(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def scope(self) -> Mapping[str, str]: ...
    def to_dict(self) -> dict[str, Any]: ...


_limited_lock = threading.Lock()
_limited_last: dict[str, float] = {}


def _warn_limited(key: str, message: str, *args: object) -> None:
    """At most one WARNING per ``key`` and minute: a broken webhook (or ledger) must not flood the app's logs."""
    now = time.monotonic()
    with _limited_lock:
        last = _limited_last.get(key)
        if last is not None and now - last < _LOG_INTERVAL_S:
            return
        _limited_last[key] = now
    logger.warning(message, *args)


@dataclass(frozen=True, repr=False)
class Webhook:
    """An HTTP endpoint that receives every alert as a JSON POST.

    The URL may hold a secret (a Slack incoming-webhook path, a token): costtrace never logs it, only
    its ``scheme://host``. Each webhook has its own background thread and bounded queue, so a stuck
    endpoint only delays its own alerts. ``timeout_s`` bounds one whole attempt (name lookup, connect,
    TLS, sending, reading the answer), however slowly the server trickles bytes. 5xx answers, 408/429,
    connection errors and timeouts are retried with exponential backoff (``backoff_s``, doubled each
    time, with jitter); other 4xx answers and redirects are not retried. One alert therefore takes at
    most ``(retries + 1) * timeout_s + backoff_s * (2 ** retries - 1)`` seconds on its webhook.

    Args:
        url: ``https://...`` (or ``http://`` for a local relay).
        slack: Post Slack's shape (``{"text": ..., "blocks": [...]}``) instead of the alert's fields.
        headers: Extra request headers (e.g. ``{"Authorization": "Bearer ..."}``); never logged.
        timeout_s: Per attempt.
        retries: Attempts after the first.
        backoff_s: Wait before the first retry.

    Example:
        >>> Webhook("https://hooks.slack.com/services/T000/B000/secret", slack=True)
        Webhook('https://hooks.slack.com', slack=True)
    """

    url: str
    _: KW_ONLY
    slack: bool = False
    headers: Mapping[str, str] | None = None
    timeout_s: float = 5.0
    retries: int = 3
    backoff_s: float = 1.0

    def __post_init__(self) -> None:
        parsed = urllib.parse.urlsplit(self.url) if isinstance(self.url, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
            shown = f"{parsed.scheme}://{parsed.hostname}" if parsed is not None else type(self.url).__name__
            raise ConfigError(f"webhook URL {shown!r} must be an http:// or https:// URL with a host")
        where = f"webhook {self.target!r}"
        _validate.count(self.retries, f"{where}: retries", maximum=_validate.MAX_RETRIES)
        _validate.seconds(self.timeout_s, f"{where}: timeout_s", maximum=_validate.MAX_TIMEOUT_S)
        _validate.seconds(self.backoff_s, f"{where}: backoff_s", maximum=_validate.MAX_TIMEOUT_S, zero=True)
        if not isinstance(self.slack, bool):
            raise ConfigError(f"{where}: slack={self.slack!r} must be True or False")
        if self.headers is not None:
            if not isinstance(self.headers, Mapping):
                raise ConfigError(f"webhook {self.target!r}: headers must be a mapping of names to values")
            object.__setattr__(self, "headers", {str(k): str(v) for k, v in self.headers.items()})

    @property
    def target(self) -> str:
        """``scheme://host[:port]``: what logs and messages show of the URL."""
        parsed = urllib.parse.urlsplit(self.url)
        port = f":{parsed.port}" if parsed.port else ""
        return f"{parsed.scheme}://{parsed.hostname}{port}"

    def __repr__(self) -> str:
        return f"Webhook({self.target!r}{', slack=True' if self.slack else ''})"

    def body(self, alert: _AlertFields) -> bytes:
        """The JSON this webhook posts for ``alert``."""
        if not self.slack:
            return json.dumps(alert.to_dict(), sort_keys=True).encode("utf-8")
        return json.dumps(_slack_payload(alert)).encode("utf-8")

    def _post(self, body: bytes) -> None:
        """One attempt: POST ``body``; ``timeout_s`` bounds all of it (lookup, connect, TLS, send, answer)."""
        from costtrace.spend import _deadline_http

        headers = {"Content-Type": "application/json", "User-Agent": f"costtrace/{__version__}"}
        headers.update(self.headers or {})
        _deadline_http.post(self.url, body, headers, _deadline_http.Deadline(self.timeout_s))


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_SLACK_TITLES: Mapping[str, str] = {
    "budget_threshold": ":warning: Budget threshold reached",
    "budget_exhausted": ":rotating_light: Budget exhausted",
    "budget_store_unavailable": ":rotating_light: Budget store unreachable",
    "outcome_rule": ":chart_with_downwards_trend: Outcome rule broken",
}


def _slack_payload(alert: _AlertFields) -> dict[str, Any]:
    context = [f"*{alert.kind}*", f"rule `{_slack_escape(alert.rule)}`"]
    if alert.scope:
        context.append(", ".join(f"{_slack_escape(k)}={_slack_escape(v)}" for k, v in alert.scope.items()))
    return {
        "text": alert.message,
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _SLACK_TITLES.get(alert.kind, "costtrace alert")},
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(alert.message)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]},
        ],
    }


def _retryable(exc: BaseException, timeout_s: float) -> tuple[bool, str]:
    """Whether a failed POST is worth retrying, and a log-safe reason (never the URL)."""
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        code = exc.code
        return code >= 500 or code in (408, 429), f"HTTP {code}"
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return True, f"timed out: timeout_s={timeout_s:g} per attempt"
    if isinstance(exc, OSError):  # refused, reset, DNS failure
        return True, f"connection error ({type(exc).__name__})"
    return False, type(exc).__name__


class _WebhookSender:
    """A dispatcher's webhook deliveries: one :class:`_Lane` (bounded queue + daemon thread) per webhook.

    A destination that hangs holds only its own lane's thread, for at most its delivery bound; the
    others keep delivering. Threads: one per webhook that has had an alert, exiting when the webhook is
    removed or the sender shut down. Never blocks the caller; every delivery ends counted exactly once:
    ``sent``, ``failed`` (gave up) or ``dropped`` (queue full, webhook removed, or shut down first).
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.retried = 0
        self._lock = threading.Lock()
        self._lanes: dict[int, _Lane] = {}  # id(webhook) -> its lane (the lane holds the webhook alive)
        self._stopped = False
        _senders.add(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        for lane in self._lanes.values():
            lane._reset()

    def count(self, *, sent: int = 0, failed: int = 0, dropped: int = 0, retried: int = 0) -> None:
        with self._lock:
            self.sent += sent
            self.failed += failed
            self.dropped += dropped
            self.retried += retried

    def add(self, webhook: Webhook) -> None:
        with self._lock:
            if id(webhook) not in self._lanes:
                self._lanes[id(webhook)] = _Lane(self, webhook)

    def remove(self, webhook: Webhook) -> None:
        with self._lock:
            lane = self._lanes.pop(id(webhook), None)
        if lane is not None:
            self.count(dropped=lane.close())

    def submit(self, webhook: Webhook, body: bytes) -> None:
        with self._lock:
            lane = self._lanes.get(id(webhook))
            stopped = self._stopped
        if lane is None or stopped:  # removed meanwhile, or shut down
            if stopped:
                self.count(dropped=1)
            return
        refused = lane.submit(body)
        if refused:
            self.count(dropped=1)
        if refused == "full":
            _warn_limited(
                f"alerts.webhook.dropped.{webhook.target}",
                "costtrace alert webhook %s: queue full (%d waiting), alert deliveries dropped (%d so far)",
                webhook.target,
                self.maxsize,
                self.dropped,
            )

    def _lane_list(self) -> list[_Lane]:
        with self._lock:
            return list(self._lanes.values())

    def flush(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        return all([lane.wait_idle(deadline) for lane in self._lane_list()])

    def shutdown(self, timeout_s: float) -> bool:
        done = self.flush(timeout_s)
        with self._lock:
            self._stopped = True
        lanes = self._lane_list()
        threads = []
        for lane in lanes:
            self.count(dropped=lane.close())
            threads.append(lane.thread)
        join_until = time.monotonic() + 0.1  # idle threads exit at once; a busy one ends within its timeout
        for thread in threads:
            if thread is not None:
                thread.join(timeout=max(0.0, join_until - time.monotonic()))
        return done


class _Lane:
    """One webhook's queue (bounded by the sender's ``maxsize``) and the daemon thread that drains it."""

    def __init__(self, sender: _WebhookSender, webhook: Webhook) -> None:
        self.sender = sender
        self.webhook = webhook
        self._reset()

    def _reset(self) -> None:
        # Also the child's state after a fork: the parent delivers what it queued; the child starts empty.
        self.cond = threading.Condition(threading.Lock())
        self.queue: deque[bytes] = deque()
        self.busy = False
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()

    def submit(self, body: bytes) -> Literal["full", "closed"] | None:
        """Queue ``body``; or say why not (the caller counts a drop)."""
        with self.cond:
            if self.stop.is_set():
                return "closed"
            if len(self.queue) + self.busy >= self.sender.maxsize:
                return "full"
            self.queue.append(body)
            if self.thread is None:
                thread = threading.Thread(target=self._run, name=f"costtrace-alerts {self.webhook.target}", daemon=True)
                thread.start()
                self.thread = thread
            self.cond.notify()
        return None

    def close(self) -> int:
        """Stop the lane: its thread exits after the attempt in flight (if any). Returns the deliveries dropped."""
        with self.cond:
            self.stop.set()
            dropped = len(self.queue)
            self.queue.clear()
            self.cond.notify_all()
        return dropped

    def wait_idle(self, deadline: float) -> bool:
        with self.cond:
            while self.queue or self.busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def _run(self) -> None:
        cond, queue, stop = self.cond, self.queue, self.stop
        while True:
            with cond:
                while not queue and not stop.is_set():
                    cond.wait()
                if stop.is_set():
                    return
                body = queue.popleft()
                self.busy = True
            try:
                self._deliver(body)
            except Exception as exc:  # a bug of ours: never kill the thread
                report_internal_error("alerts.webhook", exc)
            finally:
                with cond:
                    self.busy = False
                    cond.notify_all()

    def _deliver(self, body: bytes) -> None:
        webhook = self.webhook
        reason = ""
        for attempt in range(webhook.retries + 1):
            if attempt:
                self.sender.count(retried=1)
                delay = webhook.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random() / 2)
                if self.stop.wait(delay):
                    reason = "shut down"
                    break
            try:
                webhook._post(body)
            except Exception as exc:
                close = getattr(exc, "close", None)  # an HTTPError holds the response: close it, or the socket leaks
                if callable(close):
                    close()
                retry, reason = _retryable(exc, webhook.timeout_s)
                if not retry:
                    break
                continue
            self.sender.count(sent=1)
            return
        self.sender.count(failed=1)
        _warn_limited(
            f"alerts.webhook.failed.{webhook.target}",
            "costtrace alert webhook %s failed (%s) after %d attempt(s); the alert was not delivered there",
            webhook.target,
            reason,
            attempt + 1,
        )


_senders: weakref.WeakSet[_WebhookSender] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent delivers what it queued; the child starts empty, with fresh locks and no thread.
    global _limited_lock
    _limited_lock = threading.Lock()
    for sender in list(_senders):
        sender._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _reset_for_tests() -> None:
    with _limited_lock:
        _limited_last.clear()
