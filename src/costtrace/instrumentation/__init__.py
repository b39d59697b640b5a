"""Instrumentation of provider SDKs: every call they make becomes a priced call span in the current task.

    costtrace.instrument()              # every supported SDK that is installed
    costtrace.instrument("openai")      # just one
    costtrace.uninstrument()            # restore the original functions

Each SDK has one module here (``openai``, ``anthropic``, ``google_genai``): the only modules that
import those SDKs. ``http`` patches ``httpx`` / ``httpx2`` so that an LLM request no SDK
instrumentation recorded is still recorded from the HTTP exchange (docs/instrumentation-http.md).
Each is also an OpenTelemetry ``BaseInstrumentor`` registered under the ``opentelemetry_instrumentor``
entry point, so ``opentelemetry-instrument`` runs pick them up.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from typing import Any

from costtrace.errors import ConfigError

# name -> (module with the instrumentor, class name, the SDK's import name, the extra to install)
_REGISTRY: dict[str, tuple[str, str, str, str]] = {
    "openai": ("costtrace.instrumentation.openai", "OpenAIInstrumentor", "openai", "openai"),
    "anthropic": ("costtrace.instrumentation.anthropic", "AnthropicInstrumentor", "anthropic", "anthropic"),
    "google_genai": ("costtrace.instrumentation.google_genai", "GoogleGenAIInstrumentor", "google.genai", "google"),
    # Any LLM request sent through httpx / httpx2 inside a task that no SDK instrumentation recorded.
    "http": ("costtrace.instrumentation.http", "HTTPInstrumentor", "httpx|httpx2", "openai"),
}
SUPPORTED = tuple(_REGISTRY)
_lock = threading.Lock()


def _sdk_installed(import_name: str) -> bool:
    """Whether the SDK is importable; ``a|b`` means either of them."""
    for name in import_name.split("|"):
        try:
            if importlib.util.find_spec(name) is not None:
                return True
        except (ImportError, ValueError):
            continue
    return False


def _instrumentor(name: str) -> Any:
    module, cls, _, extra = _REGISTRY[name]
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        if (exc.name or "").startswith("opentelemetry.instrumentation"):
            raise ConfigError(
                f"instrumenting {name!r} needs opentelemetry-instrumentation; pip install 'costtrace[{extra}]'"
            ) from exc
        raise
    return getattr(loaded, cls)()


def _check_names(names: tuple[str, ...]) -> None:
    for name in names:
        if name not in _REGISTRY:
            raise ConfigError(f"cannot instrument {name!r}: supported SDKs are {', '.join(SUPPORTED)}")


def instrument(*names: str, **options: Any) -> list[str]:
    """Instrument the named SDKs (all installed ones when none is named). Idempotent.

    ``options`` go to each instrumentor (see docs/instrumentation.md, e.g. ``inject_stream_usage=False``
    for OpenAI). Returns the names now instrumented by this call or before.

    Raises:
        ConfigError: An unknown name, or a named SDK that is not installed (with the install hint).

    Example:
        >>> costtrace.instrument("openai")       # doctest: +SKIP
        ['openai']
    """
    _check_names(names)
    done: list[str] = []
    with _lock:
        for name in names or SUPPORTED:
            _, _, import_name, extra = _REGISTRY[name]
            if not _sdk_installed(import_name):
                if names:
                    raise ConfigError(
                        f"cannot instrument {name!r}: the SDK is not installed; pip install 'costtrace[{extra}]'"
                    )
                continue
            inst = _instrumentor(name)
            if not inst.is_instrumented_by_opentelemetry:
                inst.instrument(**options)
            if inst.is_instrumented_by_opentelemetry:
                done.append(name)
    return done


def uninstrument(*names: str) -> None:
    """Undo :func:`instrument` for the named SDKs (all when none is named): the original functions return."""
    _check_names(names)
    with _lock:
        for name in names or SUPPORTED:
            _, _, import_name, _ = _REGISTRY[name]
            if not _sdk_installed(import_name):
                continue
            inst = _instrumentor(name)
            if inst.is_instrumented_by_opentelemetry:
                inst.uninstrument()
