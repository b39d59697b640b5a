"""``costtrace phoenix prices``: register costtrace's prices as Arize Phoenix user-defined models.

The models come from ``--model provider:model`` and/or every model the ledger's calls used
(:func:`ledger_models`); :func:`costtrace.integrations.phoenix.register_prices` does the registering, and
this module prints what it did (:func:`render`, or :func:`registered_json` for ``--format json``). Exit 1
when a model is left out (no costtrace price, or Phoenix refused it).

Example::

    costtrace phoenix prices --model openai:gpt-4o-mini --dry-run
    costtrace phoenix prices --ledger sqlite:///ledger.db --endpoint http://127.0.0.1:6006
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from costtrace.cli import output as out
from costtrace.cli.exit_codes import EXIT_INCOMPLETE, EXIT_OK
from costtrace.cli.ledger import open_ledger, reading, shown_url
from costtrace.errors import ConfigError

if TYPE_CHECKING:
    from costtrace.integrations.phoenix.prices import ModelPrice, Registered


def _model_ref(text: str) -> tuple[str | None, str]:
    """``--model``: ``provider:model`` (``openai:gpt-4o-mini``), or a bare model name."""
    provider, sep, model = text.strip().partition(":")
    if not sep:
        provider, model = "", provider
    if not model.strip() or (sep and not provider.strip()):
        raise argparse.ArgumentTypeError(f"expected provider:model such as openai:gpt-4o-mini, got {text!r}")
    return (provider.strip() or None), model.strip()


def add_command(commands: Any) -> None:
    """Register ``costtrace phoenix prices`` on the ``costtrace`` subparsers."""
    p = commands.add_parser(
        "phoenix",
        help="Arize Phoenix: register costtrace's prices as Phoenix model prices",
        description="Helpers for Arize Phoenix (exporters/phoenix/README.md).",
    )
    sub = p.add_subparsers(dest="phoenix_command", title="commands", metavar="COMMAND", required=True)
    q = sub.add_parser(
        "prices",
        help="register costtrace's prices as Phoenix user-defined models (idempotent)",
        description=(
            "Phoenix prices LLM spans from its own model table, not from costtrace's cost attributes. This "
            "registers costtrace's prices (genai-prices, your prices file, aliases and discounts) for the models "
            "given with --model and/or every model in the ledger as Phoenix user-defined models, which win over "
            "Phoenix's built-in prices; re-running updates them. Exit 1 when a model has no costtrace price "
            "(it is skipped) or Phoenix refused one."
        ),
    )
    q.add_argument(
        "--model",
        action="append",
        type=_model_ref,
        default=[],
        metavar="PROVIDER:MODEL",
        help="a model as your calls' gen_ai.provider.name and gen_ai.request.model carry it, e.g. "
        "openai:gpt-4o-mini (repeatable)",
    )
    q.add_argument(
        "--ledger",
        metavar="URL",
        help="also register every model the ledger's calls used (default: $COSTTRACE_LEDGER_URL when no --model)",
    )
    q.add_argument(
        "--endpoint",
        metavar="URL",
        help="Phoenix's base URL (default: $PHOENIX_BASE_URL, else http://127.0.0.1:6006); "
        "PHOENIX_API_KEY is sent as a bearer token when set",
    )
    q.add_argument("--prices-file", metavar="FILE", help="a costtrace prices file to apply first (docs/pricing.md)")
    q.add_argument("--dry-run", action="store_true", help="print what would be registered; do not contact Phoenix")
    q.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    q.set_defaults(handler=prices_command)


def prices_command(args: argparse.Namespace) -> int:
    from costtrace.integrations.phoenix.prices import register_prices
    from costtrace.price.catalog import load_prices
    from costtrace.spend import ENV_LEDGER_URL

    if args.prices_file:  # COSTTRACE_PRICES_FILE is loaded by the catalog itself
        load_prices(args.prices_file)
    models: list[tuple[str | None, str, str | None]] = [(p, m, None) for p, m in args.model]
    ledger = args.ledger or (None if models else os.environ.get(ENV_LEDGER_URL, "").strip() or None)
    if ledger:
        models += [m for m in ledger_models(ledger) if m[:2] not in {x[:2] for x in models}]
    if not models:
        raise ConfigError("no model to register: give --model provider:model and/or --ledger URL")
    result = register_prices(models, endpoint=args.endpoint, dry_run=args.dry_run)
    if args.format == "json":
        print(out.json_text(registered_json(result)))
    else:
        print(render(result))
    return EXIT_OK if result.ok else EXIT_INCOMPLETE


def ledger_models(url: str) -> list[tuple[str, str, str | None]]:
    """The (provider, request model, priced-as model or None) of every call in the ledger at ``url``.

    Phoenix matches a span's ``gen_ai.request.model``; costtrace prices a call by its response model
    when it has a price, so where only the response model is priced that is the price registered.
    """
    import sqlalchemy as sa

    from costtrace.price.catalog import default_catalog
    from costtrace.spend import schema

    engine = open_ledger(url)
    try:
        with reading(shown_url(url)), engine.connect() as conn:
            c = schema.calls.c
            rows = conn.execute(
                sa.select(c.provider, c.request_model, c.response_model)
                .distinct()
                .order_by(c.provider, c.request_model, c.response_model)
            ).all()
    finally:
        engine.dispose()
    catalog = default_catalog()
    found: dict[tuple[str, str], str | None] = {}
    for provider, request_model, response_model in rows:
        key = (provider, request_model)
        if key in found and found[key] is None:
            continue
        priced_as = None
        if (
            response_model
            and response_model.lower() != request_model.lower()
            and not catalog.is_priced(provider, request_model)
            and catalog.is_priced(provider, response_model)
        ):
            priced_as = response_model
        found[key] = priced_as
    return [(p, m, a) for (p, m), a in found.items()]


# --- output -----------------------------------------------------------------------------------------


def _costs_text(m: ModelPrice) -> str:
    from costtrace.integrations.phoenix.prices import price_text

    return ", ".join(f"{t} {price_text(r)}" for t, _, r in m.costs) + " per MTok"


def render(result: Registered) -> str:
    """``costtrace phoenix prices``' report: one block per model, its limits, then what to expect."""
    from costtrace.integrations.phoenix.prices import MODEL_STORE_REFRESH_S

    lines: list[str] = []
    done = [r for r in result.registrations if r.models and r.error is None]
    unpriced = [r for r in result.registrations if r.unpriced_reason is not None]
    verb = "would register" if result.dry_run else "registered"
    head = f"costtrace phoenix prices: {len(done)} model(s) {verb} at {result.endpoint}"
    if unpriced:
        head += f"; {len(unpriced)} unpriced, skipped"
    lines.append(head + (" (dry run: Phoenix not contacted)" if result.dry_run else ""))
    width = max((len(r.label) for r in result.registrations), default=0)
    for r in result.registrations:
        if r.unpriced_reason is not None:
            lines.append(
                f"  {'UNPRICED':<9}  {r.label:<{width}}  {r.unpriced_reason}; not registered (give it a price: "
                "docs/pricing.md), so Phoenix shows no cost or its own for it"
            )
            continue
        action = "ERROR" if r.error else ("would add" if r.action == "planned" else r.action)
        for n, m in enumerate(r.models):
            since = f" from {m.start_time.date().isoformat()}" if m.start_time else ""
            lines.append(
                f"  {action if n == 0 else '':<9}  {r.label if n == 0 else '':<{width}}  {_costs_text(m)}{since}"
                f"  [provider {m.provider or 'any'}, pattern {m.name_pattern}]"
            )
        if r.error:
            lines.append(f"  {'':<9}  {'':<{width}}  error: {r.error}")
        lines.extend(f"  {'':<9}  {'':<{width}}  limit: {limit}" for limit in r.limits)
    lines.append(
        f"Phoenix applies these prices to spans it receives from about {MODEL_STORE_REFRESH_S} s after registration; "
        "spans it already holds keep the cost it gave them."
    )
    lines.append(
        "Batch, flex, priority and other service tiers: Phoenix has one price per model name and prices those "
        "calls at the standard prices above; costtrace's exact cost is costtrace.call.cost_usd on each call span "
        "and in `costtrace report` (exporters/phoenix/README.md)."
    )
    return "\n".join(lines)


def registered_json(result: Registered) -> list[dict[str, Any]]:
    """The result as JSON-able records (``--format json``)."""
    return [
        {
            "provider": r.provider,
            "model": r.model,
            "action": r.action,
            "unpriced_reason": r.unpriced_reason,
            "error": r.error,
            "limits": list(r.limits),
            "phoenix_models": [
                {
                    "name": m.name,
                    "provider": m.provider or None,
                    "name_pattern": m.name_pattern,
                    "start_time": m.start_time.isoformat() if m.start_time else None,
                    "cost_per_million_tokens": {t: str(rate) for t, _, rate in m.costs},
                }
                for m in r.models
            ],
        }
        for r in result.registrations
    ]
