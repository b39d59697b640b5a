"""A small, deterministic workload recorded through the public API, for the CLI and HTML report tests.

Three features; "support" runs on three routes (cheap only, cheap then escalate, frontier only) with
retries and failures; a feature name full of HTML metacharacters checks that reports escape user data.
"""

from __future__ import annotations

import costtrace

HOSTILE_FEATURE = "faq <script>alert('x')</script> & co"
BUDGET = "support-daily"


def build_ledger(url: str) -> None:
    """Record the workload into the ledger at ``url`` (created and migrated by configure_ledger)."""
    costtrace.configure_ledger(
        url,
        budgets=[
            costtrace.Budget(BUDGET, limit_usd="0.05", period="day", scope={"feature": "support"}),
            costtrace.Budget("everything-monthly", limit_usd="100", period="month"),
        ],
    )
    try:
        for i in range(12):  # support on gpt-4o-mini: 1 in 3 retried, 1 in 4 failed
            with costtrace.task("resolve_ticket", feature="support", team="cx") as t:
                costtrace.record_llm_call("openai", "gpt-4o-mini", input_tokens=2000, output_tokens=300)
                if i % 3 == 0:
                    t.retry(reason="validation_failed")
                    costtrace.record_llm_call("openai", "gpt-4o-mini", input_tokens=2000, output_tokens=300)
                if i % 4 == 0:
                    t.fail("wrong answer")
        for i in range(8):  # support cascade: mini first, escalate to gpt-4o half the time
            with costtrace.task("resolve_ticket", feature="support", team="cx") as t:
                costtrace.record_llm_call("openai", "gpt-4o-mini", input_tokens=2000, output_tokens=300)
                t.escalate(to_model="gpt-4o", reason="low_confidence")
                costtrace.record_llm_call("openai", "gpt-4o", input_tokens=2000, output_tokens=300)
                if i == 0:
                    t.fail("still wrong")
        for _ in range(5):  # support on gpt-4o only
            with costtrace.task("resolve_ticket", feature="support", team="cx"):
                costtrace.record_llm_call("openai", "gpt-4o", input_tokens=2000, output_tokens=300)
        for i in range(6):
            with costtrace.task("extract_invoice", feature="billing", team="finance") as t:
                costtrace.record_llm_call("openai", "gpt-4o-mini", input_tokens=5000, output_tokens=800)
                if i % 2 == 0:
                    t.retry(reason="json_invalid")
                    costtrace.record_llm_call("openai", "gpt-4o-mini", input_tokens=5000, output_tokens=800)
        for _ in range(3):
            with costtrace.task("answer", feature=HOSTILE_FEATURE):
                costtrace.record_llm_call("openai", "gpt-4o-mini", input_tokens=500, output_tokens=100)
        assert costtrace.flush_ledger(60)
    finally:
        costtrace.close_ledger()
