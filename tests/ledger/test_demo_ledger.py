"""`costtrace demo --ledger URL`: the run is added to that ledger (SQLite or PostgreSQL), never emptied,
and the report commands the demo prints read it back as printed."""

from __future__ import annotations

import shlex

import pytest
import sqlalchemy as sa

from costtrace.cli import main
from costtrace.demo import support_bot
from costtrace.spend import schema
from costtrace.spend.engine import make_engine

pytest.importorskip("openai")


def test_a_ledger_given_with_ledger_is_kept_and_the_printed_commands_report_on_it(capsys, ledger_url):
    for _ in range(2):
        assert main(["demo", "--tasks", "2", "--seed", "1", "--ledger", ledger_url]) == 0
        out, err = capsys.readouterr()
        assert err.startswith("costtrace demo: run "), err
    engine = make_engine(ledger_url)
    try:
        with engine.connect() as conn:
            t = schema.tasks
            counts = dict(conn.execute(sa.select(t.c.name, sa.func.count()).group_by(t.c.name)).all())
    finally:
        engine.dispose()
    assert counts == {s.task_name: 4 for s in support_bot.STRATEGIES}  # both runs: an explicit ledger is not emptied
    for strategy in support_bot.STRATEGIES:  # the demo's own tables: this run only
        assert f"{strategy.label}  " in out
    assert "Report on the ledger (this run and whatever else it holds):" in out
    commands = [line.strip() for line in out.splitlines() if line.startswith("  costtrace ")]
    assert [shlex.split(c)[:4] for c in commands] == [
        ["costtrace", "report", "--ledger", ledger_url],
        ["costtrace", "compare", "--ledger", ledger_url],
    ]
    assert main(shlex.split(commands[0])[1:]) == 0
    table = capsys.readouterr()[0]
    for strategy in support_bot.STRATEGIES:
        line = next(line for line in table.splitlines() if line.startswith(strategy.task_name + " "))
        assert line.split()[1] == "4"
