"""Reading an LLM response's usage from its HTTP body while the app reads it: a byte tap on httpx responses.

An ``httpx`` / ``httpx2`` response reads its body from ``response.stream`` (every way of reading it:
``read()``, ``iter_bytes()``, ``iter_lines()``, ``iter_text()``, an SDK's ``parse()``, pulls from
there). :func:`tap_response` replaces that stream with a :class:`_SyncTap` / :class:`_AsyncTap` that
hands every chunk to the app unchanged and to a body reader on the side:

- :class:`SSEReader` parses server-sent events incrementally and keeps what carries usage: the
  OpenAI chat / completions final usage chunk, the Responses ``response.completed`` event, Anthropic's
  ``message_start`` / ``message_delta``, Gemini's ``usageMetadata``;
- :class:`JSONReader` keeps a (bounded) JSON body and parses it at the end.

The owner's ``on_end(reader, exc, complete)`` runs exactly once: when the body has been read to its
end, on an error while reading, when the response is closed, or when the response is
garbage-collected unread. The app's bytes are never changed.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from costtrace.instrumentation._base import safely

MAX_JSON_BODY = 16 * 1024 * 1024
"""A JSON body larger than this (embeddings of a huge batch) is not kept: its usage is flagged unknown."""

_TEXT_EVENTS = frozenset(
    (
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_summary_text.delta",
    )
)
_RESPONSES_FINAL = frozenset(("response.completed", "response.incomplete", "response.failed"))


class BodyReader:
    """What a body reader gives its owner once the body ends."""

    problem: str | None = None
    """Why the body could not be read (then usage is unknown, with this reason)."""
    bytes_read = 0
    """Bytes of the body the app has read so far (0: never read)."""

    def feed(self, data: bytes) -> None:
        """Read one chunk of the body (the app gets it unchanged)."""
        raise NotImplementedError

    def flush(self) -> None:
        """The end of the body: read what is left of a last event without its blank line."""

    def body(self) -> dict[str, Any] | None:
        """The response as one JSON-shaped dict for ``LLMCall.record_response`` (None: nothing usable)."""
        raise NotImplementedError

    @property
    def complete(self) -> bool:
        """True once the body carried its final part (the usage chunk, the final event, the whole JSON)."""
        raise NotImplementedError

    def text(self) -> str:
        """The generated text seen so far (for an estimate when the provider sent no usage)."""
        return ""


class _Decoder:
    """Undo a ``Content-Encoding`` the raw stream still carries (the tap sits below httpx's decoders)."""

    def __init__(self, encoding: str) -> None:
        wbits = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}[encoding]
        self._z = zlib.decompressobj(wbits)

    def decode(self, data: bytes) -> bytes:
        return self._z.decompress(data)


def _decoder(encoding: str) -> tuple[_Decoder | None, str | None]:
    """(decoder, problem): no decoder for identity; a problem for an encoding costtrace cannot read."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None, None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _Decoder(encoding), None
    return None, f"usage unknown: the response body is {encoding}-encoded, which costtrace does not read"


class JSONReader(BodyReader):
    """A JSON body, kept up to :data:`MAX_JSON_BODY` and parsed at the end."""

    def __init__(self, encoding: str = "") -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._decoder, self.problem = _decoder(encoding)
        self._done = False
        self._body: dict[str, Any] | None = None

    def feed(self, data: bytes) -> None:
        if self.problem is None:
            chunk = self._decoder.decode(data) if self._decoder is not None else data
            self._size += len(chunk)
            if self._size > MAX_JSON_BODY:
                self.problem = f"usage unknown: the response body is larger than {MAX_JSON_BODY} bytes"
                self._parts = []
            else:
                self._parts.append(chunk)

    def _parse(self) -> None:
        if self._done:
            return
        self._done = True
        if self.problem is not None:
            return
        raw = b"".join(self._parts)
        self._parts = []
        try:
            body = json.loads(raw)
        except ValueError:
            self.problem = "usage unknown: the response body is not JSON"
            return
        if isinstance(body, list):  # Gemini's streamGenerateContent without alt=sse: a JSON array of chunks
            with_usage = [c for c in body if isinstance(c, dict) and "usageMetadata" in c]
            body = with_usage[-1] if with_usage else None
        if isinstance(body, dict):
            self._body = body
        else:
            self.problem = "usage unknown: the response body is not a JSON object"

    def body(self) -> dict[str, Any] | None:
        self._parse()
        return self._body

    @property
    def complete(self) -> bool:
        return self._done and self._body is not None

    def finish_reading(self) -> None:
        """The body ended: parse it now (``complete`` then tells whether it was whole)."""
        self._parse()


class SSEReader(BodyReader):
    """Server-sent events of one LLM API, parsed incrementally; ``api`` is the :func:`llm_api_kind` value."""

    def __init__(self, api: str, encoding: str = "") -> None:
        self.api = api
        self._decoder, self.problem = _decoder(encoding)
        self._buffer = b""
        self._name = ""
        self._data: list[bytes] = []
        self._first: dict[str, Any] | None = None
        self._final: dict[str, Any] | None = None
        self._usage: Any = None
        self._tier: Any = None
        self._reasons: dict[int, str] = {}
        self._parts: list[str] = []
        self._done = False
        self._anthropic_usage: dict[str, Any] = {}
        self._stop: Any = None

    # --- the SSE framing (https://html.spec.whatwg.org/multipage/server-sent-events.html) ---

    def feed(self, data: bytes) -> None:
        if self.problem is not None:
            return
        chunk = self._decoder.decode(data) if self._decoder is not None else data
        buffer = self._buffer + chunk if self._buffer else chunk
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line = buffer[start:end]
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if line:
                self._line(line)
            else:
                self._dispatch()
        self._buffer = buffer[start:]

    def flush(self) -> None:
        if self._buffer.strip():
            self._line(self._buffer.rstrip(b"\r"))
        self._buffer = b""
        if self._data:
            self._dispatch()

    def _line(self, line: bytes) -> None:
        if line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            self._name = line[6:].strip().decode("utf-8", "replace")

    def _dispatch(self) -> None:
        """One whole event: read it."""
        name, data = self._name, self._data
        self._name, self._data = "", []
        if not data:
            return
        raw = b"\n".join(data)
        if raw.strip() == b"[DONE]":
            self._done = True
            return
        try:
            event = json.loads(raw)
        except ValueError:
            return
        if isinstance(event, dict):
            self._event(name, event)

    # --- each API's events ---

    def _event(self, name: str, event: dict[str, Any]) -> None:
        api = self.api
        if api in ("chat", "completions"):
            self._chat(event)
        elif api == "responses":
            self._responses(event)
        elif api == "anthropic":
            self._anthropic(name or str(event.get("type") or ""), event)
        elif api == "gemini":
            self._gemini(event)

    def _chat(self, chunk: dict[str, Any]) -> None:
        if self._first is None:
            self._first = chunk
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    for key in ("content", "refusal"):
                        piece = delta.get(key)
                        if isinstance(piece, str) and piece:
                            self._parts.append(piece)
                    tool_calls = delta.get("tool_calls")
                    if isinstance(tool_calls, list):
                        for tc in tool_calls:
                            fn = tc.get("function") if isinstance(tc, dict) else None
                            if isinstance(fn, dict):
                                for piece in (fn.get("name"), fn.get("arguments")):
                                    if isinstance(piece, str) and piece:
                                        self._parts.append(piece)
                text = choice.get("text")  # legacy completions
                if isinstance(text, str) and text:
                    self._parts.append(text)
                reason = choice.get("finish_reason")
                if isinstance(reason, str):
                    index = choice.get("index", 0)
                    self._reasons[index if isinstance(index, int) else 0] = reason
        usage = chunk.get("usage")
        if usage is not None:
            self._usage = usage
            self._done = True
        if chunk.get("service_tier") is not None and (self._tier is None or usage is not None):
            self._tier = chunk.get("service_tier")

    def _responses(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in _TEXT_EVENTS:
            delta = event.get("delta")
            if isinstance(delta, str) and delta:
                self._parts.append(delta)
        elif kind in _RESPONSES_FINAL:
            response = event.get("response")
            if isinstance(response, dict):
                self._final = response
                self._done = True
        elif kind == "response.created" and self._first is None:
            response = event.get("response")
            if isinstance(response, dict):
                self._first = response

    def _anthropic(self, name: str, event: dict[str, Any]) -> None:
        if name == "message_start":
            message = event.get("message")
            if isinstance(message, dict):
                self._first = message
                usage = message.get("usage")
                if isinstance(usage, dict):
                    self._anthropic_usage.update(usage)
        elif name == "message_delta":
            usage = event.get("usage")
            if isinstance(usage, dict):
                self._anthropic_usage.update({k: v for k, v in usage.items() if v is not None})
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason") is not None:
                self._stop = delta.get("stop_reason")
            self._done = True
        elif name == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict):
                for key in ("text", "partial_json", "thinking"):
                    piece = delta.get(key)
                    if isinstance(piece, str) and piece:
                        self._parts.append(piece)

    def _gemini(self, chunk: dict[str, Any]) -> None:
        if self._first is None:
            self._first = chunk
        if chunk.get("usageMetadata") is not None or chunk.get("usage_metadata") is not None:
            self._final = chunk
        for candidate in chunk.get("candidates") or ():
            if not isinstance(candidate, dict):
                continue
            if candidate.get("finishReason") is not None:
                self._done = True
            content = candidate.get("content")
            for part in (content.get("parts") if isinstance(content, dict) else None) or ():
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    self._parts.append(part["text"])

    # --- the result ---

    def body(self) -> dict[str, Any] | None:
        first = self._first or {}
        if self.api in ("chat", "completions"):
            if not first and self._usage is None:
                return None
            out: dict[str, Any] = {
                "model": first.get("model"),
                "id": first.get("id"),
                "choices": [{"finish_reason": self._reasons[k]} for k in sorted(self._reasons)],
            }
            if self._usage is not None:
                out["usage"] = self._usage
            if self._tier is not None:
                out["service_tier"] = self._tier
            return out
        if self.api == "responses":
            return self._final if self._final is not None else self._first
        if self.api == "anthropic":
            if not self._first:
                return None
            message = dict(self._first)
            # Without a message_delta the output count in message_start is a placeholder, not the usage.
            if self._done:
                message["usage"] = dict(self._anthropic_usage)
            else:
                message.pop("usage", None)
            message["stop_reason"] = self._stop
            message["type"] = "message"
            return message
        if self.api == "gemini":
            return self._final if self._final is not None else self._first
        return None

    @property
    def complete(self) -> bool:
        return self._done

    def text(self) -> str:
        return "".join(self._parts)

    @property
    def service_tier(self) -> Any:
        return self._tier


class _TapBase:
    """What the sync and async taps share: the reader, and ending exactly once."""

    def _tap_init(
        self, inner: Any, reader: BodyReader, on_end: Callable[[BodyReader, BaseException | None, bool], None]
    ) -> None:
        self._inner = inner
        self._reader = reader
        self._on_end = on_end
        self._ended = False

    def _feed(self, chunk: bytes) -> None:
        reader = self._reader
        reader.bytes_read += len(chunk)
        if safely("instrumentation.http.read", reader.feed, chunk, default=_FAILED) is _FAILED:
            # costtrace failed reading: the rest passes through unread; the call says why it is unpriced
            self._reader = _Passthrough(reader)

    def _flush(self) -> None:
        safely("instrumentation.http.read", self._reader.flush)

    def _end(self, exc: BaseException | None, complete: bool) -> None:
        if self._ended:
            return
        self._ended = True
        safely("instrumentation.http.end", self._on_end, self._reader, exc, complete)

    def __del__(self) -> None:
        # The response was dropped: end its call with whatever was read (a body never read: usage unknown).
        if not getattr(self, "_ended", True):
            self._end(None, False)


_FAILED = object()


class _Passthrough(BodyReader):
    """Stands for a reader that failed: the rest of the body passes through unread; usage unknown."""

    def __init__(self, failed: BodyReader) -> None:
        self.problem = "usage unknown: costtrace could not read the response body (see the costtrace log)"
        self.bytes_read = failed.bytes_read

    def feed(self, data: bytes) -> None:
        pass

    def body(self) -> dict[str, Any] | None:
        return None

    @property
    def complete(self) -> bool:
        return False


def _sync_iter(tap: Any) -> Iterator[bytes]:
    try:
        for chunk in tap._inner:
            tap._feed(chunk)
            yield chunk
        tap._flush()
    except GeneratorExit:
        tap._end(None, False)  # the app stopped reading (closed the response early)
        raise
    except BaseException as exc:
        tap._end(exc, False)
        raise
    tap._end(None, True)


async def _async_iter(tap: Any) -> AsyncIterator[bytes]:
    try:
        async for chunk in tap._inner:
            tap._feed(chunk)
            yield chunk
        tap._flush()
    except GeneratorExit:
        tap._end(None, False)
        raise
    except BaseException as exc:
        tap._end(exc, False)
        raise
    tap._end(None, True)


_tap_classes: dict[tuple[type, bool], type] = {}


def _tap_class(base: type, is_async: bool) -> type:
    """A tap class deriving from the library's own byte-stream base (httpx checks ``isinstance``)."""
    key = (base, is_async)
    cls = _tap_classes.get(key)
    if cls is not None:
        return cls
    if is_async:

        class _AsyncTap(_TapBase, base):  # type: ignore[misc]
            def __init__(self, inner: Any, reader: BodyReader, on_end: Any) -> None:
                self._tap_init(inner, reader, on_end)

            def __aiter__(self) -> AsyncIterator[bytes]:
                return _async_iter(self)

            async def aclose(self) -> None:
                try:
                    await self._inner.aclose()
                finally:
                    self._end(None, False)

        cls = _AsyncTap
    else:

        class _SyncTap(_TapBase, base):  # type: ignore[misc]
            def __init__(self, inner: Any, reader: BodyReader, on_end: Any) -> None:
                self._tap_init(inner, reader, on_end)

            def __iter__(self) -> Iterator[bytes]:
                return _sync_iter(self)

            def close(self) -> None:
                try:
                    self._inner.close()
                finally:
                    self._end(None, False)

        cls = _SyncTap
    _tap_classes[key] = cls
    return cls


def make_reader(api: str, response: Any) -> BodyReader:
    """The reader for ``response``'s body: SSE when it is an event stream, else JSON."""
    headers = response.headers
    content_type = str(headers.get("content-type", "")).lower()
    encoding = str(headers.get("content-encoding", ""))
    if "text/event-stream" in content_type:
        return SSEReader(api, encoding)
    return JSONReader(encoding)


def read_whole(reader: BodyReader, content: bytes) -> None:
    """Feed a body that was already read (and decoded) by httpx."""
    if isinstance(reader, (JSONReader, SSEReader)):
        reader._decoder = None  # ``response.content`` is decoded already
        reader.problem = None
    reader.bytes_read = len(content)
    reader.feed(content)
    reader.flush()
    if isinstance(reader, JSONReader):
        reader.finish_reading()


def tap_response(
    response: Any,
    reader: BodyReader,
    on_end: Callable[[BodyReader, BaseException | None, bool], None],
) -> bool:
    """Put a tap on an unread streamed ``response``; False when its stream is of an unknown kind."""
    inner = response.stream
    module = __import__(type(response).__module__.split(".")[0])
    sync_base = getattr(module, "SyncByteStream", None)
    async_base = getattr(module, "AsyncByteStream", None)
    if isinstance(sync_base, type) and isinstance(inner, sync_base):
        response.stream = _tap_class(sync_base, False)(inner, reader, on_end)
        return True
    if isinstance(async_base, type) and isinstance(inner, async_base):
        response.stream = _tap_class(async_base, True)(inner, reader, on_end)
        return True
    return False
