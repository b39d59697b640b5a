"""costtrace's prices as Phoenix user-defined models (the ``costtrace phoenix prices`` command).

Phoenix (20.x) prices every LLM span itself, from its own model table (a model-name regex, a provider,
a start time and a price per token type), and reads no cost attribute on the span.
:func:`phoenix_prices` turns costtrace's prices of one model (the genai-prices catalog, your overrides,
aliases and discounts, dated periods) into such models, with where Phoenix's cost will still differ;
:func:`register_prices` writes them over Phoenix's GraphQL API as *user-defined* models, which win over
Phoenix's built-in ones. Re-running updates them in place.

Example:
    >>> result = register_prices([("openai", "gpt-4o-mini")], dry_run=True)
    >>> [(r.label, r.action) for r in result.registrations]
    [('openai/gpt-4o-mini', 'planned')]
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from costtrace import _validate
from costtrace.errors import ConfigError
from costtrace.integrations.phoenix.endpoint import (
    DEFAULT_ENDPOINT,
    ENV_BASE_URL,
    auth_headers,
    check_endpoint,
)

if TYPE_CHECKING:
    from costtrace.price.arithmetic import _Plan
    from costtrace.price.catalog import PriceCatalog

NAME_PREFIX = "costtrace "
"""Every Phoenix model this module registers is named ``costtrace <provider>/<model>[ from <date>]``."""
MODEL_STORE_REFRESH_S = 5
"""Phoenix's GenerativeModelStore reloads the model table every 5 s (phoenix/server/daemons)."""

# gen_ai.provider.name -> the llm.provider Phoenix derives from it at ingestion
# (phoenix/trace/gen_ai/conversion.py, _PROVIDER_NAME_TO_OI). Any other provider gives spans no
# llm.provider, so their prices are registered provider-agnostic ("").
PHOENIX_PROVIDERS: Mapping[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "cohere": "cohere",
    "mistral_ai": "mistralai",
    "deepseek": "deepseek",
    "groq": "groq",
    "perplexity": "perplexity",
    "x_ai": "xai",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "aws.bedrock": "aws",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "gcp.gemini": "google",
}

_MTOK = Decimal(1_000_000)


class PhoenixError(ConfigError):
    """Phoenix could not be reached, refused the request, or answered with an error (one line, with the fix)."""


# --- costtrace prices -> Phoenix models ------------------------------------------------------------


@dataclass(frozen=True)
class ModelPrice:
    """One Phoenix model to register: the input of ``createModel`` / ``updateModel``.

    ``costs`` maps a Phoenix token type to (kind, USD per million tokens): ``input``, ``cache_read``
    and ``cache_write`` are ``prompt``; ``output`` and ``reasoning`` are ``completion``.
    """

    name: str
    provider: str
    name_pattern: str
    start_time: datetime | None
    costs: tuple[tuple[str, str, Decimal], ...]

    def graphql_input(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "provider": self.provider or None,
            "namePattern": self.name_pattern,
            "startTime": self.start_time.isoformat() if self.start_time else None,
            "costs": [
                {"tokenType": t, "kind": kind.upper(), "costPerMillionTokens": float(per_mtok)}
                for t, kind, per_mtok in self.costs
            ],
        }


@dataclass(frozen=True)
class PriceRegistration:
    """What ``costtrace phoenix prices`` does for one (provider, model): its Phoenix models, or why none.

    ``limits`` says where Phoenix's cost will still differ from costtrace's for this model.
    """

    provider: str | None
    model: str
    models: tuple[ModelPrice, ...]
    limits: tuple[str, ...] = ()
    unpriced_reason: str | None = None
    action: str = "planned"
    """``planned`` (dry run), ``created``, ``updated``, ``unchanged``, ``skipped`` or ``failed``."""
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}" if self.provider else self.model


def _name_pattern(model: str, depth: int) -> str:
    """An exact, case-insensitive pattern for ``model`` (costtrace matches names case-insensitively).

    ``depth`` wraps the name in that many ``(?:...)`` groups: Phoenix ranks a more specific pattern
    first and only then a later start time, and each group adds to its specificity score, so period
    ``n`` of a model's dated prices gets depth ``n`` and wins once its start time has passed. The
    groups change nothing about what matches.
    """
    return "(?i)^" + "(?:" * depth + re.escape(model) + ")" * depth + "$"


def _mtok(per_token: Decimal) -> Decimal:
    return (per_token * _MTOK).normalize()


def price_text(per_mtok: Decimal) -> str:
    """A price as the limits and the command show it: ``Decimal("0.150")`` -> ``"$0.15"``."""
    text = f"{per_mtok:f}"
    return "$" + (text.rstrip("0").rstrip(".") if "." in text else text)


def _costs_and_limits(plan: _Plan, discount: Decimal | None) -> tuple[tuple[tuple[str, str, Decimal], ...], list[str]]:
    """Phoenix token prices for one costtrace plan, and where Phoenix will price differently."""
    from costtrace.price import arithmetic as p

    limits: list[str] = []
    if plan.flat is not None:
        base: list[Decimal | None] = list(plan.flat)
    else:
        assert plan.tiered is not None
        base = [None if t is None else t[0] for t in plan.tiered]
        tiered = {slot: t[1] for slot, t in enumerate(plan.tiered) if t is not None and t[1]}
        starts = sorted({start for tiers in tiered.values() for start, _ in tiers})
        names = {
            p._IN: "input",
            p._OUT: "output",
            p._CR: "cache read",
            p._CW: "cache write",
            p._CW5: "5-minute cache write",
            p._CW1: "1-hour cache write",
            p._RS: "reasoning",
        }
        for start in starts:
            above = ", ".join(
                f"{names.get(slot, p._SLOT_PRICE_KEYS[slot])} {price_text(_mtok(rate))}"
                for slot, tiers in sorted(tiered.items())
                for s, rate in tiers
                if s == start
            )
            limits.append(
                f"tiered price: above {start:,} input tokens costtrace charges {above} per MTok; Phoenix's "
                "model API takes no threshold prices, so Phoenix prices those calls at the base rates"
            )

    def rate(slot: int) -> Decimal | None:
        r = base[slot]
        if r is None:
            return None
        return r * discount if discount is not None else r

    costs: list[tuple[str, str, Decimal]] = [
        ("input", "prompt", _mtok(rate(p._IN) or Decimal(0))),
        ("output", "completion", _mtok(rate(p._OUT) or Decimal(0))),
    ]
    if (cr := rate(p._CR)) is not None:
        costs.append(("cache_read", "prompt", _mtok(cr)))
    if (cw := rate(p._CW)) is not None:
        costs.append(("cache_write", "prompt", _mtok(cw)))
    w1 = rate(p._CW1)
    if w1 is not None and w1 != cw:
        limits.append(
            f"1-hour cache writes: costtrace charges {price_text(_mtok(w1))} per MTok, Phoenix has one cache-write "
            f"price ({price_text(_mtok(cw)) if cw is not None else 'the input price'})"
        )
    rs, out = rate(p._RS), rate(p._OUT)
    if rs is not None:
        costs.append(("reasoning", "completion", _mtok(rs)))
        if rs != out:
            limits.append(
                f"reasoning tokens: costtrace charges {price_text(_mtok(rs))} per MTok; Phoenix applies it only to "
                "spans carrying llm.token_count.completion_details.reasoning, else the output price"
            )
    if (req := rate(p._REQ)) is not None and req:
        limits.append(f"per-request price ({price_text(req * 1000)} per 1K requests): Phoenix prices tokens only")
    return tuple(costs), limits


def phoenix_prices(
    provider: str | None,
    model: str,
    *,
    catalog: PriceCatalog | None = None,
    priced_as: str | None = None,
) -> PriceRegistration:
    """The Phoenix models that carry costtrace's standard prices of ``provider``/``model``.

    Args:
        provider: The call's ``gen_ai.provider.name`` (``openai``, ``azure.ai.openai``, ...) or None.
        model: The model name as the call's ``gen_ai.request.model`` carries it (Phoenix matches that).
        catalog: Default: the process-wide catalog (with your prices file and aliases).
        priced_as: Price as this model name instead (costtrace priced these calls by their response model).

    Example:
        >>> reg = phoenix_prices("openai", "gpt-4o-mini")
        >>> m = reg.models[0]
        >>> m.name, m.provider, m.name_pattern
        ('costtrace openai/gpt-4o-mini', 'openai', '(?i)^gpt\\\\-4o\\\\-mini$')
        >>> [(token_type, str(per_mtok)) for token_type, _, per_mtok in m.costs]
        [('input', '0.15'), ('output', '0.6'), ('cache_read', '0.075')]
    """
    from costtrace.price.catalog import default_catalog

    catalog = catalog or default_catalog()
    schedule = catalog._price_periods(provider, priced_as or model)
    label = f"{provider}/{model}" if provider else model
    if not schedule.periods:
        return PriceRegistration(provider, model, (), unpriced_reason=schedule.unpriced_reason or "no price")
    limits: list[str] = []
    if priced_as is not None:
        limits.append(f"registered at the price of {priced_as!r}, the response model costtrace priced these calls by")
    if schedule.time_of_day:
        limits.append(
            "time-of-day prices: registered the 12:00 UTC price; Phoenix has no time-of-day prices, so calls in "
            "another price window differ"
        )
    models: list[ModelPrice] = []
    for depth, (start, plan, discount) in enumerate(schedule.periods):
        costs, plan_limits = _costs_and_limits(plan, discount)
        if len(schedule.periods) > 1:
            when = f"from {start.isoformat()}" if start else f"until {schedule.periods[1][0]}"
            plan_limits = [f"{when}: {x}" for x in plan_limits]
        limits.extend(plan_limits)
        models.append(
            ModelPrice(
                name=NAME_PREFIX + label + (f" from {start.isoformat()}" if start and depth else ""),
                provider=PHOENIX_PROVIDERS.get((provider or "").strip().lower(), ""),
                name_pattern=_name_pattern(model, depth),
                start_time=datetime.combine(start, time.min, UTC) if start else None,
                costs=costs,
            )
        )
    return PriceRegistration(provider, model, tuple(models), tuple(limits))


# --- Phoenix's API ----------------------------------------------------------------------------------


class _Client:
    """Phoenix's GraphQL API over urllib (no extra dependency), with one-line errors."""

    def __init__(self, endpoint: str, api_key: str | None, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.headers = {"content-type": "application/json", **auth_headers(api_key)}
        self.timeout_s = timeout_s

    def graphql(self, query: str, **variables: Any) -> Any:
        body = json.dumps({"query": query, "variables": variables}).encode()
        req = urllib.request.Request(f"{self.endpoint}/graphql", data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                answer = json.load(r)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                hint = (
                    "the API key in PHOENIX_API_KEY was refused"
                    if "authorization" in self.headers
                    else "Phoenix has authentication on: set PHOENIX_API_KEY to an API key (Settings -> API Keys)"
                )
                raise PhoenixError(f"Phoenix at {self.endpoint} answered {exc.code}: {hint}") from None
            raise PhoenixError(f"Phoenix at {self.endpoint} answered HTTP {exc.code} to /graphql") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PhoenixError(
                f"cannot reach Phoenix at {self.endpoint} ({reason}); is `phoenix serve` running there? "
                f"(--endpoint or {ENV_BASE_URL})"
            ) from None
        except ValueError:
            raise PhoenixError(f"{self.endpoint}/graphql did not answer JSON: is this Phoenix?") from None
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if errors:
            message = "; ".join(str(e.get("message", e)) for e in errors)
            if any(w in message.lower() for w in ("unauthorized", "not authorized", "authentication")):
                raise PhoenixError(f"Phoenix at {self.endpoint}: {message}; set PHOENIX_API_KEY to an API key")
            raise _GraphQLError(message)
        return answer["data"]


class _GraphQLError(Exception):
    """A GraphQL error answered for one request (e.g. a conflicting model), reported per model."""


_LIST_MODELS = """
query { generativeModels(first: 100000) { edges { node {
  id name provider namePattern kind startTime tokenPrices { tokenType kind costPerMillionTokens }
} } } }
"""
_CREATE = "mutation ($input: CreateModelMutationInput!) { createModel(input: $input) { model { id } } }"
_UPDATE = "mutation ($input: UpdateModelMutationInput!) { updateModel(input: $input) { model { id } } }"
_DELETE = "mutation ($input: DeleteModelMutationInput!) { deleteModel(input: $input) { model { id } } }"


def _same(existing: Mapping[str, Any], wanted: ModelPrice) -> bool:
    if (
        existing.get("namePattern") != wanted.name_pattern
        or (existing.get("provider") or "") != wanted.provider
        or _parse_time(existing.get("startTime")) != wanted.start_time
    ):
        return False
    have = {(p["tokenType"], p["kind"].lower()): float(p["costPerMillionTokens"]) for p in existing["tokenPrices"]}
    want = {(t, kind): float(r) for t, kind, r in wanted.costs}
    return have.keys() == want.keys() and all(abs(have[k] - want[k]) <= 1e-12 * max(1.0, abs(want[k])) for k in want)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@dataclass
class Registered:
    """The result of :func:`register_prices`: one :class:`PriceRegistration` per model asked."""

    endpoint: str
    registrations: list[PriceRegistration] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """Every model was priced and registered (or, in a dry run, could be)."""
        return all(r.unpriced_reason is None and r.error is None for r in self.registrations)


def register_prices(
    models: Iterable[tuple[str | None, str] | tuple[str | None, str, str | None]],
    *,
    endpoint: str | None = None,
    api_key: str | None = None,
    catalog: PriceCatalog | None = None,
    dry_run: bool = False,
    timeout_s: float = 10.0,
) -> Registered:
    """Register costtrace's prices of ``models`` as Phoenix user-defined models (idempotent).

    Args:
        models: ``(provider, model)`` pairs, or ``(provider, model, priced_as)`` where costtrace priced
            the calls by another (response) model name.
        endpoint: Phoenix's base URL (default ``$PHOENIX_BASE_URL``, else ``http://127.0.0.1:6006``).
        api_key: Phoenix API key when its authentication is on (default ``$PHOENIX_API_KEY``).
        catalog: Default: the process-wide catalog.
        dry_run: Only work out what would be registered; Phoenix is not contacted.
        timeout_s: Per request.

    Raises:
        PhoenixError: Phoenix cannot be reached, asks for an API key, or is not Phoenix.
        ConfigError: A bad endpoint or timeout.

    Example:
        >>> result = register_prices([("openai", "gpt-4o-mini")], dry_run=True)
        >>> [(r.label, r.action) for r in result.registrations]
        [('openai/gpt-4o-mini', 'planned')]
    """
    url = check_endpoint(
        endpoint if endpoint is not None else (os.environ.get(ENV_BASE_URL, "").strip() or DEFAULT_ENDPOINT),
        "endpoint" if endpoint is not None else ENV_BASE_URL,
    )
    timeout_s = _validate.seconds(timeout_s, "timeout_s", maximum=_validate.MAX_TIMEOUT_S)
    result = Registered(url, dry_run=dry_run)
    seen: dict[tuple[str, str], PriceRegistration] = {}
    for item in models:
        provider, model = item[0], item[1]
        priced_as = item[2] if len(item) > 2 else None
        reg = phoenix_prices(provider, model, catalog=catalog, priced_as=priced_as)
        if reg.unpriced_reason is not None:
            result.registrations.append(_replace(reg, action="skipped"))
            continue
        key = (reg.models[0].provider, model.lower())
        if key in seen:
            first = seen[key]
            if [m.costs for m in first.models] != [m.costs for m in reg.models]:
                result.registrations.append(
                    _replace(
                        reg,
                        action="skipped",
                        error=f"Phoenix sees {reg.label} and {first.label} as the same model (provider "
                        f"{key[0] or 'none'!r}) but costtrace prices them differently; register one of them",
                    )
                )
            continue
        seen[key] = reg
        result.registrations.append(reg)
    if dry_run:
        return result

    client = _Client(url, api_key, timeout_s)
    existing = {
        node["name"]: node
        for node in (e["node"] for e in client.graphql(_LIST_MODELS)["generativeModels"]["edges"])
        if node["kind"] == "CUSTOM" and node["name"].startswith(NAME_PREFIX)
    }
    for n, reg in enumerate(result.registrations):
        if reg.action != "planned":
            continue
        base = reg.models[0].name
        wanted = {m.name for m in reg.models}
        try:
            # Periods this model no longer has go first: their patterns may be reused below.
            for name, node in existing.items():
                if name.startswith(base + " from ") and name not in wanted:
                    client.graphql(_DELETE, input={"id": node["id"]})
            actions = set()
            for m in reg.models:
                node = existing.get(m.name)
                if node is None:
                    client.graphql(_CREATE, input=m.graphql_input())
                    actions.add("created")
                elif _same(node, m):
                    actions.add("unchanged")
                else:
                    client.graphql(_UPDATE, input={"id": node["id"], **m.graphql_input()})
                    actions.add("updated")
        except _GraphQLError as exc:
            result.registrations[n] = _replace(reg, action="failed", error=f"Phoenix refused it: {exc}")
            continue
        action = "created" if actions == {"created"} else "unchanged" if actions == {"unchanged"} else "updated"
        result.registrations[n] = _replace(reg, action=action)
    return result


def _replace(reg: PriceRegistration, **changes: Any) -> PriceRegistration:
    from dataclasses import replace

    return replace(reg, **changes)
