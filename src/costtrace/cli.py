"""The ``costtrace`` command (also ``python -m costtrace``). Standard library only (argparse).

Commands::

    costtrace demo [--tasks N] [--seed S] [--rework-cost USD] [--ledger URL] [--otlp-endpoint URL]
                   [--console [human|json]]
    costtrace report [--by feature,route] [FILTERS] [--format table|json|csv] [--html out.html]
    costtrace compare --feature F [FILTERS] [--rework-cost USD]
    costtrace whatif --route 'gpt-4o-mini->gpt-4o' [FILTERS] [--rework-cost USD] [--failure-rate MODEL=P]
    costtrace tco [--cheap-input-price ... | --feature F | --example] [--rework-cost USD | --hourly-rate USD --hours H]
    costtrace budgets

    FILTERS: --feature F --task T --route R --team T --customer C --since 7d --until 2026-05-01;
    every ledger command takes --ledger URL (default: $COSTTRACE_LEDGER_URL, else the per-user SQLite file)
    and --format table|json|csv. The ledger commands live in ``costtrace._ledger_commands``.

Exit codes: 0 success; 2 bad arguments or configuration (one line on stderr saying what and how to
fix it); 130 interrupted.

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

from costtrace import _ledger_commands, demo
from costtrace._version import __version__
from costtrace.errors import ConfigError

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

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
        type=_ledger_commands.usd_amount,
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
        "http://localhost:4318 (http/protobuf; OTEL_EXPORTER_OTLP_PROTOCOL=grpc for gRPC on :4317)",
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
    _ledger_commands.add_commands(commands)
    return parser


def _demo_command(args: argparse.Namespace) -> int:
    import costtrace

    endpoint: str | None = args.otlp_endpoint
    console: str | None = args.console
    exporting = endpoint is not None or console is not None
    if exporting:
        # Only when asked: without these flags the demo installs no global OpenTelemetry provider.
        costtrace.configure(
            service_name=DEMO_SERVICE_NAME,
            otlp=endpoint is not None,
            otlp_endpoint=endpoint,
            console=console or False,
            metrics=endpoint is not None,
        )
    try:
        for model in demo.unpriced_models():
            print(
                f"costtrace demo: warning: no price for {demo.PROVIDER}/{model} in this price list; "
                "its calls are unpriced and the costs shown are lower bounds",
                file=sys.stderr,
            )
        result = demo.run(tickets=args.tasks, seed=args.seed, rework_cost_usd=args.rework_cost, ledger_url=args.ledger)
        print(demo.render(result), flush=True)
        print(
            f"costtrace demo: run {result.run_id} recorded in {result.ledger_url} "
            f"(dimension {demo.RUN_DIMENSION}={result.run_id})",
            file=sys.stderr,
        )
    finally:
        if exporting:
            done = costtrace.shutdown()
    if endpoint is not None:
        # shutdown() only knows whether the flush finished in time, not whether the backend accepted
        # the data (the SDK logs export errors itself), so claim no more than that.
        if done:
            print(
                f"costtrace demo: flushed spans and metrics to {endpoint} (service.name={DEMO_SERVICE_NAME}); "
                "export errors, if any, are logged above.",
                file=sys.stderr,
            )
        else:
            print(
                f"costtrace demo: warning: export to {endpoint} did not finish in time; "
                "is an OTLP collector listening there?",
                file=sys.stderr,
            )
    return EXIT_OK


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
