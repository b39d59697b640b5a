"""``costtrace ledger status|migrate|refresh|rebuild`` on SQLite and PostgreSQL, through the entry point."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from costtrace.analysis.stats import scope_stats
from costtrace.cli import main
from costtrace.spend import rollups, schema
from costtrace.spend.engine import make_engine
from tests.ledger.workload import build_ledger


def status(capsys: pytest.CaptureFixture[str], url: str, action: str = "status") -> dict[str, object]:
    assert main(["ledger", action, "--ledger", url, "--format", "json"]) == 0
    payload: dict[str, object] = json.loads(capsys.readouterr().out)
    return payload


def test_refresh_builds_what_the_writes_marked_and_status_says_so(ledger_url, capsys):
    build_ledger(ledger_url)
    before = status(capsys, ledger_url)
    assert before["schema_version"] == schema.SCHEMA_VERSION
    assert before["tasks"] == 34
    assert before["dirty_hours"] >= 1 and before["hour_cells"] == 0  # written, not yet refreshed
    after = status(capsys, ledger_url, "refresh")
    assert after["dirty_periods"] == 0
    assert after["refreshed_hours"] == before["dirty_hours"]
    assert after["hour_cells"] > 0 and after["day_cells"] > 0 and after["month_cells"] > 0
    engine = make_engine(ledger_url)
    try:
        fast = scope_stats(engine, by=("feature", "route"))
        exact = scope_stats(engine, by=("feature", "route"), exact=True)
        assert [(s.key, s.tasks, s.total_cost_usd, s.successes) for s in fast] == [
            (s.key, s.tasks, s.total_cost_usd, s.successes) for s in exact
        ]
    finally:
        engine.dispose()


def test_rebuild_repairs_cells_gone_stale_after_rows_inserted_around_the_api(ledger_url, capsys):
    build_ledger(ledger_url)
    status(capsys, ledger_url, "refresh")
    engine = make_engine(ledger_url)
    try:
        with engine.begin() as conn:  # a bulk SQL import: no dirty mark, so the built cells go stale
            row = conn.execute(sa.select(schema.tasks).limit(1)).mappings().one()
            conn.execute(schema.tasks.insert().values({**row, "task_id": "imported"}))
        exact = scope_stats(engine, by=(), exact=True)[0].tasks
        assert scope_stats(engine, by=())[0].tasks == exact - 1  # stale: documented, and what rebuild is for
        rebuilt = status(capsys, ledger_url, "rebuild")
        assert rebuilt["dirty_periods"] == 0
        assert scope_stats(engine, by=())[0].tasks == exact
    finally:
        engine.dispose()


def test_migrate_upgrades_a_version_2_ledger_and_builds_its_rollups(ledger_url, capsys):
    build_ledger(ledger_url)
    engine = make_engine(ledger_url)
    try:
        with engine.begin() as conn:  # back to version 2: no final_model, no rollup tables
            conn.execute(sa.text("ALTER TABLE costtrace_tasks DROP COLUMN final_model"))
            for table in ("costtrace_rollup_cells", "costtrace_rollup_periods", "costtrace_rollup_marks"):
                conn.execute(sa.text(f"DROP TABLE {table}"))
            conn.execute(schema.schema_version.update().values(version=2))
        assert main(["report", "--ledger", ledger_url]) == 2
        assert "costtrace ledger migrate" in capsys.readouterr().err
        migrated = status(capsys, ledger_url, "migrate")
        assert migrated["migrated_from"] == 2 and migrated["schema_version"] == 3
        assert migrated["dirty_periods"] == 0 and migrated["hour_cells"] > 0
        fast = scope_stats(engine, by=("feature",))
        exact = scope_stats(engine, by=("feature",), exact=True)
        assert [(s.key, s.tasks, s.total_cost_usd) for s in fast] == [(s.key, s.tasks, s.total_cost_usd) for s in exact]
        assert rollups.dirty_count(engine) == {"hour": 0, "day": 0, "month": 0}
    finally:
        engine.dispose()


def test_status_never_writes_and_the_table_names_each_figure(ledger_url, capsys):
    build_ledger(ledger_url)
    assert main(["ledger", "status", "--ledger", ledger_url]) == 0
    captured = capsys.readouterr()
    assert "schema version  3" in captured.out and "dirty hours" in captured.out
    assert "costtrace ledger refresh" in captured.err
    assert status(capsys, ledger_url)["hour_cells"] == 0  # still nothing built


def test_a_missing_ledger_is_a_clear_error(tmp_path, capsys):
    assert main(["ledger", "migrate", "--ledger", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "no ledger at" in capsys.readouterr().err


def test_whatif_tco_and_model_sums_are_the_same_from_cells_as_from_raw_rows(ledger_url, capsys):
    from costtrace.analysis import routing, tco
    from costtrace.analysis.stats import Filters, model_sums

    build_ledger(ledger_url)
    engine = make_engine(ledger_url)
    support = Filters(feature="support")

    def figures() -> tuple[object, ...]:
        return (
            routing.whatif(engine, route="gpt-4o-mini->gpt-4o", filters=support, rework_cost_usd=2),
            tco.from_ledger(engine, filters=support, rework_cost_usd=2),
            model_sums(engine, filters=support, by=("route", "request_model")),
        )

    try:
        raw = figures()  # nothing built yet: every period is read from the raw rows
        assert status(capsys, ledger_url, "refresh")["dirty_periods"] == 0
        built = figures()  # every period from the cells
        assert built == raw
        sums = built[2]
        assert isinstance(sums, dict)
        # support's 8 cascades: each one gpt-4o-mini attempt (failed: escalated) and one gpt-4o attempt.
        cascade_mini = sums[("gpt-4o-mini->gpt-4o", "gpt-4o-mini")]
        assert (cascade_mini["calls"], cascade_mini["attempts"], cascade_mini["failed_attempts"]) == (8, 8, 8)
        assert cascade_mini["useful_tokens"] == 0 and cascade_mini["first_calls"] == 8
    finally:
        engine.dispose()


@pytest.mark.parametrize("exact", [False, True])
def test_percentiles_false_reads_the_same_sums_and_no_percentile(ledger_url, capsys, exact):
    build_ledger(ledger_url)
    status(capsys, ledger_url, "refresh")
    engine = make_engine(ledger_url)
    try:
        full = scope_stats(engine, by=("feature", "route"), exact=exact)
        sums = scope_stats(engine, by=("feature", "route"), exact=exact, percentiles=False)
    finally:
        engine.dispose()
    figures = ("key", "tasks", "successes", "first_pass_rate", "total_cost_usd", "wasted_cost_usd", "retry_tax")
    assert [[getattr(s, f) for f in figures] for s in sums] == [[getattr(s, f) for f in figures] for s in full]
    assert [s.cost_per_task_usd.mean for s in sums] == [s.cost_per_task_usd.mean for s in full]
    assert all(s.cost_per_task_usd.p50 is None and s.input_tokens_per_task.p95 is None for s in sums)
    assert any(s.cost_per_task_usd.p50 is not None for s in full)
