"""Spend: the ledger and what it enforces.

- :mod:`~costtrace.spend.schema`: the ledger's tables and migrations; :mod:`~costtrace.spend.engine`:
  opening a ledger (SQLite by default, PostgreSQL to share budgets across processes);
- :mod:`~costtrace.spend.rows`: records as rows, validated; :mod:`~costtrace.spend.store`: batch writes,
  budget state and alert claims in the database; :mod:`~costtrace.spend.reservations`: hard-cap
  reservations;
- :mod:`~costtrace.spend.writer`: the background writer every finished call and task goes through, with
  its spool (:mod:`~costtrace.spend.spool`), lost-record accounting (:mod:`~costtrace.spend.losses`)
  and the spend it holds but has not written yet (:mod:`~costtrace.spend.pending`);
- :mod:`~costtrace.spend.budgets`: :class:`~costtrace.spend.budgets.Budget` and budget files;
- :mod:`~costtrace.spend.ledger`: ``configure_ledger``, flush, close and late outcomes, over the
  process-wide :mod:`~costtrace.spend.runtime`;
- :mod:`~costtrace.spend.admission`: hard caps: the admission hook (:func:`costtrace.calls.set_admission_hook`)
  that reserves a call's worst case before it is sent;
- :mod:`~costtrace.spend.alerts`: the Alert, budget thresholds, and the dispatcher that hands alerts to
  every sink; :mod:`~costtrace.spend.outcome_rules`: alerts on task outcomes over a window;
  :mod:`~costtrace.spend.webhooks`: webhooks and their delivery (own queue, thread and retries each);
- :mod:`~costtrace.spend.sketch`: :class:`~costtrace.spend.sketch.QuantileSketch`, the mergeable percentile
  summary (p50/p95 within 1%) for rollups.

The record layer (tasks, calls, records) never imports from here: records flow in through the writer, and
admission reaches the call path only through the hook this layer installs.
"""

ENV_LEDGER_URL = "COSTTRACE_LEDGER_URL"
"""The environment variable naming the ledger's URL (default: the per-user SQLite file)."""
