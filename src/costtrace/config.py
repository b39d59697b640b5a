"""One-call OpenTelemetry set-up for apps that have none, plus bounded flush and shutdown.

costtrace records through the global TracerProvider and MeterProvider, whatever the app installed.
Apps without OpenTelemetry call :func:`configure` once at start-up::

    costtrace.configure(service_name="support-bot")          # OTLP to the standard endpoint
    costtrace.configure(service_name="support-bot", otlp_endpoint="http://collector:4318",
                        headers={"x-honeycomb-team": key})
    costtrace.configure(console=True)                         # print finished tasks, readable; no export

Configuration errors raise :class:`costtrace.ConfigError` at once; nothing here raises later.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace

from costtrace._internal import logger, report_internal_error
from costtrace.errors import ConfigError
from costtrace.spend import ENV_LEDGER_URL

if TYPE_CHECKING:
    from costtrace.spend.budgets import Budget

_PROTOCOLS = ("http/protobuf", "grpc")
_INSTALL_HINTS = {
    # The HTTP exporter is a core dependency: missing, the installation is broken.
    "http/protobuf": "it is a dependency of costtrace: reinstall costtrace (pip install --force-reinstall costtrace)",
    "grpc": "install it with: pip install 'costtrace[otlp]'",
}
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER (OpenTelemetry SDK environment variables): the values
# costtrace.configure() can honour; other values the spec knows get a hint instead of being ignored.
ENV_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
ENV_METRICS_EXPORTER = "OTEL_METRICS_EXPORTER"
_SUPPORTED_EXPORTERS = ("otlp", "console", "none")
_EXPORTER_HINTS = {
    "zipkin": "send OTLP to a collector with a zipkin exporter instead",
    "jaeger": "Jaeger takes OTLP: use otlp (exporters/jaeger/README.md)",
    "prometheus": "pass metric_reader=PrometheusMetricReader() instead (docs/backends.md#prometheus-and-grafana)",
    "logging": "the spec deprecates 'logging': use console",
}

_lock = threading.Lock()
_configured = False
_tracer_provider: Any = None
_owns_tracer_provider = False
_meter_provider: Any = None
_shutdown_done = False
DEFAULT_SHUTDOWN_TIMEOUT_S = 5.0


def _parse_headers(headers: Mapping[str, str] | str | None) -> dict[str, str] | None:
    if headers is None:
        return None
    if isinstance(headers, str):
        parsed: dict[str, str] = {}
        for item in headers.split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"headers: cannot parse {item.strip()!r}; use 'key=value,key2=value2' or a dict")
            parsed[key.strip()] = value.strip()
        return parsed
    if not isinstance(headers, Mapping):
        raise ConfigError(f"headers must be a dict or a 'key=value,...' string, not {type(headers).__name__}")
    return {str(k): str(v) for k, v in headers.items()}


def _check_endpoint(endpoint: str) -> str:
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(
            f"otlp_endpoint={endpoint!r} is not an http(s) URL; use e.g. 'http://localhost:4318' "
            "(http/protobuf) or 'http://localhost:4317' (grpc)"
        )
    return endpoint.rstrip("/")


def _resolve_protocol(protocol: str | None) -> str:
    value = (
        protocol
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if value not in _PROTOCOLS:
        hint = " (the Python OTLP exporters do not implement http/json)" if value == "http/json" else ""
        raise ConfigError(f"otlp_protocol={value!r} is not supported{hint}; use one of {_PROTOCOLS}")
    return value


def _env_exporters(variable: str) -> frozenset[str] | None:
    """The exporters ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` name.

    None when the variable is unset or empty (the default applies); an empty set for ``none``.
    Values are comma-separated and case-insensitive, as the OpenTelemetry spec defines them.
    """
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return None
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    for name in names:
        if name not in _SUPPORTED_EXPORTERS:
            hint = _EXPORTER_HINTS.get(name)
            raise ConfigError(
                f"{variable}={raw!r}: exporter {name!r} is not supported by costtrace.configure(); "
                f"use otlp, console or none{f' ({hint})' if hint else ''}"
            )
    if "none" in names and len(set(names)) > 1:
        raise ConfigError(f"{variable}={raw!r}: 'none' cannot be combined with other exporters")
    return frozenset(names) - {"none"}


@dataclass(frozen=True)
class _ExportPlan:
    """Where each signal goes, from configure()'s arguments and the OTEL_* variables."""

    traces_otlp: bool
    traces_console: bool
    metrics: bool
    """Install a MeterProvider (with whatever readers the fields below and ``metric_reader`` give)."""
    metrics_otlp: bool
    metrics_console: bool


def _export_plan(
    *,
    otlp: bool | None,
    otlp_endpoint: str | None,
    console: bool | None,
    metrics: bool | None,
    span_exporter: Any = None,
    metric_reader: Any = None,
) -> _ExportPlan:
    """Decide the exporters: an argument passed explicitly wins over the environment for what it names.

    ``otlp`` decides OTLP for both signals, ``console`` the console span exporter, ``metrics`` whether
    there are metrics at all (``metrics=True`` overrides ``OTEL_METRICS_EXPORTER=none``). What is not
    passed comes from ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` (``otlp``, ``console``,
    ``none``), else from the defaults (OTLP unless another destination is given and no endpoint is).
    """
    traces_env = _env_exporters(ENV_TRACES_EXPORTER)
    metrics_env = _env_exporters(ENV_METRICS_EXPORTER)
    traces_console = console if console is not None else traces_env is not None and "console" in traces_env
    # costtrace's own default (configure(console=True) only prints) counts arguments only; a signal the
    # variables leave unset defaults to otlp, as the spec says.
    elsewhere = bool(console) or span_exporter is not None or metric_reader is not None
    default_otlp = (
        not elsewhere or otlp_endpoint is not None or any(os.environ.get(v, "").strip() for v in _ENDPOINT_VARIABLES)
    )
    if otlp is not None:
        traces_otlp = metrics_otlp = otlp
    else:
        traces_otlp = default_otlp if traces_env is None else "otlp" in traces_env
        metrics_otlp = default_otlp if metrics_env is None else "otlp" in metrics_env
    metrics_console = metrics_env is not None and "console" in metrics_env
    if metrics is None:
        # OTEL_METRICS_EXPORTER=none: no exporter of ours; the app's own metric_reader still gets metrics.
        metrics = metrics_env is None or bool(metrics_env) or metric_reader is not None
    elif metrics and metrics_env == frozenset() and otlp is None:
        metrics_otlp = default_otlp  # metrics=True wins over OTEL_METRICS_EXPORTER=none
    return _ExportPlan(
        traces_otlp=traces_otlp,
        traces_console=traces_console,
        metrics=metrics,
        metrics_otlp=metrics and metrics_otlp,
        metrics_console=metrics and metrics_console,
    )


def _console_and_plan(*, console: object, **kwargs: Any) -> tuple[Any, _ExportPlan]:
    """The console mode (``"human"``, ``"json"`` or None) and the export plan, for ``configure(console=...)``.

    The argument wins, else ``COSTTRACE_CONSOLE`` (both read by :func:`costtrace.console.resolve_mode`);
    when neither says, ``OTEL_TRACES_EXPORTER=console`` prints every span as the SDK's raw JSON, which
    is what the OpenTelemetry spec's console exporter is.
    """
    from costtrace import console as _console

    mode = _console.resolve_mode(console)
    asked = None if console is None and mode is None else mode is not None
    plan = _export_plan(console=asked, **kwargs)
    if plan.traces_console and mode is None:
        mode = "json"
    return (mode if plan.traces_console else None), plan


def _otlp_exporters(
    protocol: str,
    endpoint: str | None,
    headers: dict[str, str] | None,
    timeout_s: float | None,
    *,
    traces: bool = True,
    metrics: bool = True,
) -> tuple[Any, Any]:
    kwargs: dict[str, Any] = {}
    if headers is not None:
        kwargs["headers"] = headers
    if timeout_s is not None:
        kwargs["timeout"] = timeout_s
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            span_kw = dict(kwargs, endpoint=endpoint) if endpoint else kwargs
            metric_kw = dict(kwargs, endpoint=endpoint) if endpoint else kwargs
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
                OTLPMetricExporter,
            )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                OTLPSpanExporter,
            )

            # A base endpoint gets the per-signal paths, as OTEL_EXPORTER_OTLP_ENDPOINT does.
            span_kw = dict(kwargs, endpoint=f"{endpoint}/v1/traces") if endpoint else kwargs
            metric_kw = dict(kwargs, endpoint=f"{endpoint}/v1/metrics") if endpoint else kwargs
    except ImportError as exc:
        package = f"opentelemetry-exporter-otlp-proto-{'grpc' if protocol == 'grpc' else 'http'}"
        raise ConfigError(
            f"OTLP export over {protocol} needs {package} (import of {exc.name!r} failed); {_INSTALL_HINTS[protocol]}"
        ) from exc
    return (
        OTLPSpanExporter(**span_kw) if traces else None,
        OTLPMetricExporter(**metric_kw) if metrics else None,
    )


def configure(
    *,
    service_name: str | None = None,
    otlp: bool | None = None,
    otlp_endpoint: str | None = None,
    otlp_protocol: str | None = None,
    headers: Mapping[str, str] | str | None = None,
    export_timeout_s: float | None = None,
    console: bool | str | None = None,
    metrics: bool | None = None,
    metric_export_interval_s: float = 60.0,
    resource_attributes: Mapping[str, str] | None = None,
    span_exporter: Any = None,
    metric_reader: Any = None,
    prices_file: str | os.PathLike[str] | None = None,
    model_aliases: Mapping[str, str] | None = None,
    ledger_url: str | None = None,
    budgets: Sequence[Budget] | None = None,
    budgets_file: str | os.PathLike[str] | None = None,
    task_status: bool | None = None,
    openinference: bool | None = None,
) -> None:
    """Install OpenTelemetry tracing and metrics export for an app that has no OTel set-up.

    Honours the standard ``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers, protocol, timeout),
    ``OTEL_SERVICE_NAME``, and ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` (``otlp``,
    ``console`` or ``none``) for whatever is not passed: an argument passed wins over the variable.
    If the app already installed an SDK TracerProvider, costtrace adds its exporter to it instead of
    replacing it. Call once; later calls warn and do nothing.

    Args:
        service_name: ``service.name`` of the resource (else ``OTEL_SERVICE_NAME``).
        otlp: Export over OTLP. Default: as ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` say for
            each signal; unset, yes, unless another destination (``console``, ``span_exporter``,
            ``metric_reader``) is given and no OTLP endpoint is (argument or ``OTEL_EXPORTER_OTLP_*ENDPOINT``),
            so ``configure(console=True)`` only prints.
        otlp_endpoint: Base URL of the collector or backend, e.g. ``http://localhost:4318``.
        otlp_protocol: ``http/protobuf`` (default) or ``grpc``.
        headers: Export headers (a dict or ``"k=v,k2=v2"``), e.g. an API key for a hosted backend.
        console: Also print to stdout: ``True`` or ``"human"``, each finished task as a readable block
            (its calls, retries, escalations, subtasks and cost; see docs/configuration.md#console);
            ``"json"``, every span as the SDK's raw JSON; ``False``, nothing. Default: ``COSTTRACE_CONSOLE``
            (``human`` | ``json``), else ``"json"`` when ``OTEL_TRACES_EXPORTER`` names ``console``, else none.
        metrics: Export metrics too. Default: yes, unless ``OTEL_METRICS_EXPORTER=none`` (then only your
            own ``metric_reader`` gets them); ``metrics=False`` sends traces only.
        span_exporter / metric_reader: Your own exporter or reader, added next to the others.
        prices_file: A JSON or TOML price override file (see docs/pricing.md).
        model_aliases: Model names only your gateway knows, priced as the model each stands for:
            ``{"my-gpt": "openai/gpt-4o-mini"}`` (a LiteLLM proxy's aliases; docs/pricing.md#model-aliases).
        ledger_url, budgets, budgets_file: Open the cost ledger and install budgets (see
            :func:`costtrace.configure_ledger`). The ledger opens when any of them is given or
            ``COSTTRACE_LEDGER_URL`` is set.
        task_status, openinference: Span status from task outcomes, and OpenInference attributes (both
            on unless ``COSTTRACE_TASK_STATUS`` / ``COSTTRACE_OPENINFERENCE`` say ``false``); ``None``
            keeps the current setting. Same as :func:`costtrace.configure_spans`.

    Raises:
        ConfigError: A bad value (an argument, or an ``OTEL_*_EXPORTER`` value other than ``otlp``,
            ``console``, ``none``), or the gRPC exporter is asked for and not installed (``costtrace[otlp]``).

    Example:
        >>> costtrace.configure(service_name="support-bot", otlp_endpoint="http://localhost:4318")  # doctest: +SKIP
    """
    global _configured, _tracer_provider, _meter_provider, _owns_tracer_provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    console_mode, plan = _console_and_plan(
        otlp=otlp,
        otlp_endpoint=otlp_endpoint,
        console=console,
        metrics=metrics,
        span_exporter=span_exporter,
        metric_reader=metric_reader,
    )
    otlp = plan.traces_otlp or plan.metrics_otlp
    protocol = _resolve_protocol(otlp_protocol) if otlp else "http/protobuf"
    endpoint = _check_endpoint(otlp_endpoint) if otlp_endpoint is not None else None
    parsed_headers = _parse_headers(headers)
    from costtrace import _validate

    metric_export_interval_s = _validate.seconds(
        metric_export_interval_s, "metric_export_interval_s", maximum=_validate.MAX_INTERVAL_S
    )
    if export_timeout_s is not None:
        export_timeout_s = _validate.seconds(export_timeout_s, "export_timeout_s", maximum=_validate.MAX_TIMEOUT_S)
    from costtrace import span_options

    span_settings = span_options._checked("configure", task_status, openinference)
    if prices_file is not None:
        from costtrace.price.catalog import load_prices

        load_prices(prices_file)
    if model_aliases is not None:
        from costtrace.price.catalog import set_model_aliases

        set_model_aliases(model_aliases)
    if ledger_url is not None or budgets or budgets_file is not None or os.environ.get(ENV_LEDGER_URL, "").strip():
        from costtrace.spend.ledger import configure_ledger

        configure_ledger(ledger_url, budgets=budgets or (), budgets_file=budgets_file)
    span_options._store(span_settings)

    with _lock:
        if _configured:
            logger.warning("costtrace.configure() was already called; this call changes nothing")
            return
        span_exp = metric_exp = None
        if otlp:
            span_exp, metric_exp = _otlp_exporters(
                protocol,
                endpoint,
                parsed_headers,
                export_timeout_s,
                traces=plan.traces_otlp,
                metrics=plan.metrics_otlp,
            )
        attrs: dict[str, str] = dict(resource_attributes or {})
        if service_name is not None:
            attrs["service.name"] = service_name
        resource = Resource.create(attrs)

        existing = trace.get_tracer_provider()
        if isinstance(existing, TracerProvider):
            logger.info("costtrace.configure(): adding exporters to the app's existing TracerProvider")
            provider = existing
        else:
            provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            trace.set_tracer_provider(provider)
            _owns_tracer_provider = True
        if span_exp is not None:
            provider.add_span_processor(BatchSpanProcessor(span_exp))
        if span_exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(span_exporter))
        if console_mode is not None:
            from costtrace import console as _console

            provider.add_span_processor(_console.span_processor(console_mode))
        _tracer_provider = provider

        if plan.metrics:
            metric_exporters = [metric_exp] if metric_exp is not None else []
            if plan.metrics_console:
                from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

                metric_exporters.append(ConsoleMetricExporter())
            _meter_provider = _install_meter_provider(
                resource, metric_exporters, metric_reader, metric_export_interval_s
            )
        _configured = True
    atexit.register(shutdown)


def _install_meter_provider(resource: Any, metric_exporters: list[Any], metric_reader: Any, interval_s: float) -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    existing = otel_metrics.get_meter_provider()
    if isinstance(existing, MeterProvider):
        logger.warning(
            "costtrace.configure(): the app already set a MeterProvider; costtrace's metrics go to it, "
            "and costtrace adds no metric exporter (OpenTelemetry cannot add readers afterwards)"
        )
        return None
    readers = [
        PeriodicExportingMetricReader(exporter, export_interval_millis=interval_s * 1000)
        for exporter in metric_exporters
    ]
    if metric_reader is not None:
        readers.append(metric_reader)
    provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
    otel_metrics.set_meter_provider(provider)
    return provider


def _bounded(action: Callable[[], Any], timeout_s: float, where: str) -> bool:
    """Run ``action`` in a daemon thread and wait at most ``timeout_s``: a dead collector can't hang us."""
    outcome: list[bool] = []

    def run() -> None:
        try:
            result = action()
            outcome.append(result is not False)
        except Exception as exc:
            report_internal_error(where, exc)
            outcome.append(False)

    worker = threading.Thread(target=run, name=f"costtrace-{where}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    return bool(outcome and outcome[0])


def _providers() -> list[Any]:
    providers = [_tracer_provider, _meter_provider]
    if _tracer_provider is None:
        providers[0] = trace.get_tracer_provider()
    if _meter_provider is None:
        providers[1] = otel_metrics.get_meter_provider()
    return [p for p in providers if hasattr(p, "force_flush")]


def flush(timeout_s: float = 5.0) -> bool:
    """Export what is buffered now, and write what the ledger holds (if one is configured).

    Returns True if everything was exported and written within ``timeout_s``.

    Example:
        >>> costtrace.flush(timeout_s=2.0)   # doctest: +SKIP
        True
    """
    providers = _providers()
    from costtrace.metrics import drain

    def flush_all() -> bool:
        drain()
        ok = True
        for p in providers:
            ok = bool(p.force_flush(int(timeout_s * 1000))) and ok
        return ok

    import time

    from costtrace.spend.ledger import flush_ledger

    deadline = time.monotonic() + timeout_s
    ok = _bounded(flush_all, timeout_s, "flush")
    return bool(flush_ledger(max(0.0, deadline - time.monotonic()))) and ok


def shutdown(timeout_s: float | None = None) -> bool:
    """Flush and stop the providers :func:`configure` installed, and close the ledger. Idempotent.

    Registered to run at exit by :func:`configure`, so a dead collector delays exit by at most
    ``DEFAULT_SHUTDOWN_TIMEOUT_S`` (5 s). True means the flush and shutdown finished in time; whether
    the backend accepted the data is not reported by the OpenTelemetry SDK (export errors are logged).
    """
    global _shutdown_done
    if timeout_s is None:
        timeout_s = DEFAULT_SHUTDOWN_TIMEOUT_S
    from costtrace.spend.ledger import close_ledger

    ledger_ok = close_ledger(timeout_s)
    with _lock:
        if _shutdown_done or not _configured:
            return ledger_ok
        _shutdown_done = True
    tracer_provider, meter_provider = _tracer_provider, _meter_provider
    from costtrace.metrics import drain

    owns_tracer_provider = _owns_tracer_provider

    def shutdown_all() -> bool:
        drain()
        if tracer_provider is not None:
            # The app's own provider is the app's to shut down; we only flush what we added to it.
            if owns_tracer_provider:
                tracer_provider.shutdown()
            else:
                tracer_provider.force_flush(int(timeout_s * 1000))
        if meter_provider is not None:
            meter_provider.shutdown(timeout_millis=timeout_s * 1000)
        return True

    return _bounded(shutdown_all, timeout_s, "shutdown") and ledger_ok
