"""Prices and token counts: what a call costs.

- :mod:`~costtrace.price.catalog`: the price catalog (genai-prices' data, your overrides, price files,
  aliases, discounts) and :class:`~costtrace.price.catalog.PriceCatalog`, which prices a call;
- :mod:`~costtrace.price.lookup`: which price applies to a call (provider names, aliases, dated prices,
  tiers, discounts);
- :mod:`~costtrace.price.arithmetic`: :class:`~costtrace.price.arithmetic.Cost`, the priced result of one
  call, and the arithmetic that computes it from the call's usage;
- :mod:`~costtrace.price.tokens`: local token counts (tiktoken, flagged as estimates) for requests whose
  provider reported no usage.

This layer knows usage and money, never tasks, spans or the ledger. The public entry points are re-exported
at the top: ``costtrace.set_price``, ``costtrace.load_prices``, ``costtrace.count_tokens``.
"""
