"""One HTTP POST under ONE deadline: name resolution, connect, TLS, send and every read of the answer.

urllib's ``timeout`` bounds each socket operation, not the exchange: a server that accepts and then
sends one byte every half second (a "slow loris") keeps ``urlopen(..., timeout=2)`` busy forever.
Here every operation gets the time *left* until the deadline as its timeout, and the first one that
finds none left raises :class:`TimeoutError`:

- name resolution runs on a short-lived daemon thread the caller waits for at most the time left
  (``getaddrinfo`` cannot be interrupted; at most :data:`MAX_PENDING_RESOLUTIONS` run at once per
  process, past that an attempt fails at once rather than start another thread);
- connect, TLS handshake and ``sendall`` take the time left as their timeout (CPython applies a socket
  timeout to the whole of ``sendall`` and of one TLS handshake);
- the answer is read through a reader that sets the socket's timeout to the time left before each
  ``recv``.

The rest is urllib's: proxies from the environment (``HTTPS_PROXY``, ``NO_PROXY``), certificate
checks. Redirects are not followed (they would send the body and its headers to another host).
Imported lazily, on the webhook sender's threads, never at ``import costtrace``.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import threading
import time
import urllib.request
from collections.abc import Mapping
from functools import partial
from typing import Any

MAX_PENDING_RESOLUTIONS = 8
"""Name resolutions still running (past their deadline, on daemon threads) at once, per process."""
_resolutions = threading.BoundedSemaphore(MAX_PENDING_RESOLUTIONS)


class Deadline:
    """A point in ``time.monotonic()``; :meth:`left` raises :class:`TimeoutError` once it has passed."""

    __slots__ = ("at", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.at = time.monotonic() + timeout_s

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out (timeout_s={self.timeout_s:g} for the whole delivery)")
        return left


def post(url: str, body: bytes, headers: Mapping[str, str], deadline: Deadline, *, max_answer: int = 65_536) -> int:
    """POST ``body`` to ``url`` and read at most ``max_answer`` bytes of the answer before ``deadline``.

    Returns the HTTP status (2xx); raises ``urllib.error.HTTPError`` for other statuses, ``URLError`` or
    ``OSError`` (``TimeoutError`` once the deadline passed) for the rest.
    """
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    opener = urllib.request.build_opener(_NoRedirect, _HTTPHandler(deadline), _HTTPSHandler(deadline))
    with opener.open(request, timeout=deadline.left()) as response:
        response.read(max_answer)
        status: int = response.status
        return status


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _resolve(host: str, port: int, deadline: Deadline) -> list[tuple[Any, ...]]:
    """``getaddrinfo`` within the deadline (an IP literal needs no lookup, nor a thread)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    if not _resolutions.acquire(blocking=False):
        raise TimeoutError(f"timed out: {MAX_PENDING_RESOLUTIONS} earlier name resolutions still pending")
    done = threading.Event()
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the waiting thread below
            outcome.append(exc)
        finally:
            _resolutions.release()
            done.set()

    threading.Thread(target=run, name="costtrace-alerts-resolve", daemon=True).start()
    if not done.wait(deadline.left()):
        deadline.left()  # raises TimeoutError
        raise TimeoutError("timed out resolving the webhook's host")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return list(result)


def _create_connection(
    deadline: Deadline, address: tuple[str, int], timeout: object = None, source_address: Any = None
) -> socket.socket:
    """``socket.create_connection`` with the lookup and each connect bounded by the deadline."""
    host, port = address
    error: OSError | None = None
    for family, type_, proto, _, sockaddr in _resolve(host, port, deadline):
        sock = socket.socket(family, type_, proto)
        try:
            sock.settimeout(deadline.left())
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
            if isinstance(exc, TimeoutError):
                break
    raise error or OSError(f"no address found for the webhook's host (port {port})")


class _DeadlineReader(io.RawIOBase):
    """A socket's reading side that sets the socket's timeout to the deadline's time left before each recv."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # holds the socket open until this reader is closed
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(self._deadline.left())
        return self._raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _SocketForResponse:
    """What ``HTTPResponse`` needs of a socket (``makefile``), answered with a deadline-bound reader."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


class _DeadlineConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, deadline: Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline
        self._create_connection = partial(_create_connection, deadline)
        self.response_class = partial(_response, deadline)  # type: ignore[assignment]

    def connect(self) -> None:
        self.timeout = self._deadline.left()
        super().connect()

    def send(self, data: Any) -> None:
        if self.sock is None and self.auto_open:
            self.connect()
        if self.sock is not None:
            self.sock.settimeout(self._deadline.left())
        super().send(data)


class _DeadlineHTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    def __init__(self, *args: Any, deadline: Deadline, **kwargs: Any) -> None:
        super().__init__(*args, deadline=deadline, **kwargs)
        self._context = _DeadlineTLSContext(self._context, deadline)  # type: ignore[has-type]


class _DeadlineTLSContext:
    """An ``SSLContext`` whose handshake starts with the deadline's time left as the socket's timeout
    (CPython bounds one whole handshake by that timeout)."""

    def __init__(self, context: Any, deadline: Deadline) -> None:
        self._context = context
        self._deadline = deadline

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> Any:
        sock.settimeout(self._deadline.left())
        return self._context.wrap_socket(sock, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _response(deadline: Deadline, sock: socket.socket, *args: Any, **kwargs: Any) -> http.client.HTTPResponse:
    return http.client.HTTPResponse(_SocketForResponse(sock, deadline), *args, **kwargs)  # type: ignore[arg-type]


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(partial(_DeadlineConnection, deadline=self._deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = partial(_DeadlineHTTPSConnection, deadline=self._deadline)
        return self.do_open(connection, req, context=self._context)  # type: ignore[attr-defined]
