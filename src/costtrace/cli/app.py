"""The ``costtrace`` command (also ``python -m costtrace``). Standard library only (argparse).

Commands::

    costtrace demo [--tasks N] [--seed S] [--rework-cost USD] [--ledger URL] [--otlp-endpoint URL]
                   [--metrics | --no-metrics] [--console [human|json]]
    costtrace report [--by feature,route] [FILTERS] [--format table|json|csv] [--html out.html]
    costtrace compare --feature F [FILTERS] [--rework-cost USD]
    costtrace whatif --route 'gpt-4o-mini->gpt-4o' [FILTERS] [--rework-cost USD] [--failure-rate MODEL=P]
    costtrace tco [--cheap-input-price ... | --feature F | --example] [--rework-cost USD | --hourly-rate USD --hours H]
    costtrace budgets
    costtrace ledger status|migrate|refresh|rebuild
    costtrace phoenix prices [--model provider:model ...] [--ledger URL] [--endpoint URL] [--dry-run]

    FILTERS: --feature F --task T --route R --team T --customer C --since 7d --until 2026-05-01;
    every ledger command takes --ledger URL (default: $COSTTRACE_LEDGER_URL, else the per-user SQLite file)
    and --format table|json|csv. Each command lives in its own module: ``costtrace.cli.report``,
    ``compare``, ``whatif``, ``tco``, ``budgets``, ``ledger_admin`` and ``phoenix``; this one keeps the
    parser, ``demo`` and :func:`main`.

Exit codes: 0 success; 1 ``phoenix prices`` left a model out (unpriced, or refused by Phoenix);
2 bad arguments or configuration (one line on stderr saying what and how to fix it); 130 interrupted.

Example:
    >>> from costtrace.cli import main
    >>> main(["demo", "--tasks", "20", "--seed", "1"])        # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from costtrace import config, demo
from costtrace._version import __version__
from costtrace.cli import budgets, compare, ledger_admin, phoenix, report, tco, whatif
from costtrace.cli.exit_codes import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from costtrace.cli.options import usd_amount
from costtrace.demo import summary, support_bot
from costtrace.errors import ConfigError

__all__ = ["build_parser", "main"]

DEMO_SERVICE_NAME = "costtrace-demo"


def _ticket_count(text: str) -> int:
    """``--tasks``: a whole number from 1 to ``demo.MAX_TICKETS``."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of tickets, got {text!r}") from None
    if not 1 <= n <= demo.MAX_TICKETS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {demo.MAX_TICKETS:,}, got {n}")
    return n


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (``costtrace report: error: ...; see --help``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``costtrace`` command (its subcommands are of the same class)."""
    parser = _Parser(
        prog="costtrace",
        description="Task-level cost observability for LLM applications: cost per successful task.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    p = commands.add_parser(
        "demo",
        help="run support tickets through the OpenAI SDK and a local server; compare routes' cost per success",
        description=(
            "Resolve support tickets of varying difficulty through the real OpenAI SDK against a built-in "
            "local server (127.0.0.1, simulated models, real prices) under three routes: cheap model only, "
            "frontier model only, and a cascade (cheap, then escalate to the frontier model). Record them "
            "with costtrace in the ledger, then print cost per token against cost per successful task, "
            "retry tax, first-pass rate, total cost of ownership with rework, and routing advice. "
            "Deterministic for a seed, no API key, no network. Needs: pip install 'costtrace[demo]'."
        ),
    )
    p.add_argument(
        "--tasks",
        type=_ticket_count,
        default=demo.DEFAULT_TICKETS,
        metavar="N",
        help="number of tickets, each run through every route (default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=int, default=demo.DEFAULT_SEED, metavar="S", help="random seed (default: %(default)s)"
    )
    p.add_argument(
        "--rework-cost",
        type=usd_amount,
        default=demo.DEFAULT_REWORK_COST_USD,
        metavar="USD",
        help="cost of one unresolved ticket outside the model, e.g. an agent's time, used for the "
        "total cost of ownership (default: %(default)s)",
    )
    p.add_argument(
        "--ledger",
        metavar="URL",
        help="ledger database to add the run to, e.g. sqlite:///demo.db (default: the demo's own "
        "~/.local/share/costtrace/demo.db, replaced at each run; never COSTTRACE_LEDGER_URL nor the default ledger)",
    )
    p.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="also export the demo's spans and metrics over OTLP to this collector or backend, e.g. "
        "http://localhost:4318 (http/protobuf; OTEL_EXPORTER_OTLP_PROTOCOL=grpc for gRPC on :4317). "
        "The standard OTEL_EXPORTER_OTLP_* variables, OTEL_SERVICE_NAME, OTEL_TRACES_EXPORTER and "
        "OTEL_METRICS_EXPORTER are honoured too",
    )
    p.add_argument(
        "--metrics",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="export metrics next to the spans (default: yes, unless OTEL_METRICS_EXPORTER=none); "
        "--no-metrics sends traces only, for backends with no metrics endpoint (Phoenix, Jaeger, Tempo)",
    )
    p.add_argument(
        "--console",
        nargs="?",
        const="human",
        choices=("human", "json"),
        help="also print to stdout: each finished task as a readable block (human, the default), "
        "or every span as raw JSON (json)",
    )
    p.set_defaults(handler=_demo_command)
    for command in (report, compare, whatif, tco, budgets, ledger_admin, phoenix):
        command.add_command(commands)
    return parser


def _demo_exports(args: argparse.Namespace) -> bool:
    """Whether the demo installs OpenTelemetry export: a flag asks for it, or the standard variables do."""
    if args.otlp_endpoint is not None or args.console:
        return True
    if os.environ.get("COSTTRACE_CONSOLE", "").strip().lower() not in ("", "false", "0", "no", "off", "none"):
        return True  # COSTTRACE_CONSOLE=human|json (a bad value: configure() says so); no SDK import here
    endpoints = (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    )
    if any(os.environ.get(v, "").strip() for v in endpoints):
        return True
    exporters = (os.environ.get(v, "").strip().lower() for v in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"))
    return any(value not in ("", "none") for value in exporters)


def _demo_destination(endpoint: str | None, signal: str) -> str:
    """The OTLP endpoint a signal goes to, as the exporters resolve it (for the closing message)."""
    if endpoint is not None:
        return endpoint
    per_signal = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip()
    if per_signal:
        return per_signal
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if base:
        return base
    grpc = (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    ).strip() == "grpc"
    return "http://localhost:4317" if grpc else "http://localhost:4318"


def _demo_command(args: argparse.Namespace) -> int:
    import costtrace

    endpoint: str | None = args.otlp_endpoint
    exporting = _demo_exports(args)
    plan = None
    if exporting:
        # Only when asked: without these flags and variables the demo installs no global OpenTelemetry provider.
        # Flags win over the OTEL_* variables; what no flag says comes from them (configure() reads them).
        service_name = None if os.environ.get("OTEL_SERVICE_NAME", "").strip() else DEMO_SERVICE_NAME
        console: str | None = args.console  # human | json | None: COSTTRACE_CONSOLE, else OTEL_TRACES_EXPORTER
        _, plan = config._console_and_plan(otlp=None, otlp_endpoint=endpoint, console=console, metrics=args.metrics)
        costtrace.configure(
            service_name=service_name,
            otlp_endpoint=endpoint,
            console=console,
            metrics=args.metrics,
        )
    try:
        for model in demo.unpriced_models():
            print(
                f"costtrace demo: warning: no price for {support_bot.PROVIDER}/{model} in this price list; "
                "its calls are unpriced and the costs shown are lower bounds",
                file=sys.stderr,
            )
        result = demo.run(tickets=args.tasks, seed=args.seed, rework_cost_usd=args.rework_cost, ledger_url=args.ledger)
        print(summary.render(result), flush=True)
        print(
            f"costtrace demo: run {result.run_id} recorded in {result.ledger_url} "
            f"(dimension {support_bot.RUN_DIMENSION}={result.run_id})",
            file=sys.stderr,
        )
    finally:
        if exporting:
            done = costtrace.shutdown()
    if plan is not None and (plan.traces_otlp or plan.metrics_otlp):
        _report_export(plan, endpoint, done)
    return EXIT_OK


def _report_export(plan: config._ExportPlan, endpoint: str | None, done: bool) -> None:
    """One line on stderr: what went where over OTLP, and how to send traces only."""
    service = os.environ.get("OTEL_SERVICE_NAME", "").strip() or DEMO_SERVICE_NAME
    traces = _demo_destination(endpoint, "traces") if plan.traces_otlp else None
    metrics = _demo_destination(endpoint, "metrics") if plan.metrics_otlp else None
    if traces is not None and traces == metrics:
        what = f"spans and metrics to {traces}"
    else:
        what = " and ".join(
            f"{signal} to {where}" for signal, where in (("spans", traces), ("metrics", metrics)) if where
        )
    # shutdown() only knows whether the flush finished in time, not whether the backend accepted
    # the data (the SDK logs export errors itself), so claim no more than that.
    if not done:
        print(
            f"costtrace demo: warning: export of {what} did not finish in time; is an OTLP collector listening there?",
            file=sys.stderr,
        )
        return
    hint = (
        " A backend with no metrics endpoint (Phoenix, Jaeger, Tempo) answers metrics with an error: "
        "send traces only with --no-metrics or OTEL_METRICS_EXPORTER=none."
        if metrics is not None
        else ""
    )
    print(
        f"costtrace demo: flushed {what} (service.name={service}); export errors, if any, are logged above.{hint}",
        file=sys.stderr,
    )


def _exit_code(code: object) -> int:
    """The exit status argparse asked for via SystemExit."""
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``costtrace`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Never raises SystemExit itself, so it can be called from tests and other programs.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse has already printed
        return _exit_code(exc.code)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"costtrace {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"costtrace {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `costtrace demo | head`): stop quietly, as Unix tools do.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
