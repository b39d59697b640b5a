"""Analysis: the figures users read, from task summaries or from the ledger.

- :mod:`~costtrace.analysis.report`: cost per task, cost per successful task, first-pass rate and retry
  tax over task summaries in memory;
- :mod:`~costtrace.analysis.stats`: the same definitions over the ledger, in SQL;
- :mod:`~costtrace.analysis.context`: the context tax (spend by kind of token, cached share of input,
  the upper bound of what caching would save), from integer sums over a scope's calls;
- :mod:`~costtrace.analysis.routing`: comparing routes (cheap model, cascade, frontier) and ``whatif``;
- :mod:`~costtrace.analysis.tco`: total cost of ownership with human rework, C_token + P(fail) x L.

Reads the ledger's schema; never writes, and never imports the CLI.
"""
