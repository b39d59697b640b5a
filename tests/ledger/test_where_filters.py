"""Filters on any dimension, custom ones included (``Filters(dimensions=...)``, ``--where KEY=VALUE``).

The ledger is recorded through the public API, so the ``dimensions`` JSON is the writer's own. Every
task of region "eu" is also of team "t-eu" (and only those are), so a filter on the custom dimension
must give exactly the figures of the built-in ``team`` filter, column for column, on SQLite and
PostgreSQL; the other tasks differ, so a filter that did nothing would show. All of feature "support":

    region  team    customer  tasks                                              outcome
    eu      t-eu    eu-gold   gpt-4o-mini (plan.tier gold)                      success
    eu      t-eu              gpt-4o-mini                                         success
    eu      t-eu              gpt-4o-mini                                         failure
    eu      t-eu    eu-gold   gpt-4o-mini->gpt-4o (plan.tier gold)              success
    eu      t-eu              gpt-4o (tricky keys: 'we"ird key', tier=3, city)  success
    eu      t-eu              "parent" holding a "child" on gpt-4o-mini         success (both)
    us      t-us    us-gold   gpt-4o (plan.tier gold)                           success
    us      t-us              gpt-4o-mini, retry, gpt-4o-mini                   success
    us      t-us              gpt-4o                                            failure
    -       t-none            gpt-4o-mini (user u-1)                            success

Region "eu": 7 tasks (the child inherits its parent's dimensions), 6 successes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

import costtrace
from costtrace.analysis.routing import advise, whatif
from costtrace.analysis.stats import Filters, model_costs, scope_stats
from costtrace.analysis.tco import from_ledger
from costtrace.cli import main
from costtrace.errors import ConfigError
from costtrace.spend import schema
from tests.ledger.test_analytics import insert, task_row

MINI, FOUR_O = "gpt-4o-mini", "gpt-4o"
EU = Filters(dimensions={"region": "eu"})
TEAM_EU = Filters(team="t-eu")
WEIRD = 'we"ird key'
TRICKY = {WEIRD: "it's", "tier": 3, "city": "zürich", "x') OR 1=1 --": "y"}


def _call(model: str, input_tokens: int = 1000, output_tokens: int = 100) -> None:
    costtrace.record_llm_call(provider="openai", model=model, input_tokens=input_tokens, output_tokens=output_tokens)


def _task(name: str = "answer", **kw: Any) -> Any:
    return costtrace.task(name, feature="support", **kw)


def _record() -> None:
    eu: dict[str, Any] = {"team": "t-eu", "region": "eu"}
    gold_eu: dict[str, Any] = {**eu, "customer": "eu-gold", "plan.tier": "gold"}
    us: dict[str, Any] = {"team": "t-us", "region": "us"}
    with _task(**gold_eu):
        _call(MINI)
    with _task(**eu):
        _call(MINI)
    with _task(**eu) as t:
        _call(MINI)
        t.fail()
    with _task(**gold_eu) as t:
        _call(MINI)
        t.escalate(to_model=FOUR_O)
        _call(FOUR_O)
    with _task(**eu, **TRICKY):
        _call(FOUR_O)
    with _task("parent", **eu):
        with costtrace.task("child"):  # inherits feature, team and region
            _call(MINI, 500, 50)
    with _task(**us, customer="us-gold", **{"plan.tier": "gold"}):
        _call(FOUR_O)
    with _task(**us) as t:
        _call(MINI)
        t.retry(reason="validation_failed")
        _call(MINI, 3000, 300)
    with _task(**us) as t:
        _call(FOUR_O, 2000, 200)
        t.fail()
    with _task(team="t-none", user="u-1"):
        _call(MINI)


@pytest.fixture
def ledger(ledger_url: str, ledger_engine: sa.Engine) -> Iterator[sa.Engine]:
    costtrace.configure_ledger(ledger_url)
    try:
        _record()
        assert costtrace.flush_ledger(60)
    finally:
        costtrace.close_ledger()
    yield ledger_engine


def tasks(engine: sa.Engine, filters: Filters) -> int:
    return sum(s.tasks for s in scope_stats(engine, by=(), filters=filters))


# --- the figures of the matching tasks, exactly --------------------------------------------------------


@pytest.mark.parametrize("by", [(), ("feature",), ("route",), ("task", "customer"), ("feature", "day")])
def test_scope_stats_on_a_custom_dimension_are_exactly_the_matching_tasks(ledger, by):
    on_region = scope_stats(ledger, by=by, filters=EU)
    # Every figure of every scope (a custom dimension reads raw rows: exact percentiles, as exact=True).
    assert on_region == scope_stats(ledger, by=by, filters=TEAM_EU, exact=True)
    assert on_region != scope_stats(ledger, by=by)
    assert sum(s.tasks for s in on_region) == 7 and sum(s.successes for s in on_region) == 6


def test_model_costs_on_a_custom_dimension_are_exactly_the_matching_calls(ledger):
    on_region = model_costs(ledger, filters=EU)
    assert on_region == model_costs(ledger, filters=TEAM_EU)
    assert {m.model: m.calls for m in on_region} == {MINI: 5, FOUR_O: 2}
    assert on_region != model_costs(ledger)


def test_whatif_tco_and_advice_on_a_custom_dimension_are_exactly_the_matching_tasks(ledger):
    for route in (FOUR_O, f"{MINI}->{FOUR_O}"):
        assert whatif(ledger, route=route, filters=EU) == whatif(ledger, route=route, filters=TEAM_EU)
        assert whatif(ledger, route=route, filters=EU).tasks == 6  # "parent" made no LLM call of its own
    assert from_ledger(ledger, filters=EU, rework_cost_usd=1) == from_ledger(ledger, filters=TEAM_EU, rework_cost_usd=1)
    assert sum(r.tasks for r in from_ledger(ledger, filters=EU)) == 7
    assert advise(ledger, filters=EU, min_tasks=1) == advise(ledger, filters=TEAM_EU, min_tasks=1)


def test_several_dimensions_must_all_match(ledger):
    both = Filters(dimensions={"region": "eu", "plan.tier": "gold"})
    assert scope_stats(ledger, by=("route",), filters=both) == scope_stats(
        ledger, by=("route",), filters=Filters(customer="eu-gold")
    )
    assert tasks(ledger, both) == 2
    assert tasks(ledger, Filters(dimensions={"plan.tier": "gold"})) == 3  # eu and us
    assert tasks(ledger, Filters(team="t-us", dimensions={"plan.tier": "gold"})) == 1  # with a built-in filter too
    assert scope_stats(ledger, filters=Filters(dimensions={"region": "us", "customer_tier": "gold"})) == []


@pytest.mark.parametrize(
    "dimensions",
    [
        {WEIRD: "it's"},  # a double quote in the key: no JSON path can name it
        {"tier": "3"},  # recorded as tier=3: costtrace stores the text "3"
        {"city": "zürich"},  # stored as "z\\u00fcrich" in the JSON text
        {"x') OR 1=1 --": "y"},
        {WEIRD: "it's", "tier": "3", "city": "zürich", "region": "eu"},
    ],
)
def test_keys_with_quotes_dots_and_spaces_and_non_ascii_values_match_exactly(ledger, dimensions):
    (only,) = scope_stats(ledger, by=("route",), filters=Filters(dimensions=dimensions))
    assert (only.key, only.tasks) == ({"route": FOUR_O}, 1)


@pytest.mark.parametrize(
    "dimensions",
    [{"region": "EU"}, {"region": "eu "}, {"tier": "3.0"}, {"planet": "mars"}, {"x') OR 1=1 --": "z"}, {WEIRD: "its"}],
)
def test_a_value_matches_only_as_recorded(ledger, dimensions):
    assert scope_stats(ledger, filters=Filters(dimensions=dimensions)) == []
    assert model_costs(ledger, filters=Filters(dimensions=dimensions)) == []


def test_user_is_the_standard_user_dimension(ledger):
    assert scope_stats(ledger, by=("team",), filters=Filters(dimensions={"user": "u-1"}))[0].key == {"team": "t-none"}
    assert tasks(ledger, Filters(dimensions={"user": "u-1"})) == 1


def test_rows_without_dimensions_never_match(ledger_engine):
    insert(ledger_engine, schema.tasks, [task_row("bare", datetime(2024, 5, 6), dimensions=None)])
    assert tasks(ledger_engine, Filters()) == 1
    assert tasks(ledger_engine, Filters(dimensions={"region": "eu"})) == 0
    assert tasks(ledger_engine, Filters(dimensions={"feature_x": "support"})) == 0


# --- Filters.dimensions --------------------------------------------------------------------------------


def test_dimensions_are_sorted_pairs_equal_and_hashable_however_given():
    a = Filters(dimensions={"region": "eu", "a.b": "c"})
    b = Filters(dimensions=[("a.b", "c"), ("region", "eu"), ("region", "eu")])
    assert a.dimensions == (("a.b", "c"), ("region", "eu")) and a == b and hash(a) == hash(b)
    assert Filters().dimensions == () and Filters() == Filters(dimensions={})
    import dataclasses

    moved = dataclasses.replace(a, route=MINI)
    assert (moved.route, moved.dimensions) == (MINI, a.dimensions)


@pytest.mark.parametrize(
    ("dimensions", "message"),
    [
        ({"team": "x"}, "filter dimension 'team' is a filter of its own: use Filters(team='x')"),
        ({"feature": "x"}, "use Filters(feature='x')"),
        ({"route": "x"}, "use Filters(route='x')"),
        ([("region", "eu"), ("region", "us")], "'region' is given twice, as 'eu' and 'us'"),
        ({"": "x"}, "name '' must be a non-empty str"),
        ({"region": ""}, "the value must be a non-empty str"),
        ({"tier": 3}, "tier=3: the value must be a non-empty str, as recorded"),
        ({1: "x"}, "name 1 must be a non-empty str"),
        ({"costtrace.dimension.region": "eu"}, "give the name passed to costtrace.task, 'region'"),
        ("region=eu", "must be a mapping of names to values"),
        (["region"], "'region' is not a (name, value) pair"),
        (None, "must be a mapping of names to values"),
    ],
)
def test_bad_dimension_filters_are_config_errors(dimensions, message):
    with pytest.raises(ConfigError) as exc:
        Filters(dimensions=dimensions)
    assert message in str(exc.value)


# --- the command line ----------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_report_where_is_exactly_the_matching_tasks(ledger_url, ledger, capsys):
    code, out, err = cli(capsys, "report", "--ledger", ledger_url, "--where", "region=eu", "--format", "json")
    assert code == 0, err
    (support,) = json.loads(out)
    assert (support["feature"], support["tasks"], support["successes"]) == ("support", 7, 6)
    # --where reads raw rows (exact percentiles): the same figures as --team with --exact.
    _, by_team, _ = cli(capsys, "report", "--ledger", ledger_url, "--team", "t-eu", "--exact", "--format", "json")
    assert json.loads(out) == json.loads(by_team)
    eu_total = sum((s.total_cost_usd for s in scope_stats(ledger, by=(), filters=TEAM_EU)), Decimal(0))
    assert Decimal(support["total_cost_usd"]) == eu_total


def test_the_html_report_names_the_where_filters(ledger_url, ledger, capsys, tmp_path):
    page = tmp_path / "r.html"
    code, _, err = cli(capsys, "report", "--ledger", ledger_url, "--where", "plan.tier=gold", "--html", str(page))
    assert code == 0, err
    assert "Filter plan.tier" in page.read_text(encoding="utf-8")


def test_several_where_flags_combine_with_and(ledger_url, ledger, capsys):
    wheres = ["--where", "region=eu", "--where", "plan.tier=gold", "--where", "region=eu"]  # one pair twice: once
    code, out, err = cli(capsys, "report", "--ledger", ledger_url, "--by", "customer", *wheres, "--format", "json")
    assert code == 0, err
    assert [(r["customer"], r["tasks"]) for r in json.loads(out)] == [("eu-gold", 2)]
    code, out, err = cli(capsys, "report", "--ledger", ledger_url, "--where", f"{WEIRD}=it's", "--format", "csv")
    assert code == 0, err
    assert out.splitlines()[1].startswith("support,1,")


@pytest.mark.parametrize(
    "command",
    [["compare", "--feature", "support"], ["tco", "--feature", "support"], ["whatif", "--route", FOUR_O]],
)
def test_compare_tco_and_whatif_take_where(ledger_url, ledger, capsys, command):
    code, out, err = cli(capsys, *command, "--ledger", ledger_url, "--where", "region=eu", "--format", "json")
    assert code == 0, err
    exact = ["--exact"] if command[0] == "compare" else []  # --where reads raw rows: exact percentiles
    code, by_team, err = cli(capsys, *command, "--ledger", ledger_url, "--team", "t-eu", *exact, "--format", "json")
    assert code == 0, err
    assert json.loads(out) == json.loads(by_team)
    code, everything, err = cli(capsys, *command, "--ledger", ledger_url, "--format", "json")
    assert json.loads(out) != json.loads(everything)


def test_where_on_a_built_in_dimension_is_that_filter(ledger_url, ledger, capsys):
    _, out, _ = cli(capsys, "report", "--ledger", ledger_url, "--where", "team=t-eu", "--format", "json")
    _, by_team, _ = cli(capsys, "report", "--ledger", ledger_url, "--team", "t-eu", "--format", "json")
    assert json.loads(out) == json.loads(by_team) and json.loads(out)[0]["tasks"] == 7
    _, out, _ = cli(capsys, "tco", "--ledger", ledger_url, "--where", "feature=support", "--format", "json")
    _, by_feature, _ = cli(capsys, "tco", "--ledger", ledger_url, "--feature", "support", "--format", "json")
    assert json.loads(out) == json.loads(by_feature)
    code, _, err = cli(capsys, "report", "--ledger", ledger_url, "--team", "t-eu", "--where", "team=t-eu")
    assert code == 0, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--where", "region"], "argument --where: 'region' is not KEY=VALUE; give a dimension and its value"),
        (["--where", "=eu"], "'=eu' is not KEY=VALUE"),
        (["--where", "region="], "'region=' is not KEY=VALUE"),
        (["--where", "region=eu", "--where", "region=us"], "--where gives 'region' twice, as 'eu' and 'us'"),
        (["--team", "a", "--where", "team=b"], "--where team=b contradicts --team 'a'; give one of them"),
        (["--where", "costtrace.dimension.region=eu"], "--where: filter dimension 'costtrace.dimension.region': give"),
    ],
)
def test_a_bad_where_is_exit_2_with_one_line(tmp_path, capsys, args, message):
    code, out, err = cli(capsys, "report", "--ledger", f"sqlite:///{tmp_path / 'none.db'}", *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_where_matching_nothing_lists_the_dimensions_values(ledger_url, ledger, capsys):
    code, _, err = cli(capsys, "report", "--ledger", ledger_url, "--where", "region=mars")
    assert code == 2
    assert "match --where 'region=mars'" in err and "'region' values in the ledger: 'eu', 'us'" in err
    code, _, err = cli(capsys, "report", "--ledger", ledger_url, "--feature", "support", "--where", "planet=mars")
    assert code == 2
    assert "match --feature 'support' --where 'planet=mars'" in err and "no task has a dimension 'planet'" in err
