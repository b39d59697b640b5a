"""The ``costtrace demo``'s stand-in for OpenAI: a chat-completions server on 127.0.0.1, standard library only.

It answers ``POST /v1/chat/completions`` the way the OpenAI API does (a ``chat.completion`` object with
``usage``, cached prompt tokens included), so the demo's traffic goes through the real OpenAI SDK and
costtrace's real instrumentation. The "model" is a seeded simulation:

- The request's first user message is the JSON the demo sends: ``{"ticket": {...}, "articles": [...]}``.
  The ticket's ``tier`` (1 routine, 2 involved, 3 hard) and the model set the chance that the answer
  breaks the output contract (:data:`FAILURE_RATE`): prose instead of JSON, a missing field, a refund
  that is not a number or above the policy limit, or the wrong category. Otherwise the answer is a
  valid JSON object. The demo's validator decides, the server never says which answers are bad.
- Attempt ``k`` of a model on a ticket (``k`` = 1 + the assistant messages already in the conversation)
  draws from ``random.Random(f"{seed}/{model}/{ticket}/{k}")``: the same seed gives the same answers,
  whatever order or strategy asks for them.
- Tokens are counted as OpenAI bills them, approximately (4 characters a token, plus the per-message
  overhead); prompt caching follows OpenAI's rule: the longest prefix of messages this server has
  already seen for the model, if 1,024 tokens or more, in 128-token steps.

Nothing leaves the machine: the server binds 127.0.0.1 on a free port, in a daemon thread.

Example:
    >>> with DemoServer(seed=7) as server:                       # doctest: +SKIP
    ...     client = openai.OpenAI(base_url=server.url, api_key="demo-not-a-key")
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Mapping, Sequence
from decimal import ROUND_DOWN, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = [
    "AGENT_REFUND_LIMIT_USD",
    "CATEGORIES",
    "FAILURE_RATE",
    "SERVED_MODELS",
    "DemoServer",
    "cached_prefix_tokens",
    "count_tokens",
]

SERVED_MODELS: dict[str, str] = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06"}
"""Model asked for -> the dated snapshot the response names (as OpenAI's API does)."""

FAILURE_RATE: dict[str, dict[int, float]] = {
    "gpt-4o-mini": {1: 0.04, 2: 0.22, 3: 0.65},
    "gpt-4o": {1: 0.01, 2: 0.03, 3: 0.08},
}
"""Chance that one answer of the model to a ticket of the tier breaks the contract, independently per attempt."""

CATEGORIES: dict[str, tuple[str, ...]] = {
    "billing": ("charged", "invoice", "subscription"),
    "shipping": ("package", "delivery", "tracking"),
    "account": ("password", "login", "two-factor"),
    "returns": ("return", "damaged", "exchange"),
}
"""The answer's ``category`` values, with the words the simulated model recognises each by."""

AGENT_REFUND_LIMIT_USD = Decimal("50.00")
"""Policy (also in the demo's system prompt): no refund above this, nor above the order's total."""

CACHE_MIN_TOKENS = 1_024
CACHE_STEP_TOKENS = 128

_FAILURE_MODES = ("prose", "missing_resolution", "refund_not_a_number", "refund_over_limit", "wrong_category")
_RESOLUTIONS: dict[str, tuple[str, ...]] = {
    "billing": ("refund_issued", "invoice_corrected", "explained_charge"),
    "shipping": ("reshipped", "tracking_shared", "refund_issued"),
    "account": ("password_reset_sent", "account_unlocked", "escalated_to_security"),
    "returns": ("return_label_sent", "exchange_arranged", "refund_issued"),
}
_REPLY_SENTENCES = (
    "Thank you for reaching out, and I am sorry for the trouble this has caused.",
    "I have looked into your order and the history of this request.",
    "I can confirm what happened and what we will do about it.",
    "You will receive a confirmation email within the next few minutes.",
    "If anything else comes up, just reply to this message and it will reach me.",
    "I have added a note to your account so that the next agent sees the whole story.",
    "Our policy allows this in your case, and I have applied it right away.",
    "The change can take up to three business days to show on your statement.",
    "I understand how frustrating it is to write to us more than once about this.",
    "Here is a summary of the steps I took, so you can check them yourself.",
)
_REPLY_TOKENS = {1: (40, 110), 2: (90, 190), 3: (150, 320)}
"""Range of a reply's length in tokens, by tier (the frontier model writes 15% more)."""
_CREATED_EPOCH = 1_735_689_600  # 2025-01-01T00:00:00Z: responses carry a fixed, not a wall-clock, time


def count_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Prompt tokens of ``messages`` as this server bills them: 4 characters a token, 3 per message, 3 per reply."""
    return sum(3 + _text_tokens(str(m.get("content") or "")) for m in messages) + 3


def _text_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def cached_prefix_tokens(tokens: int) -> int:
    """Tokens of a ``tokens``-long prefix that OpenAI's prompt cache serves (1,024 or more, 128-token steps).

    Example:
        >>> cached_prefix_tokens(1_000), cached_prefix_tokens(1_300)
        (0, 1280)
    """
    if tokens < CACHE_MIN_TOKENS:
        return 0
    return CACHE_MIN_TOKENS + (tokens - CACHE_MIN_TOKENS) // CACHE_STEP_TOKENS * CACHE_STEP_TOKENS


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


class _Model:
    """The simulated models' state: the prompt cache (the only state, so answers do not depend on order)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()  # (model, digest of a message prefix)

    def _cached_tokens(self, model: str, messages: Sequence[Mapping[str, Any]]) -> int:
        """Cached prompt tokens: the longest already-seen message prefix, by OpenAI's rule; remembers this prompt."""
        digests: list[str] = []
        running = hashlib.sha256()
        for m in messages:
            running.update(json.dumps(m, sort_keys=True).encode())
            digests.append(running.copy().hexdigest())
        with self._lock:
            hit = 0
            for i, digest in enumerate(digests, start=1):
                if (model, digest) in self._seen:
                    hit = i
            self._seen.update((model, d) for d in digests)
        return cached_prefix_tokens(count_tokens(messages[:hit]) - 3) if hit else 0

    def complete(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _BadRequest(400, "the request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _BadRequest(400, "you must provide a model parameter", param="model")
        if model not in SERVED_MODELS:
            raise _BadRequest(
                404,
                f"The model `{model}` does not exist on the costtrace demo server "
                f"(it serves {', '.join(SERVED_MODELS)}).",
                code="model_not_found",
                param="model",
            )
        if body.get("stream"):
            raise _BadRequest(400, "the costtrace demo server does not stream; omit stream=True", param="stream")
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise _BadRequest(400, "messages must be a list of message objects", param="messages")
        ticket = _ticket_of(messages)
        attempt = 1 + sum(m.get("role") == "assistant" for m in messages)
        rng = random.Random(f"{self.seed}/{model}/{ticket['id']}/{attempt}")
        content = _answer(rng, model, ticket)

        prompt_tokens = count_tokens(messages)
        cached = min(self._cached_tokens(model, messages), prompt_tokens)
        completion_tokens = _text_tokens(content)
        digest = hashlib.sha256(f"{self.seed}/{model}/{ticket['id']}/{attempt}".encode()).hexdigest()
        return {
            "id": f"chatcmpl-demo{digest[:24]}",
            "object": "chat.completion",
            "created": _CREATED_EPOCH,
            "model": SERVED_MODELS[model],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_costtrace_demo",
        }


def _ticket_of(messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ticket in the conversation's first user message (``{"ticket": {...}, "articles": [...]}``)."""
    for m in messages:
        if m.get("role") != "user":
            continue
        try:
            payload = json.loads(str(m.get("content") or ""))
            ticket = payload["ticket"]
            if isinstance(ticket, dict) and isinstance(ticket.get("id"), str) and ticket.get("tier") in (1, 2, 3):
                return ticket
        except (ValueError, KeyError, TypeError):
            pass
        break
    raise _BadRequest(
        400,
        'the first user message must be the demo\'s JSON {"ticket": {"id": ..., "tier": 1|2|3}, "articles": [...]}',
        param="messages",
    )


def _category_of(text: str) -> str:
    """What the simulated model reads the ticket as: the category whose words it mentions most."""
    lowered = text.lower()
    scores = {c: sum(lowered.count(w) for w in words) for c, words in CATEGORIES.items()}
    return max(scores, key=lambda c: scores[c])


def _refund_limit(ticket: Mapping[str, Any]) -> Decimal:
    try:
        total = Decimal(str(ticket.get("order_total_usd", "0")))
    except ArithmeticError:
        total = Decimal(0)
    return min(total, AGENT_REFUND_LIMIT_USD) if total.is_finite() else Decimal(0)


def _answer(rng: random.Random, model: str, ticket: Mapping[str, Any]) -> str:
    """The reply text for one attempt: a valid JSON answer, or one that breaks the contract in one way."""
    tier = int(ticket["tier"])
    breaks = rng.random() < FAILURE_RATE[model][tier]
    mode = rng.choice(_FAILURE_MODES)
    low, high = _REPLY_TOKENS[tier]
    target = rng.randint(low, high) * (115 if model == "gpt-4o" else 100) // 100
    sentences: list[str] = []
    while _text_tokens(" ".join(sentences)) < target:
        sentences.append(rng.choice(_REPLY_SENTENCES))
    reply = " ".join(sentences)

    category = _category_of(str(ticket.get("message", "")))
    limit = _refund_limit(ticket)
    refunds = category in ("billing", "returns") or rng.random() < 0.2
    share = Decimal(rng.randint(30, 100)) / 100
    refund = (limit * share).quantize(Decimal("0.01"), rounding=ROUND_DOWN) if refunds else Decimal("0.00")
    answer: dict[str, Any] = {
        "category": category,
        "resolution": rng.choice(_RESOLUTIONS[category]),
        "refund_usd": float(refund),
        "reply": reply,
    }
    if breaks:
        if mode == "prose":
            return reply
        if mode == "missing_resolution":
            del answer["resolution"]
        elif mode == "refund_not_a_number":
            answer["refund_usd"] = f"about ${refund + 5:.0f}"
        elif mode == "refund_over_limit":
            answer["refund_usd"] = float(limit + Decimal(rng.randint(5, 80)))
        else:
            answer["category"] = rng.choice([c for c in CATEGORIES if c != category])
    return json.dumps(answer)


class DemoServer:
    """The local OpenAI-compatible server, as a context manager. ``url`` is the SDK's ``base_url``."""

    def __init__(self, *, seed: int) -> None:
        model = _Model(seed)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "costtrace-demo"
            disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart (delayed ACK)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, _error(f"Unknown request URL: POST {self.path}.", "unknown_url"))
                    return
                try:
                    body = json.loads(raw) if raw else None
                    self._send(200, model.complete(body))
                except ValueError:
                    self._send(400, _error("the request body is not valid JSON", None))
                except _BadRequest as exc:
                    self._send(exc.status, _error(exc.message, exc.code, exc.param))

            def do_GET(self) -> None:
                self._send(404, _error(f"Unknown request URL: GET {self.path}.", "unknown_url"))

            def _send(self, status: int, payload: Mapping[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the demo's output is its report

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="costtrace-demo-server", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The base URL for ``openai.OpenAI(base_url=...)``, e.g. ``http://127.0.0.1:53817/v1``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> DemoServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _error(message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    """An error body shaped like OpenAI's."""
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
