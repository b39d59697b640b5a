"""A local HTTP server on 127.0.0.1 that answers like an LLM provider, for the real SDKs to talk to.

Tests script its answers in order: JSON bodies, server-sent-event streams (optionally cut off
mid-stream), error statuses with retry headers. Every request is recorded (path, headers, JSON body).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Scripted:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    sse_events: list[bytes] | None = None
    cut_after: int | None = None
    """For SSE: drop the connection after this many events (a broken stream)."""
    stall_after: int | None = None
    """For SSE: after this many events, hold the connection open without sending more until the
    server is closed or :meth:`FakeLLMServer.release` is called (a stream that hangs mid-way)."""
    sse_events_with_usage: list[bytes] | None = None
    """For SSE: the events sent instead when the request asks for usage (``stream_options.include_usage``),
    as OpenAI's API does: the same stream plus a usage-only chunk before ``[DONE]``."""


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # Early-exit tests hang up mid-stream on purpose: a reset or broken pipe is expected there.
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class FakeLLMServer:
    def __init__(self) -> None:
        self._script: deque[Scripted] = deque()
        self._released = threading.Event()
        self.requests: list[Received] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                server.requests.append(Received(self.command, self.path, dict(self.headers), body))
                item = server._script.popleft() if server._script else Scripted(500, b'{"error": "unscripted"}')
                if item.sse_events is None:
                    self.send_response(item.status)
                    self.send_header("Content-Type", item.content_type)
                    self.send_header("Content-Length", str(len(item.body)))
                    for k, v in item.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(item.body)
                    return
                self.send_response(item.status)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                for k, v in item.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                events = item.sse_events
                options = body.get("stream_options") if isinstance(body, dict) else None
                if (
                    item.sse_events_with_usage is not None
                    and isinstance(options, dict)
                    and options.get("include_usage")
                ):
                    events = item.sse_events_with_usage
                for n, event in enumerate(events):
                    if item.cut_after is not None and n >= item.cut_after:
                        break
                    if item.stall_after is not None and n == item.stall_after:
                        server._released.wait()
                    self.wfile.write(event)
                    self.wfile.flush()
                self.close_connection = True

            do_POST = _handle
            do_GET = _handle

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def json(self, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._script.append(Scripted(status, json.dumps(body).encode(), headers=headers or {}))

    def sse(
        self,
        events: list[Any],
        *,
        named: bool = False,
        done: bool = False,
        cut_after: int | None = None,
        stall_after: int | None = None,
    ) -> None:
        """Script a stream. ``events`` are dicts (sent as ``data: {json}``) or, when ``named``, pairs
        ``(event_name, dict)`` (Anthropic style). ``done`` appends OpenAI's ``data: [DONE]``.
        ``stall_after`` holds the stream after that many events (see :attr:`Scripted.stall_after`)."""
        encoded = []
        for e in events:
            if named:
                name, payload = e
                encoded.append(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())
            else:
                encoded.append(f"data: {json.dumps(e)}\n\n".encode())
        if done:
            encoded.append(b"data: [DONE]\n\n")
        self._script.append(Scripted(sse_events=encoded, cut_after=cut_after, stall_after=stall_after))

    def chat_stream(self, chunks: list[Any], usage_chunk: Any, *, cut_after: int | None = None) -> None:
        """Script an OpenAI chat stream that honours ``stream_options.include_usage`` like the API does:
        ``usage_chunk`` (a ``choices: []`` chunk) is sent before ``[DONE]`` only when the request asks
        for it. Every chunk then carries ``"usage": null``, as the API sends them in that case."""
        done = b"data: [DONE]\n\n"
        plain = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [done]
        with_null = [f"data: {json.dumps({**c, 'usage': None})}\n\n".encode() for c in chunks]
        with_usage = [*with_null, f"data: {json.dumps(usage_chunk)}\n\n".encode(), done]
        self._script.append(Scripted(sse_events=plain, sse_events_with_usage=with_usage, cut_after=cut_after))

    def release(self) -> None:
        """Let stalled streams (``stall_after``) continue."""
        self._released.set()

    def close(self) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
