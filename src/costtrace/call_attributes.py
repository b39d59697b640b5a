"""What a finished LLM call writes on its span: usage (``gen_ai.usage.*``), response details, and its cost
(``costtrace.call.cost*``, and OpenInference's ``llm.cost.*`` when that is on) or why it is unpriced.

A subset of usage is written when the provider reported it, 0 included: absent means "not reported".
"""

from __future__ import annotations

from decimal import Decimal

from opentelemetry.util.types import AttributeValue

from costtrace import semconv as sc
from costtrace._internal import guarded
from costtrace.price.arithmetic import Cost
from costtrace.records import CallRecord
from costtrace.usage import REPORTED_CACHE_READ, REPORTED_CACHE_WRITE, REPORTED_CACHE_WRITE_1H, REPORTED_REASONING


def end_attributes(
    record: CallRecord, response_id: str | None, finish_reasons: tuple[str, ...], openinference: bool
) -> dict[str, AttributeValue]:
    """The attributes a finished call writes on its span: usage, response, error, cost and price source."""
    u = record.usage
    c = record.cost
    attrs: dict[str, AttributeValue] = {sc.USAGE_SOURCE: u.source, sc.CALL_PRICED: c.priced}
    if u.source != "unknown":
        # A subset is written when the provider reported it, 0 included; absent means "not
        # reported", so other tools can tell "0 cached" from "unknown" (one int test when unset).
        attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = u.input_tokens
        attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = u.output_tokens
        reported = u.reported
        if u.cache_read_input_tokens or reported & REPORTED_CACHE_READ:
            attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = u.cache_read_input_tokens
        if u.cache_write_input_tokens or reported & REPORTED_CACHE_WRITE:
            attrs[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = u.cache_write_input_tokens
        if u.reasoning_output_tokens or reported & REPORTED_REASONING:
            attrs[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = u.reasoning_output_tokens
        if u.cache_write_1h_input_tokens or reported & REPORTED_CACHE_WRITE_1H:
            attrs[sc.CACHE_WRITE_1H_INPUT_TOKENS] = u.cache_write_1h_input_tokens
    if record.response_model is not None:
        attrs[sc.GEN_AI_RESPONSE_MODEL] = record.response_model
    if response_id is not None:
        attrs[sc.GEN_AI_RESPONSE_ID] = response_id
    if finish_reasons:
        attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = list(finish_reasons)
    if record.error_type is not None:
        attrs[sc.ERROR_TYPE] = record.error_type
    if c.total_usd is not None:
        attrs[sc.CALL_COST_USD] = float(c.total_usd)
        for key, part in (
            (sc.CALL_INPUT_COST_USD, c.input_usd),
            (sc.CALL_CACHE_READ_COST_USD, c.cache_read_usd),
            (sc.CALL_CACHE_WRITE_COST_USD, c.cache_write_usd),
            (sc.CALL_OUTPUT_COST_USD, c.output_usd),
            (sc.CALL_REASONING_COST_USD, c.reasoning_usd),
            (sc.CALL_OTHER_COST_USD, c.other_usd),
            (sc.CALL_CACHE_SAVINGS_USD, c.cache_savings_usd),
        ):
            if part:
                attrs[key] = float(part)
        if openinference:
            _add_openinference_cost(attrs, c, c.total_usd)
    elif c.unpriced_reason:
        attrs[sc.CALL_UNPRICED_REASON] = c.unpriced_reason
    attrs[sc.PRICE_SOURCE] = c.price_source
    if c.price_date is not None:
        attrs[sc.PRICE_DATE] = c.price_date
    if c.model_id is not None:
        attrs[sc.PRICE_MODEL_ID] = c.model_id
    return attrs


@guarded("calls.openinference")
def _add_openinference_cost(attrs: dict[str, AttributeValue], c: Cost, total: Decimal) -> None:
    """OpenInference's ``llm.cost.*``: the same amounts as ``costtrace.call.cost*`` (priced calls only).

    ``prompt`` = input + cache read + cache write, ``completion`` = output + reasoning; ``total`` is the
    call's total, so it exceeds their sum by ``other_usd`` (a per-request fee) when there is one.
    """
    attrs[sc.LLM_COST_TOTAL] = float(total)
    attrs[sc.LLM_COST_PROMPT] = float(c.input_usd + c.cache_read_usd + c.cache_write_usd)
    attrs[sc.LLM_COST_COMPLETION] = float(c.output_usd + c.reasoning_usd)
    for key, part in (
        (sc.LLM_COST_PROMPT_DETAILS_INPUT, c.input_usd),
        (sc.LLM_COST_PROMPT_DETAILS_CACHE_READ, c.cache_read_usd),
        (sc.LLM_COST_PROMPT_DETAILS_CACHE_WRITE, c.cache_write_usd),
        (sc.LLM_COST_COMPLETION_DETAILS_OUTPUT, c.output_usd),
        (sc.LLM_COST_COMPLETION_DETAILS_REASONING, c.reasoning_usd),
    ):
        if part:
            attrs[key] = float(part)
