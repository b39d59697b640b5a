"""Task outcomes as Phoenix span annotations: :class:`OutcomeAnnotations`, a span exporter.

It posts one ``outcome`` annotation per finished task span to Phoenix, so Phoenix's annotation summary
shows the success rate. It runs next to your OTLP exporter and never blocks or breaks the app.

Example:
    >>> import costtrace
    >>> costtrace.configure(otlp_endpoint="http://127.0.0.1:6006",          # doctest: +SKIP
    ...                     span_exporter=OutcomeAnnotations("http://127.0.0.1:6006"))
"""

from __future__ import annotations

import json
import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from costtrace import _validate
from costtrace import semconv as sc
from costtrace._internal import report_internal_error
from costtrace.errors import ConfigError
from costtrace.integrations.phoenix.endpoint import DEFAULT_ENDPOINT, ENV_BASE_URL, auth_headers, check_endpoint

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

logger = logging.getLogger("costtrace")


class OutcomeAnnotations(SpanExporter):
    """A span exporter that annotates each finished task span in Phoenix with its outcome.

    One annotation per task span: name ``outcome``, label the outcome (``success``, ``failure``,
    ``partial``, ``escalated_to_human``), score 1 for success and 0 otherwise, the reason as its
    explanation, annotator kind ``CODE``. Phoenix's annotation summary of ``outcome`` then reads the
    success rate (the mean score) and each outcome's share. Posted in one request per export batch to
    ``POST /v1/span_annotations`` (Phoenix queues them until the span itself arrives). Call spans are
    ignored, so it runs next to your OTLP exporter, on the SDK's export thread: it never blocks or
    breaks the app. A failed post is counted (:attr:`failed`), logged once per failure streak, and
    dropped. Re-sent annotations replace the earlier ones (identifier ``costtrace``).

    Args:
        endpoint: Phoenix's base URL (default ``$PHOENIX_BASE_URL``, else ``http://127.0.0.1:6006``).
        api_key: When Phoenix's authentication is on (default ``$PHOENIX_API_KEY``).
        timeout_s: Per post (default 5 s).
        name: The annotation's name.

    Raises:
        ConfigError: A bad endpoint or timeout.

    Example:
        >>> import costtrace
        >>> costtrace.configure(otlp_endpoint="http://127.0.0.1:6006",          # doctest: +SKIP
        ...                     span_exporter=OutcomeAnnotations("http://127.0.0.1:6006"))
    """

    MAX_PER_REQUEST = 1000

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 5.0,
        name: str = "outcome",
    ) -> None:
        self.endpoint = check_endpoint(
            endpoint if endpoint is not None else (os.environ.get(ENV_BASE_URL, "").strip() or DEFAULT_ENDPOINT),
            "OutcomeAnnotations(endpoint)" if endpoint is not None else ENV_BASE_URL,
        )
        self.timeout_s = _validate.seconds(timeout_s, "OutcomeAnnotations(timeout_s)", maximum=60.0)
        if not isinstance(name, str) or not name.strip() or name.strip() == "note":
            raise ConfigError(f"OutcomeAnnotations(name={name!r}) must be a non-empty name other than 'note'")
        self.name = name.strip()
        self._headers = {"content-type": "application/json", **auth_headers(api_key)}
        self._lock = threading.Lock()
        self._shutdown = False
        self.sent = 0
        """Annotations Phoenix accepted."""
        self.failed = 0
        """Annotations lost to a failed post (Phoenix down, refused, timed out)."""
        self._failing = False

    def _annotation(self, span: ReadableSpan) -> dict[str, Any] | None:
        attrs = span.attributes or {}
        outcome = attrs.get(sc.TASK_OUTCOME)
        if not isinstance(outcome, str) or span.context is None:
            return None
        annotation: dict[str, Any] = {
            "span_id": format(span.context.span_id, "016x"),
            "name": self.name,
            "annotator_kind": "CODE",
            "identifier": "costtrace",
            "result": {"label": outcome, "score": 1.0 if outcome == "success" else 0.0},
            "metadata": {"task": attrs.get(sc.TASK_NAME), "task_id": attrs.get(sc.TASK_ID)},
        }
        reason = attrs.get(sc.TASK_OUTCOME_REASON)
        if isinstance(reason, str) and reason:
            annotation["result"]["explanation"] = reason
        return annotation

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            if self._shutdown:
                return SpanExportResult.FAILURE
            annotations = [a for a in map(self._annotation, spans) if a is not None]
            ok = True
            for i in range(0, len(annotations), self.MAX_PER_REQUEST):
                ok = self._post(annotations[i : i + self.MAX_PER_REQUEST]) and ok
            return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE
        except Exception as exc:  # our own bug: reported and counted, never raised into the SDK's thread
            report_internal_error("phoenix.OutcomeAnnotations.export", exc)
            return SpanExportResult.FAILURE

    def _post(self, batch: list[dict[str, Any]]) -> bool:
        body = json.dumps({"data": batch}).encode()
        req = urllib.request.Request(
            f"{self.endpoint}/v1/span_annotations", data=body, headers=self._headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                r.read()
        except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts, refused connections
            with self._lock:
                self.failed += len(batch)
                first = not self._failing
                self._failing = True
                failed = self.failed
            detail = f"HTTP {exc.code}" if isinstance(exc, urllib.error.HTTPError) else str(getattr(exc, "reason", exc))
            (logger.warning if first else logger.debug)(
                "costtrace: could not post %d outcome annotation(s) to Phoenix at %s (%s); %d lost so far. "
                "Your app is unaffected.",
                len(batch),
                self.endpoint,
                detail,
                failed,
            )
            return False
        with self._lock:
            self.sent += len(batch)
            recovered = self._failing
            self._failing = False
        if recovered:
            logger.info("costtrace: posting outcome annotations to Phoenix at %s works again", self.endpoint)
        return True

    def shutdown(self) -> None:
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
