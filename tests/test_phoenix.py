"""costtrace.integrations.phoenix: costtrace's prices as Phoenix models, and the outcome annotation exporter.

No Phoenix here: a local GraphQL double keeps Phoenix's model table the way its mutations do
(phoenix/server/api/mutations/model_mutations.py), and a capture server stands in for its REST API.
The live check is tests/e2e/test_phoenix.py.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import costtrace
from costtrace.cli import main
from costtrace.errors import ConfigError
from costtrace.integrations import phoenix
from costtrace.price.catalog import PriceCatalog
from costtrace.usage import Usage

# --- price mapping ---------------------------------------------------------------------------------


def _costs(model: phoenix.ModelPrice) -> dict[str, tuple[str, Decimal]]:
    return {t: (kind, rate) for t, kind, rate in model.costs}


def test_a_catalog_model_maps_to_one_exact_anchored_pattern_with_its_token_prices() -> None:
    reg = phoenix.phoenix_prices("openai", "gpt-4o-mini", catalog=PriceCatalog())
    assert reg.unpriced_reason is None and reg.limits == ()
    (m,) = reg.models
    assert m.name == "costtrace openai/gpt-4o-mini"
    assert m.provider == "openai" and m.start_time is None
    assert _costs(m) == {
        "input": ("prompt", Decimal("0.15")),
        "output": ("completion", Decimal("0.6")),
        "cache_read": ("prompt", Decimal("0.075")),
    }
    pattern = re.compile(m.name_pattern)
    # Phoenix uses re.search: the pattern must match the whole name, and only it (costtrace matches
    # model names case-insensitively, so does the pattern).
    assert pattern.search("gpt-4o-mini") and pattern.search("GPT-4o-Mini")
    for other in ("gpt-4o-mini-2024-07-18", "xgpt-4o-mini", "gpt-4o", "gpt04o-mini"):
        assert not pattern.search(other), other


def test_regex_characters_in_a_name_are_escaped() -> None:
    catalog = PriceCatalog()
    catalog.set_price("acme/llama-3.1+ft", input_per_mtok=1, output_per_mtok=2)
    (m,) = phoenix.phoenix_prices(None, "acme/llama-3.1+ft", catalog=catalog).models
    assert m.provider == ""  # no provider given: provider-agnostic in Phoenix
    assert re.compile(m.name_pattern).search("acme/llama-3.1+ft")
    assert not re.compile(m.name_pattern).search("acme/llama-3x1ft")


def test_providers_map_to_the_llm_provider_phoenix_derives() -> None:
    catalog = PriceCatalog()
    assert phoenix.phoenix_prices("azure.ai.openai", "gpt-4o", catalog=catalog).models[0].provider == "azure"
    assert phoenix.phoenix_prices("gcp.gemini", "gemini-2.0-flash", catalog=catalog).models[0].provider == "google"
    # A provider Phoenix does not map gives spans no llm.provider: registered for any provider.
    catalog.set_price("m1", provider="together", input_per_mtok=1, output_per_mtok=1)
    assert phoenix.phoenix_prices("together", "m1", catalog=catalog).models[0].provider == ""


def test_dated_prices_become_dated_models_whose_later_period_ranks_higher() -> None:
    catalog = PriceCatalog()
    catalog.set_price("house-model", provider="openai", input_per_mtok=1, output_per_mtok=4)
    catalog.set_price("house-model", provider="openai", input_per_mtok=2, output_per_mtok=8, start_date="2026-03-01")
    reg = phoenix.phoenix_prices("openai", "house-model", catalog=catalog)
    first, second = reg.models
    assert (first.name, first.start_time) == ("costtrace openai/house-model", None)
    assert second.name == "costtrace openai/house-model from 2026-03-01"
    assert second.start_time == datetime(2026, 3, 1, tzinfo=UTC)  # costtrace's dates are UTC days
    assert _costs(first)["input"][1] == 1 and _costs(second)["input"][1] == 2
    # Phoenix ranks regex specificity before start time: the later period's pattern is wrapped in one
    # more (?:...) group, which Phoenix scores higher, and which matches the same names.
    assert second.name_pattern == "(?i)^(?:house\\-model)$" and first.name_pattern == "(?i)^house\\-model$"
    assert first.name_pattern != second.name_pattern  # Phoenix keeps (pattern, provider) unique


def test_an_override_that_starts_later_registers_from_its_start_only() -> None:
    catalog = PriceCatalog()
    catalog.set_price("later-model", input_per_mtok=1, output_per_mtok=1, start_date=date(2026, 1, 1))
    (m,) = phoenix.phoenix_prices(None, "later-model", catalog=catalog).models
    assert m.start_time == datetime(2026, 1, 1, tzinfo=UTC)


def test_discounts_aliases_and_custom_token_types_follow_costtrace() -> None:
    catalog = PriceCatalog()
    catalog.set_discount("openai", "0.8")
    (m,) = phoenix.phoenix_prices("openai", "gpt-4o", catalog=catalog).models
    assert _costs(m)["input"][1] == Decimal("2.0") and _costs(m)["output"][1] == Decimal("8.0")

    catalog.set_model_alias("support-gpt", "openai/gpt-4o-mini")
    (m,) = phoenix.phoenix_prices("openai", "support-gpt", catalog=catalog).models
    assert re.compile(m.name_pattern).search("support-gpt")
    assert _costs(m)["input"][1] == Decimal("0.12")  # gpt-4o-mini's 0.15, discounted

    catalog.set_price(
        "thinker",
        input_per_mtok=1,
        output_per_mtok=4,
        cache_read_per_mtok="0.1",
        cache_write_per_mtok="1.25",
        cache_write_1h_per_mtok=2,
        reasoning_per_mtok=6,
    )
    reg = phoenix.phoenix_prices(None, "thinker", catalog=catalog)
    assert _costs(reg.models[0]) == {
        "input": ("prompt", Decimal(1)),
        "output": ("completion", Decimal(4)),
        "cache_read": ("prompt", Decimal("0.1")),
        "cache_write": ("prompt", Decimal("1.25")),
        "reasoning": ("completion", Decimal(6)),
    }
    assert any(limit.startswith("1-hour cache writes: costtrace charges $2") for limit in reg.limits)
    assert any(limit.startswith("reasoning tokens: costtrace charges $6") for limit in reg.limits)


def test_tiered_and_time_of_day_prices_are_registered_at_base_rates_and_say_so() -> None:
    reg = phoenix.phoenix_prices("anthropic", "claude-sonnet-4-5", catalog=PriceCatalog())
    assert _costs(reg.models[0])["input"][1] == Decimal(3)
    assert any(
        "above 200,000 input tokens costtrace charges input $6" in x and "takes no threshold prices" in x
        for x in reg.limits
    ), reg.limits
    reg = phoenix.phoenix_prices("deepseek", "deepseek-chat", catalog=PriceCatalog())
    assert reg.models and any(x.startswith("time-of-day prices") for x in reg.limits)


def test_an_unknown_model_is_unpriced_not_registered() -> None:
    reg = phoenix.phoenix_prices("openai", "no-such-model-x", catalog=PriceCatalog())
    assert reg.models == () and "unknown model 'no-such-model-x'" in (reg.unpriced_reason or "")


def _phoenix_cost(costs: dict[str, tuple[str, Decimal]], usage: Usage) -> Decimal:
    """Phoenix's arithmetic (SpanCostDetailsCalculator) on the attributes it derives from gen_ai.*.

    Detail token types (cache_read, cache_write: the only details Phoenix derives from gen_ai.usage.*)
    pay their own price, or the input price; input is the prompt minus the details; all completion
    tokens pay the output price (Phoenix derives no reasoning detail).
    """
    details = {"cache_read": usage.cache_read_input_tokens, "cache_write": usage.cache_write_input_tokens}
    total = Decimal(0)
    for token_type, tokens in details.items():
        total += tokens * costs.get(token_type, costs["input"])[1]
    total += (usage.input_tokens - sum(details.values())) * costs["input"][1]
    total += usage.output_tokens * costs["output"][1]
    return total / 1_000_000


@given(
    model=st.sampled_from(
        ["openai/gpt-4o-mini", "openai/gpt-4o", "openai/o4-mini", "anthropic/claude-3-5-haiku-latest"]
    ),
    input_tokens=st.integers(0, 150_000),
    output_tokens=st.integers(0, 20_000),
    cached=st.integers(0, 100),
    written=st.integers(0, 100),
)
def test_phoenix_arithmetic_on_registered_prices_equals_costtraces_cost(
    model: str, input_tokens: int, output_tokens: int, cached: int, written: int
) -> None:
    provider, name = model.split("/")
    catalog = PriceCatalog()
    (m,) = phoenix.phoenix_prices(provider, name, catalog=catalog).models
    cache_read = input_tokens * cached // 200
    cache_write = input_tokens * written // 200 if provider == "anthropic" else 0
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_input_tokens=cache_read,
        cache_write_input_tokens=cache_write,
    )
    cost = catalog.cost(usage, provider=provider, model=name)
    assert cost.priced
    assert _phoenix_cost(_costs(m), usage) == cost.total_usd


# --- Phoenix's GraphQL API: a double that keeps the model table like Phoenix does ------------------


class _FakePhoenix:
    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200
        self.next_id = 1
        self.lock = threading.Lock()
        self.models["builtin"] = {
            "id": "GenerativeModel:0",
            "name": "gpt-4o-mini",
            "provider": "openai",
            "namePattern": "gpt-4o-mini",
            "kind": "BUILT_IN",
            "startTime": None,
            "tokenPrices": [],
        }

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        query, variables = body["query"], body.get("variables") or {}
        if "generativeModels" in query:
            return {"data": {"generativeModels": {"edges": [{"node": dict(m)} for m in self.models.values()]}}}
        data = variables.get("input", {})
        if "createModel" in query or "updateModel" in query:
            clash = [
                m
                for m in self.models.values()
                if m["kind"] == "CUSTOM"
                and m["id"] != data.get("id")
                and (
                    m["name"] == data["name"]
                    or (m["namePattern"], m["provider"]) == (data["namePattern"], data["provider"])
                )
            ]
            if clash:
                return {"errors": [{"message": f"Model '{clash[0]['name']}' conflicts with an existing model"}]}
            if "createModel" in query:
                model_id = f"GenerativeModel:{self.next_id}"
                self.next_id += 1
            else:
                model_id = data["id"]
                self.models = {k: v for k, v in self.models.items() if v["id"] != model_id}
            self.models[data["name"]] = {
                "id": model_id,
                "name": data["name"],
                "provider": data["provider"],
                "namePattern": data["namePattern"],
                "kind": "CUSTOM",
                "startTime": data["startTime"],
                "tokenPrices": [
                    {"tokenType": c["tokenType"], "kind": c["kind"], "costPerMillionTokens": c["costPerMillionTokens"]}
                    for c in data["costs"]
                ],
            }
            return {"data": {"x": {"model": {"id": model_id}}}}
        if "deleteModel" in query:
            self.models = {k: v for k, v in self.models.items() if v["id"] != data["id"]}
            return {"data": {"deleteModel": {"model": {"id": data["id"]}}}}
        return {"errors": [{"message": "unknown query"}]}

    def custom(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.models.items() if v["kind"] == "CUSTOM"}


class _Server:
    """A loopback HTTP server: GraphQL to a :class:`_FakePhoenix`, anything else captured."""

    def __init__(self) -> None:
        self.phoenix = _FakePhoenix()
        self.posts: list[tuple[str, dict[str, str], Any]] = []
        self.status = 200
        self.hold = threading.Event()  # set: answer at once; clear: hang until set (a stuck backend)
        self.hold.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with outer.phoenix.lock:
                    outer.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                outer.hold.wait(30)
                if outer.status != 200:
                    self.send_response(outer.status)
                    self.end_headers()
                    return
                if self.path == "/graphql":
                    with outer.phoenix.lock:
                        answer = outer.phoenix.answer(body)
                else:
                    answer = {"data": []}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    try:
        yield s
    finally:
        s.close()


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_register_creates_then_leaves_unchanged_then_updates(server: _Server) -> None:
    catalog = PriceCatalog()
    models = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o")]
    first = phoenix.register_prices(models, endpoint=server.url, catalog=catalog)
    assert first.ok and [r.action for r in first.registrations] == ["created", "created"]
    assert set(server.phoenix.custom()) == {"costtrace openai/gpt-4o-mini", "costtrace openai/gpt-4o"}
    assert server.phoenix.models["builtin"]["kind"] == "BUILT_IN"  # never touched

    again = phoenix.register_prices(models, endpoint=server.url, catalog=catalog)
    assert [r.action for r in again.registrations] == ["unchanged", "unchanged"]
    assert len(server.phoenix.custom()) == 2  # never duplicated

    catalog.set_price("gpt-4o", provider="openai", input_per_mtok=2, output_per_mtok=8)
    changed = phoenix.register_prices(models, endpoint=server.url, catalog=catalog)
    assert [r.action for r in changed.registrations] == ["unchanged", "updated"]
    stored = server.phoenix.models["costtrace openai/gpt-4o"]["tokenPrices"]
    prices = {p["tokenType"]: p["costPerMillionTokens"] for p in stored}
    assert prices == {"input": 2.0, "output": 8.0}  # cache reads now pay the input price, as in costtrace
    assert len(server.phoenix.custom()) == 2


def test_a_period_that_no_longer_exists_is_deleted(server: _Server) -> None:
    catalog = PriceCatalog()
    catalog.set_price("house-model", input_per_mtok=1, output_per_mtok=4)
    catalog.set_price("house-model", input_per_mtok=2, output_per_mtok=8, start_date="2026-03-01")
    phoenix.register_prices([(None, "house-model")], endpoint=server.url, catalog=catalog)
    assert set(server.phoenix.custom()) == {"costtrace house-model", "costtrace house-model from 2026-03-01"}

    fresh = PriceCatalog()
    fresh.set_price("house-model", input_per_mtok=2, output_per_mtok=8)
    result = phoenix.register_prices([(None, "house-model")], endpoint=server.url, catalog=fresh)
    assert result.ok and result.registrations[0].action == "updated"
    assert set(server.phoenix.custom()) == {"costtrace house-model"}


def test_unpriced_models_are_skipped_and_make_the_result_not_ok(server: _Server) -> None:
    result = phoenix.register_prices(
        [("openai", "gpt-4o-mini"), ("openai", "no-such-model-x")], endpoint=server.url, catalog=PriceCatalog()
    )
    assert not result.ok
    assert [(r.model, r.action) for r in result.registrations] == [
        ("gpt-4o-mini", "created"),
        ("no-such-model-x", "skipped"),
    ]
    assert set(server.phoenix.custom()) == {"costtrace openai/gpt-4o-mini"}


def test_a_model_phoenix_refuses_is_reported_per_model(server: _Server) -> None:
    # Someone registered the same pattern for the same provider by hand.
    server.phoenix.models["mine"] = {
        "id": "GenerativeModel:99",
        "name": "my gpt-4o",
        "provider": "openai",
        "namePattern": "(?i)^gpt\\-4o$",
        "kind": "CUSTOM",
        "startTime": None,
        "tokenPrices": [],
    }
    result = phoenix.register_prices(
        [("openai", "gpt-4o"), ("openai", "gpt-4o-mini")], endpoint=server.url, catalog=PriceCatalog()
    )
    assert not result.ok
    failed, created = result.registrations
    assert failed.action == "failed" and "conflicts with an existing model" in (failed.error or "")
    assert created.action == "created"


def test_the_api_key_is_sent_as_a_bearer_token(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHOENIX_API_KEY", "px-secret")
    phoenix.register_prices([("openai", "gpt-4o-mini")], endpoint=server.url, catalog=PriceCatalog())
    assert {h.get("authorization") for _, h, _ in server.posts} == {"Bearer px-secret"}


@pytest.mark.parametrize(
    ("status", "key", "message"),
    [
        (401, None, "answered 401: Phoenix has authentication on: set PHOENIX_API_KEY"),
        (403, "bad", "answered 403: the API key in PHOENIX_API_KEY was refused"),
        (500, None, "answered HTTP 500 to /graphql"),
    ],
)
def test_phoenix_errors_are_one_clear_line(
    server: _Server, monkeypatch: pytest.MonkeyPatch, status: int, key: str | None, message: str
) -> None:
    monkeypatch.delenv("PHOENIX_API_KEY", raising=False)
    if key:
        monkeypatch.setenv("PHOENIX_API_KEY", key)
    server.status = status
    with pytest.raises(phoenix.PhoenixError, match=re.escape(message)):
        phoenix.register_prices([("openai", "gpt-4o-mini")], endpoint=server.url, catalog=PriceCatalog())


def test_an_unreachable_phoenix_says_so() -> None:
    url = _closed_port_url()
    with pytest.raises(phoenix.PhoenixError, match=f"cannot reach Phoenix at {re.escape(url)}.*phoenix serve"):
        phoenix.register_prices([("openai", "gpt-4o-mini")], endpoint=url, catalog=PriceCatalog())


def test_a_bad_endpoint_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="endpoint='ftp://x' is not an http"):
        phoenix.register_prices([("openai", "gpt-4o-mini")], endpoint="ftp://x", dry_run=True)


# --- the command -----------------------------------------------------------------------------------


def test_cli_registers_and_reports(server: _Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["phoenix", "prices", "--endpoint", server.url, "--model", "openai:gpt-4o-mini"]) == 0
    out = capsys.readouterr().out
    assert "1 model(s) registered at " + server.url in out
    assert "created    openai/gpt-4o-mini  input $0.15, output $0.6, cache_read $0.075 per MTok" in out
    assert "Batch, flex, priority and other service tiers" in out
    assert main(["phoenix", "prices", "--endpoint", server.url, "--model", "openai:gpt-4o-mini"]) == 0
    assert "unchanged  openai/gpt-4o-mini" in capsys.readouterr().out


def test_cli_dry_run_contacts_nothing_and_flags_unpriced_models(capsys: pytest.CaptureFixture[str]) -> None:
    url = _closed_port_url()
    argv = ["phoenix", "prices", "--endpoint", url, "--dry-run", "--model", "openai:gpt-4o", "--model", "openai:nope-x"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "would register" in out and "would add  openai/gpt-4o" in out
    assert "UNPRICED   openai/nope-x" in out and "not registered" in out


def test_cli_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["phoenix", "prices", "--dry-run", "--format", "json", "--model", "anthropic:claude-sonnet-4-5"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["phoenix_models"][0]["cost_per_million_tokens"]["cache_write"] == "3.75"
    assert record["limits"]


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["phoenix", "prices"], "no model to register"),
        (["phoenix", "prices", "--model", ":gpt-4o"], "expected provider:model"),
        (["phoenix", "prices", "--model", "openai:gpt-4o", "--endpoint", "nowhere"], "is not an http(s) URL"),
    ],
)
def test_cli_usage_errors_exit_2(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COSTTRACE_LEDGER_URL", raising=False)
    assert main(argv) == 2
    assert error in capsys.readouterr().err


def test_cli_unreachable_phoenix_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    url = _closed_port_url()
    assert main(["phoenix", "prices", "--endpoint", url, "--model", "openai:gpt-4o"]) == 2
    assert f"cannot reach Phoenix at {url}" in capsys.readouterr().err


def test_cli_reads_the_models_from_the_ledger(
    server: _Server, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlalchemy as sa

    from costtrace.spend import schema
    from costtrace.spend.engine import make_engine

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = make_engine(url)
    schema.migrate(engine)
    now = datetime.now(UTC).replace(tzinfo=None)
    base: dict[str, Any] = {c.name: 0 for c in schema.calls.c if isinstance(c.type, sa.BigInteger)}
    base.update(cost_nano_usd=None, priced=True, usage_source="provider", operation="chat", started_at=now)
    rows = [
        ("c1", "openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
        ("c2", "openai", "gpt-4o-mini", None),
        ("c3", "openai", "my-deployment", "gpt-4o"),  # only the response model has a price
        ("c4", "openai", "mystery-llm", None),
    ]
    with engine.begin() as conn:
        for call_id, provider, request_model, response_model in rows:
            values = dict(base, call_id=call_id, provider=provider, request_model=request_model)
            conn.execute(schema.calls.insert().values(**values, response_model=response_model))
    engine.dispose()
    code = main(["phoenix", "prices", "--endpoint", server.url, "--ledger", url])
    out = capsys.readouterr().out
    assert code == 1, out  # mystery-llm is unpriced
    assert set(server.phoenix.custom()) == {"costtrace openai/gpt-4o-mini", "costtrace openai/my-deployment"}
    deployment = server.phoenix.custom()["costtrace openai/my-deployment"]
    assert {p["tokenType"]: p["costPerMillionTokens"] for p in deployment["tokenPrices"]}["input"] == 2.5
    assert "registered at the price of 'gpt-4o'" in out
    assert "UNPRICED   openai/mystery-llm" in out


# --- outcome annotations ----------------------------------------------------------------------------


def _task_spans(spans: Any) -> list[Any]:
    with costtrace.task("resolve_ticket", feature="support") as t:
        costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=1)
    with costtrace.task("resolve_ticket", feature="support") as t:
        t.fail("validation_failed")
    with costtrace.task("resolve_ticket", feature="support") as t:
        t.escalate_to_human()
    return spans.all()


def test_one_annotation_per_task_span_in_one_post(server: _Server, spans: Any) -> None:
    finished = _task_spans(spans)
    exporter = phoenix.OutcomeAnnotations(server.url)
    from opentelemetry.sdk.trace.export import SpanExportResult

    assert exporter.export(finished) is SpanExportResult.SUCCESS
    ((path, _headers, body),) = server.posts  # the call span is not annotated; one request per batch
    assert path == "/v1/span_annotations"
    tasks = {format(s.context.span_id, "016x"): s for s in spans.tasks()}
    assert [a["span_id"] for a in body["data"]] == [sid for sid in tasks]
    got = [(a["name"], a["annotator_kind"], a["identifier"], a["result"]) for a in body["data"]]
    assert got == [
        ("outcome", "CODE", "costtrace", {"label": "success", "score": 1.0}),
        ("outcome", "CODE", "costtrace", {"label": "failure", "score": 0.0, "explanation": "validation_failed"}),
        ("outcome", "CODE", "costtrace", {"label": "escalated_to_human", "score": 0.0}),
    ]
    assert body["data"][0]["metadata"]["task"] == "resolve_ticket"
    assert (exporter.sent, exporter.failed) == (3, 0)


def test_large_batches_are_split(server: _Server, spans: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    finished = _task_spans(spans)
    exporter = phoenix.OutcomeAnnotations(server.url)
    monkeypatch.setattr(exporter, "MAX_PER_REQUEST", 2)
    exporter.export(finished)
    assert [len(body["data"]) for _, _, body in server.posts] == [2, 1]


def test_failures_are_counted_logged_once_and_never_raised(
    server: _Server, spans: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    finished = _task_spans(spans)
    exporter = phoenix.OutcomeAnnotations(server.url, timeout_s=5)
    server.status = 503
    with caplog.at_level(logging.DEBUG, logger="costtrace"):
        assert exporter.export(finished) is SpanExportResult.FAILURE
        assert exporter.export(finished) is SpanExportResult.FAILURE
    assert (exporter.sent, exporter.failed) == (0, 6)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "HTTP 503" in warnings[0].getMessage()
    assert "Your app is unaffected" in warnings[0].getMessage()
    server.status = 200
    assert exporter.export(finished) is SpanExportResult.SUCCESS
    assert (exporter.sent, exporter.failed) == (3, 6)

    down = phoenix.OutcomeAnnotations(_closed_port_url())
    assert down.export(finished) is SpanExportResult.FAILURE and down.failed == 3


def test_a_stuck_phoenix_costs_at_most_the_timeout(server: _Server, spans: Any) -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    finished = _task_spans(spans)
    exporter = phoenix.OutcomeAnnotations(server.url, timeout_s=0.2)
    server.hold.clear()  # the server accepts the request and never answers
    assert exporter.export(finished) is SpanExportResult.FAILURE
    assert exporter.failed == 3


def test_it_runs_as_the_span_exporter_of_an_sdk_provider(server: _Server) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = phoenix.OutcomeAnnotations(server.url)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("invoke_workflow x") as span:
        span.set_attribute("costtrace.task.outcome", "partial")
    assert provider.force_flush(30_000)
    provider.shutdown()
    ((_, _, body),) = server.posts
    assert body["data"][0]["result"] == {"label": "partial", "score": 0.0}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"endpoint": "127.0.0.1:6006"}, "OutcomeAnnotations(endpoint)='127.0.0.1:6006' is not an http(s) URL"),
        ({"timeout_s": 0}, "OutcomeAnnotations(timeout_s)=0 must be a number of seconds > 0"),
        ({"name": "note"}, "other than 'note'"),
    ],
)
def test_bad_settings_raise_at_configuration(kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        phoenix.OutcomeAnnotations(**{"endpoint": "http://127.0.0.1:6006", **kwargs})
