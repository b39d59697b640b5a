"""Token counting with provenance: tiktoken when an encoding can be loaded, a heuristic when not.

costtrace prefers the token usage the provider reports. It counts tokens itself only when that is
missing (a stream without usage, a failed call, a budget check before the call), and every count it
makes says so: :class:`TokenCount` is an ``int`` carrying ``source`` and ``encoding``.

- ``source="estimated"``: counted with a tiktoken encoding, named in ``encoding``. Exact for the text
  of OpenAI models when ``encoding == encoding_for_model(model)``; an approximation when costtrace had
  to substitute ``cl100k_base`` for an encoding it could not load, and for non-OpenAI models, whose
  tokenizers tiktoken does not ship.
- ``source="heuristic"``: no encoding could be loaded; counted from characters (see
  :func:`_heuristic_tokens`), ``encoding`` is ``None``.

Loading never hangs the host app. tiktoken downloads encoding files on first use with no timeout, so
costtrace loads each encoding in a daemon thread and waits at most ``COSTTRACE_TOKENIZER_TIMEOUT_S``
seconds (default 3) for it, once; a failure is remembered for ten minutes, then retried in the
background. tiktoken is imported on the first count, never by ``import costtrace``.

See docs/tokens.md for the model table, the chat message overhead and the offline set-up.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import os
import pkgutil
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn, TypeAlias

from costtrace._internal import guarded, logger, report_internal_error

if TYPE_CHECKING:
    from tiktoken import Encoding

__all__ = ["TokenCount", "TokenSource", "count_tokens", "encoding_for_model"]

TokenSource: TypeAlias = Literal["estimated", "heuristic"]
"""Where a locally counted number came from: ``estimated`` (tiktoken) or ``heuristic`` (characters)."""

TIMEOUT_ENV_VAR: Final = "COSTTRACE_TOKENIZER_TIMEOUT_S"
"""Seconds the first count waits for an encoding to load; ``0`` means load in the background only."""

DEFAULT_TIMEOUT_S: Final = 3.0

O200K_BASE: Final = "o200k_base"
CL100K_BASE: Final = "cl100k_base"

_RETRY_AFTER_S = 600.0
"""A failed encoding is not tried again for this long; the retry runs in the background."""

_SUBSTITUTE_SHARE = 1 / 3
"""Share of the wait kept for loading cl100k_base when the model's own encoding is not ready."""

TOKENS_PER_MESSAGE: Final = 3
"""Per chat message: ``<|start|>{role/name}\\n{content}<|end|>\\n`` (OpenAI cookbook)."""
TOKENS_PER_NAME: Final = 1
"""Extra when a message has a ``name`` key (OpenAI cookbook)."""
TOKENS_REPLY_PRIMING: Final = 3
"""Once per message list: every reply is primed with ``<|start|>assistant<|message|>``."""

_MAX_DEPTH = 32
"""Content nested deeper than this (tool results inside tool results...) is not walked."""

_INSTALL_HINT = (
    "for offline use install 'costtrace[offline]' (bundles cl100k_base) or pre-seed TIKTOKEN_CACHE_DIR; "
    "see docs/tokens.md"
)


class TokenCount(int):
    """An ``int`` (so ``count_tokens(...) + 3`` works) that also says where it came from.

    Arithmetic returns plain ``int``: provenance belongs to the count, not to sums of counts.

    Attributes:
        source: ``"estimated"`` when counted with tiktoken, ``"heuristic"`` when no encoding could
            be loaded.
        encoding: The tiktoken encoding used, e.g. ``"o200k_base"``, or ``"cl100k_base"`` when
            substituted; ``None`` for heuristic counts.

    Example:
        >>> n = TokenCount(12, "estimated", "cl100k_base")
        >>> n + 3
        15
        >>> n
        TokenCount(12, source='estimated', encoding='cl100k_base')
        >>> str(n), n.source
        ('12', 'estimated')
    """

    source: TokenSource
    encoding: str | None

    def __new__(cls, value: int, source: TokenSource, encoding: str | None = None) -> TokenCount:
        self = super().__new__(cls, value)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "encoding", encoding)
        return self

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"TokenCount is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"TokenCount is immutable; cannot delete {name!r}")

    def __repr__(self) -> str:
        return f"TokenCount({int(self)}, source={self.source!r}, encoding={self.encoding!r})"

    __str__ = int.__repr__

    def __reduce__(self) -> tuple[type[TokenCount], tuple[int, TokenSource, str | None]]:
        return (TokenCount, (int(self), self.source, self.encoding))


_INTERNAL_ERROR_COUNT = TokenCount(0, "heuristic", None)
"""Returned only if costtrace itself fails while counting; the failure is logged and counted."""


# --------------------------------------------------------------------------------------------------
# Model -> encoding


_FAMILY_PREFIXES: Final[tuple[tuple[str, str], ...]] = (
    # Order matters: the gpt-4 variants with o200k come before plain gpt-4.
    ("gpt-4o", O200K_BASE),
    ("chatgpt-4o", O200K_BASE),
    ("gpt-4.1", O200K_BASE),
    ("gpt-4.5", O200K_BASE),
    ("gpt-5", O200K_BASE),
    ("gpt-oss", O200K_BASE),  # tiktoken says o200k_harmony: the same ordinary tokens, more specials
    ("gpt-4", CL100K_BASE),
    ("gpt-3.5", CL100K_BASE),
    ("gpt-35", CL100K_BASE),  # Azure spelling
    ("text-embedding-3", CL100K_BASE),
    ("text-embedding-ada-002", CL100K_BASE),
)
_O_SERIES = re.compile(r"o[134]\b")  # o1, o1-mini, o3-pro, o4-mini; not "o10" or "omni"
_SAME_ORDINARY_TOKENS: Final = {"o200k_harmony": O200K_BASE}


def encoding_for_model(model: str | None) -> str:
    """The tiktoken encoding costtrace counts ``model``'s tokens with. Never raises.

    OpenAI models get their own encoding (``o200k_base`` for gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1,
    o3, o4, gpt-oss; ``cl100k_base`` for gpt-4, gpt-3.5 and the embedding models), also behind a
    provider prefix (``openai/gpt-4o``), an Azure-style deployment name that starts with the model
    name (``gpt-4o-prod``) or ``ft:``. Other names tiktoken knows get tiktoken's answer. Everything
    else, including Claude, Gemini, Llama and Mistral models and ``None``, gets ``cl100k_base`` as an
    approximation: their tokenizers are not available in tiktoken.

    Args:
        model: A model or deployment name, or ``None``.

    Returns:
        An encoding name such as ``"o200k_base"``.

    Example:
        >>> encoding_for_model("gpt-4o-mini-2024-07-18")
        'o200k_base'
        >>> encoding_for_model("claude-sonnet-4-5")
        'cl100k_base'
    """
    if not isinstance(model, str):
        return CL100K_BASE
    return _encoding_name(model)


@functools.lru_cache(maxsize=1024)
@guarded("tokens.encoding_for_model", default=CL100K_BASE)
def _encoding_name(model: str) -> str:
    name = model.strip().lower().rsplit("/", 1)[-1]
    name = name.removeprefix("ft:")
    for prefix, encoding in _FAMILY_PREFIXES:
        if name.startswith(prefix):
            return encoding
    if _O_SERIES.match(name):
        return O200K_BASE
    try:
        from tiktoken.model import encoding_name_for_model
    except ImportError:
        return CL100K_BASE
    try:
        found = encoding_name_for_model(name)
    except KeyError:
        return CL100K_BASE
    return _SAME_ORDINARY_TOKENS.get(found, found)


# --------------------------------------------------------------------------------------------------
# Loading encodings: bounded, single-flight, remembered


@dataclass(eq=False)
class _Load:
    """One attempt to load one encoding, run by one daemon thread."""

    name: str
    started: float
    timeout_s: float
    wait_until: float
    """Callers wait for this attempt until here (never past their own deadline)."""

    done: threading.Event = field(default_factory=threading.Event)
    encoding: Encoding | None = None
    error: BaseException | None = None
    finished: float | None = None

    @property
    def hung_after(self) -> float:
        """When a still-running attempt is reported as hanging: when its waiters gave up, or for a
        background attempt after ``timeout_s`` (3 s if that is 0)."""
        if self.wait_until > self.started:
            return self.wait_until
        return self.started + (self.timeout_s or DEFAULT_TIMEOUT_S)


_lock = threading.Lock()
_ready: dict[str, Encoding] = {}
"""Loaded encodings by name; read without the lock on the hot path."""
_loads: dict[str, _Load] = {}
"""The latest attempt per encoding name; at most one attempt's thread runs per name."""
_warned: set[str] = set()
_constructor_table: dict[str, Callable[[], dict[str, Any]]] | None = None


def _timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value >= 0:
        return value
    _warn_once(
        f"env:{TIMEOUT_ENV_VAR}",
        "costtrace: ignoring %s=%r (expected a number of seconds >= 0); using %.1f s",
        TIMEOUT_ENV_VAR,
        raw,
        DEFAULT_TIMEOUT_S,
    )
    return DEFAULT_TIMEOUT_S


def _warn_once(key: str, msg: str, *args: object) -> None:
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(msg, *args)


def _constructors() -> dict[str, Callable[[], dict[str, Any]]]:
    """tiktoken's encoding constructors, found the way tiktoken finds them (``tiktoken_ext`` plugins).

    costtrace builds encodings from these constructors itself instead of calling
    ``tiktoken.get_encoding``, because that function holds one process-wide lock while it downloads:
    a download hung on the network would then block loading every other encoding, even the bundled
    offline one.
    """
    global _constructor_table
    table = _constructor_table
    if table is not None:
        return table
    plugins = importlib.import_module("tiktoken_ext")  # a namespace package, as in tiktoken.registry
    found: dict[str, Callable[[], dict[str, Any]]] = {}
    for module_info in pkgutil.iter_modules(plugins.__path__, "tiktoken_ext."):
        for name, constructor in _plugin_constructors(module_info.name).items():
            found.setdefault(name, constructor)
    _constructor_table = found
    return found


def _plugin_constructors(module_name: str) -> dict[str, Callable[[], dict[str, Any]]]:
    try:
        return dict(importlib.import_module(module_name).ENCODING_CONSTRUCTORS)
    except Exception as exc:  # a broken third-party plugin must not stop the others
        _warn_once(
            f"plugin:{module_name}",
            "costtrace: skipping tiktoken plugin %s, which failed to load: %r",
            module_name,
            exc,
        )
        return {}


class _EncodingUnavailableError(Exception):
    """No constructor for an encoding could build it (raised and caught inside the loader thread)."""


def _build_encoding(name: str) -> Encoding:
    """Build ``name`` from its bundled ``<name>_offline`` plugin, else with tiktoken's loader.

    tiktoken's loader reads ``TIKTOKEN_CACHE_DIR`` (or ``DATA_GYM_CACHE_DIR``, or a temp dir) and
    downloads on a cache miss, with no timeout: only ever call this in a loader thread.
    """
    import tiktoken

    constructors = _constructors()
    problems: list[str] = []
    for candidate in (f"{name}_offline", name):
        constructor = constructors.get(candidate)
        if constructor is None:
            continue
        try:
            return tiktoken.Encoding(**constructor())
        except Exception as exc:
            problems.append(f"{candidate}: {type(exc).__name__}: {exc}")
    if not problems:
        raise _EncodingUnavailableError(f"tiktoken has no encoding named {name!r}")
    raise _EncodingUnavailableError("; ".join(problems))


def _run_load(load: _Load) -> None:
    """Body of a loader thread: build the encoding, publish it, report, wake the waiters."""
    encoding: Encoding | None = None
    error: BaseException | None = None
    try:
        try:
            encoding = _build_encoding(load.name)
        except BaseException as exc:  # the thread's only job is to report; nobody else would see it
            error = exc
        finished = time.monotonic()
        with _lock:
            current = _loads.get(load.name) is load  # not orphaned by a fork or _reset_for_tests
            load.encoding = encoding
            load.error = error
            load.finished = finished
            if encoding is not None and current:
                _ready[load.name] = encoding
        # Warn before waking the waiters, so the warning comes before the first fallback count.
        if current and error is not None:
            _warn_once(
                f"encoding:{load.name}",
                "costtrace could not load the tiktoken encoding %r (%s); token estimates that need it use "
                "%s (flagged in TokenCount.source and .encoding); %s",
                load.name,
                _describe(error),
                _fallback_phrase(load.name),
                _INSTALL_HINT,
            )
        elif current and finished - load.started > load.timeout_s:
            logger.info("costtrace: tiktoken encoding %r loaded after the timeout; using it now", load.name)
    finally:
        load.done.set()


def _describe(error: BaseException) -> str:
    if isinstance(error, ImportError):
        return f"tiktoken is not importable: {error}; install it with: pip install tiktoken"
    return f"{type(error).__name__}: {error}"


def _fallback_phrase(name: str) -> str:
    if name == CL100K_BASE:
        return "a character heuristic"
    return f"{CL100K_BASE} (an approximation), or a character heuristic if that is unavailable too"


def _start_locked(name: str, now: float, timeout_s: float, wait_until: float) -> _Load | None:
    """Start a loader thread for ``name``; the caller holds ``_lock``. None if no thread can start."""
    load = _Load(name=name, started=now, timeout_s=timeout_s, wait_until=wait_until)
    _loads[name] = load
    thread = threading.Thread(target=_run_load, args=(load,), name=f"costtrace-tiktoken-{name}", daemon=True)
    try:
        thread.start()
    except RuntimeError as exc:  # interpreter shutting down, or no threads left: a failed attempt
        load.error = exc
        load.finished = now
        load.done.set()
        return None
    return load


def _get_encoding(name: str, deadline: float, timeout_s: float) -> Encoding | None:
    """The encoding ``name`` if it is (or becomes, by ``deadline``) loaded; else None.

    Never blocks past ``deadline``, and only callers during the first attempt's window wait at all:
    once that attempt has failed or outlived its window, callers get None at once until a background
    retry (after ``_RETRY_AFTER_S``) succeeds. ``timeout_s`` is how long a new attempt may take before
    it is reported as hanging.
    """
    encoding = _ready.get(name)
    if encoding is not None:
        return encoding
    now = time.monotonic()
    with _lock:
        encoding = _ready.get(name)
        if encoding is not None:
            return encoding
        load = _loads.get(name)
        if load is None:
            # First attempt: this caller (and concurrent ones) may wait, up to the deadline.
            load = _start_locked(name, now, timeout_s=timeout_s, wait_until=deadline)
        elif (
            load.done.is_set()
            and load.encoding is None
            and load.finished is not None
            and now - load.finished >= _RETRY_AFTER_S
        ):
            # Remembered failure has expired: retry in the background; nobody waits for it.
            load = _start_locked(name, now, timeout_s=timeout_s, wait_until=now)
    if load is None:
        return None
    remaining = min(load.wait_until, deadline) - now
    if remaining > 0 and not load.done.is_set():
        load.done.wait(remaining)
    if load.encoding is not None:
        return load.encoding
    if not load.done.is_set() and time.monotonic() >= load.hung_after:
        _warn_once(
            f"encoding:{name}",
            "costtrace: the tiktoken encoding %r did not load within %.1f s (tiktoken downloads it "
            "with no timeout; is the network blocked?). It keeps loading in the background; meanwhile "
            "token estimates that need it use %s. Set %s to change the wait; %s",
            name,
            load.hung_after - load.started,
            _fallback_phrase(name),
            TIMEOUT_ENV_VAR,
            _INSTALL_HINT,
        )
    return None


def _resolve(wanted: str) -> tuple[Encoding | None, str | None]:
    """The encoding to count with and its name: ``wanted``, else cl100k_base, else (None, None)."""
    encoding = _ready.get(wanted)
    if encoding is not None:
        return encoding, wanted
    timeout_s = _timeout_s()
    deadline = time.monotonic() + timeout_s
    if wanted != CL100K_BASE:
        # Keep part of the wait for the substitute, so that a hung download of the model's encoding
        # still leaves time to load the bundled cl100k_base for this very call.
        encoding = _get_encoding(wanted, deadline - timeout_s * _SUBSTITUTE_SHARE, timeout_s)
        if encoding is not None:
            return encoding, wanted
    encoding = _get_encoding(CL100K_BASE, deadline, timeout_s)
    if encoding is not None:
        return encoding, CL100K_BASE
    return None, None


def _after_fork_in_child() -> None:
    # A fork can copy the lock held and attempts whose threads do not exist in the child.
    global _lock
    _lock = threading.Lock()
    for name, load in list(_loads.items()):
        if not load.done.is_set():
            del _loads[name]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _reset_for_tests() -> None:
    """Forget loaded encodings, attempts, warnings and plugins. Threads still running are orphaned."""
    global _constructor_table
    with _lock:
        _ready.clear()
        _loads.clear()
        _warned.clear()
        _constructor_table = None
    _encoding_name.cache_clear()


# --------------------------------------------------------------------------------------------------
# Heuristic


_HEURISTIC_PIECES = re.compile(r"[A-Za-z]+|[0-9]+|[\u0080-\u07ff]+|[^\x00-\x7f]|[!-/:-@\[-`{-~]|\s*\n\s*|[ \t]{2,}")


def _heuristic_tokens(text: str) -> int:
    """Tokens of ``text`` from its characters, when no encoding can be loaded.

    A rough imitation of a BPE pre-tokenizer, measured against cl100k_base: each run of ASCII letters
    counts ceil(len / 6), each run of digits ceil(len / 3), each ASCII punctuation mark 1, each run of
    two-byte letters (accented Latin, Greek, Cyrillic, Arabic, Hebrew) ceil(len / 2), each other
    character 1 (CJK) or 2 (emoji and other astral characters), each line break (with the indentation
    around it) and each run of 2+ spaces or tabs 1; single spaces are free. The plain "4 characters per
    token" rule undercounts code and JSON about 2x and CJK text 3-5x; on our sample texts this rule
    stayed within 0.5x-1.5x of cl100k_base (docs/tokens.md has the figures).
    """
    if not text:
        return 0
    tokens = 0
    for match in _HEURISTIC_PIECES.finditer(text):
        piece = match.group()
        first = piece[0]
        if first < "\x80":
            if first.isalpha():
                tokens += -(-len(piece) // 6)
            elif first.isdigit():
                tokens += -(-len(piece) // 3)
            else:
                tokens += 1
        elif first < "\u0800":
            tokens += -(-len(piece) // 2)
        elif first < "\U00010000":
            tokens += 1
        else:
            tokens += 2
    return tokens


# --------------------------------------------------------------------------------------------------
# Walking text and messages


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception as exc:
        report_internal_error("tokens.str", exc)
        return ""


def _json_text(value: object) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return _safe_str(value)


def _is_binary_or_none(value: object) -> bool:
    return value is None or isinstance(value, (bytes, bytearray, memoryview))


def _add_unrecognised(value: object, texts: list[str]) -> None:
    """Objects that are neither text nor dict-like: counted via ``str()``, binary data not at all."""
    if not _is_binary_or_none(value):
        texts.append(_safe_str(value))


def _add_call(call: object, texts: list[str]) -> None:
    """A function/tool call ``{"name": ..., "arguments": ...}``: its name and arguments as text."""
    if not isinstance(call, Mapping):
        _add_unrecognised(call, texts)
        return
    for key in ("name", "arguments", "args", "input", "response"):
        value = call.get(key)
        if value is not None:
            texts.append(_json_text(value))


def _add_tool_calls(tool_calls: object, texts: list[str]) -> None:
    if not isinstance(tool_calls, (list, tuple)):
        _add_unrecognised(tool_calls, texts)
        return
    for tool_call in tool_calls:
        if isinstance(tool_call, Mapping):
            function = tool_call.get("function") or tool_call.get("custom")
            _add_call(function, texts)
        else:
            _add_unrecognised(tool_call, texts)


def _add_part(part: object, texts: list[str], depth: int) -> None:
    """One content part: text, a tool call or result; images, audio, files and the like are skipped."""
    if isinstance(part, str):
        texts.append(part)
        return
    if not isinstance(part, Mapping):
        _add_unrecognised(part, texts)
        return
    text = part.get("text")
    if isinstance(text, str):
        texts.append(text)
    kind = part.get("type")
    if kind == "tool_use":  # Anthropic
        _add_call(part, texts)
    elif kind == "tool_result":  # Anthropic
        _add_content(part.get("content"), texts, depth + 1)
    for key in ("function_call", "functionCall", "function_response", "functionResponse"):  # Gemini
        call = part.get(key)
        if call is not None:
            _add_call(call, texts)


def _add_content(content: object, texts: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH or content is None:
        return
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, (list, tuple)):
        for part in content:
            _add_part(part, texts, depth)
    else:
        _add_part(content, texts, depth)


def _add_message(message: Mapping[Any, Any], texts: list[str]) -> int:
    """Collect a chat message's text into ``texts``; return its overhead tokens."""
    overhead = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if key == "name":
            overhead += TOKENS_PER_NAME
        if isinstance(value, str):
            texts.append(value)  # role, name, content, tool_call_id...: as the cookbook does
        elif key in ("content", "parts"):
            _add_content(value, texts, 1)
        elif key == "tool_calls":
            _add_tool_calls(value, texts)
        elif key == "function_call":
            _add_call(value, texts)
        # Other non-string values (metadata, ids as numbers, audio objects) are not text the model reads.
    return overhead


def _collect(value: object) -> tuple[list[str], int]:
    """The texts to encode in ``value`` and the chat overhead tokens to add to them."""
    texts: list[str] = []
    if isinstance(value, Mapping):
        items: list[object] | tuple[object, ...] = (value,)
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        _add_unrecognised(value, texts)
        return texts, 0
    overhead = 0
    for item in items:
        if isinstance(item, Mapping):
            overhead += _add_message(item, texts)
        elif isinstance(item, str):
            texts.append(item)
        else:
            _add_unrecognised(item, texts)
    if overhead:
        overhead += TOKENS_REPLY_PRIMING
    return texts, overhead


# --------------------------------------------------------------------------------------------------
# Public entry point


@guarded("tokens.count_tokens", default=_INTERNAL_ERROR_COUNT)
def count_tokens(text_or_messages: str | Sequence[Mapping[str, Any]] | None, model: str | None = None) -> TokenCount:
    """Count the tokens of a text or a list of chat messages, saying how they were counted.

    Never raises and never hangs: the first count for an encoding waits at most
    ``COSTTRACE_TOKENIZER_TIMEOUT_S`` seconds (default 3) for it to load; if it cannot be loaded,
    ``cl100k_base`` stands in (``source="estimated"``, ``encoding="cl100k_base"``), and if nothing can
    be loaded a character heuristic is used (``source="heuristic"``, ``encoding=None``).

    Messages are counted like OpenAI's cookbook: 3 tokens per message, 1 more if it has a ``name``, 3
    to prime the reply, plus every string value of each message. ``content`` (OpenAI, Anthropic) and
    ``parts`` (Gemini) may be a string or a list of parts; text parts and tool calls / tool results
    count as their text, while images, audio and files are not counted (the count is then a lower
    bound). Other objects are counted via ``str()``; bytes and ``None`` count 0.

    Args:
        text_or_messages: A string, a list of message dicts (or one message dict), a list of strings
            (counted without message overhead), or ``None``.
        model: The model name, used to pick the encoding (see :func:`encoding_for_model`).

    Returns:
        A :class:`TokenCount`: an ``int`` with ``source`` and ``encoding``.

    Example:
        >>> n = count_tokens("Hello, world!", model="gpt-4o-mini")
        >>> n.source in ("estimated", "heuristic"), n + 0 > 0
        (True, True)
        >>> messages = [{"role": "user", "content": "Hello, world!"}]
        >>> count_tokens(messages, model="gpt-4o-mini") > n
        True
    """
    wanted = encoding_for_model(model)
    encoding, used = _resolve(wanted)
    if isinstance(text_or_messages, str):
        if encoding is None:
            return TokenCount(_heuristic_tokens(text_or_messages), "heuristic", None)
        return TokenCount(len(encoding.encode_ordinary(text_or_messages)), "estimated", used)
    texts, overhead = _collect(text_or_messages)
    if encoding is None:
        return TokenCount(sum(map(_heuristic_tokens, texts)) + overhead, "heuristic", None)
    encode = encoding.encode_ordinary
    return TokenCount(sum(len(encode(text)) for text in texts) + overhead, "estimated", used)
