"""Arize Phoenix: make the cost Phoenix shows costtrace's, and show task outcomes there.

Phoenix (20.x) prices every LLM span itself, from its own model table (a model-name regex, a provider,
a start time and a price per token type), and reads no cost attribute on the span. Two helpers:

- :func:`register_prices` (the ``costtrace phoenix prices`` command, :mod:`.prices`) writes costtrace's
  prices (the genai-prices catalog, your overrides, aliases and discounts) into that table as Phoenix
  *user-defined* models, which win over Phoenix's built-in ones. Re-running updates them in place.
- :class:`OutcomeAnnotations` (:mod:`.annotations`) is a span exporter that posts one ``outcome``
  annotation per finished task span to Phoenix, so Phoenix's annotation summary shows the success rate.

What cannot agree, and why, is in exporters/phoenix/README.md (batch and service tiers: Phoenix has one
price per model name).

Example:
    >>> import costtrace
    >>> from costtrace.integrations.phoenix import OutcomeAnnotations
    >>> costtrace.configure(otlp_endpoint="http://127.0.0.1:6006",          # doctest: +SKIP
    ...                     span_exporter=OutcomeAnnotations("http://127.0.0.1:6006"))
"""

from costtrace.integrations.phoenix.annotations import OutcomeAnnotations
from costtrace.integrations.phoenix.prices import (
    ModelPrice,
    PhoenixError,
    PriceRegistration,
    Registered,
    phoenix_prices,
    register_prices,
)

__all__ = [
    "ModelPrice",
    "OutcomeAnnotations",
    "PhoenixError",
    "PriceRegistration",
    "Registered",
    "phoenix_prices",
    "register_prices",
]
