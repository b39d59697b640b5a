"""Every attribute, event and metric name costtrace emits, in one place.

``gen_ai.*`` names follow the OpenTelemetry GenAI semantic conventions (semantic-conventions v1.41,
"Development" status). Names of our own carry the ``costtrace.`` prefix. Money is in USD.

Rollup attributes (``costtrace.task.*``) live only on task spans and count only the task's own calls;
call-level cost lives only on call spans. Summing ``costtrace.call.cost_usd`` over call spans, or
``costtrace.task.cost_usd`` over task spans, never counts a call twice.
"""

from __future__ import annotations

from typing import Final

# --- GenAI semantic conventions -------------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_SYSTEM: Final = "gen_ai.system"
"""The provider attribute before semantic conventions v1.37 (replaced by ``gen_ai.provider.name``); read only."""
OPENAI_API_TYPE: Final = "openai.api.type"
OPENAI_REQUEST_SERVICE_TIER: Final = "openai.request.service_tier"
OPENAI_RESPONSE_SERVICE_TIER: Final = "openai.response.service_tier"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_WORKFLOW_NAME: Final = "gen_ai.workflow.name"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
"""Opt-in only (``costtrace.capture_content``): the prompt, size-limited and redacted."""
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
"""Opt-in only: the completion, size-limited and redacted."""
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
HTTP_REQUEST_RESEND_COUNT: Final = "http.request.resend_count"

OPERATION_INVOKE_WORKFLOW: Final = "invoke_workflow"

# --- costtrace: dimensions (on task spans and on every call span inside the task) ----------
TASK_ID: Final = "costtrace.task.id"
TASK_NAME: Final = "costtrace.task.name"
TASK_PARENT_ID: Final = "costtrace.task.parent_id"
FEATURE: Final = "costtrace.feature"
TEAM: Final = "costtrace.team"
CUSTOMER: Final = "costtrace.customer"
USER: Final = "costtrace.user"
DIMENSION_PREFIX: Final = "costtrace.dimension."
"""Prefix for user-defined low-cardinality dimensions: ``costtrace.dimension.<key>``."""

# --- costtrace: one LLM call ---------------------------------------------------------------
CALL_ID: Final = "costtrace.call.id"
CALL_ATTEMPT: Final = "costtrace.call.attempt"
CALL_COST_USD: Final = "costtrace.call.cost_usd"
CALL_INPUT_COST_USD: Final = "costtrace.call.cost.input_usd"
CALL_CACHE_READ_COST_USD: Final = "costtrace.call.cost.cache_read_usd"
CALL_CACHE_WRITE_COST_USD: Final = "costtrace.call.cost.cache_write_usd"
CALL_OUTPUT_COST_USD: Final = "costtrace.call.cost.output_usd"
CALL_REASONING_COST_USD: Final = "costtrace.call.cost.reasoning_usd"
CALL_OTHER_COST_USD: Final = "costtrace.call.cost.other_usd"
CALL_CACHE_SAVINGS_USD: Final = "costtrace.call.cache_savings_usd"
CALL_PRICED: Final = "costtrace.call.priced"
CALL_UNPRICED_REASON: Final = "costtrace.call.unpriced_reason"
PRICE_SOURCE: Final = "costtrace.price.source"
PRICE_DATE: Final = "costtrace.price.date"
PRICE_MODEL_ID: Final = "costtrace.price.model_id"
USAGE_SOURCE: Final = "costtrace.usage.source"
"""``provider`` | ``estimated`` | ``heuristic`` | ``unknown`` (see ``costtrace.usage.UsageSource``)."""
CACHE_WRITE_1H_INPUT_TOKENS: Final = "costtrace.usage.cache_write_1h.input_tokens"
CALL_RECORDED_FROM: Final = "costtrace.call.recorded_from"
"""``http`` for a call recorded from its HTTP exchange (no SDK instrumentation saw it, see
docs/instrumentation-http.md); absent for calls recorded by an SDK instrumentation or by hand."""
CALL_INCOMPLETE: Final = "costtrace.call.incomplete"
"""True when a stream ended early (closed, abandoned, or an error): its usage may be partial or estimated."""
CALL_SENT: Final = "costtrace.call.sent"
"""Set (to False) only on the span of a request the SDK refused before sending anything (a client-side
``ValueError`` / ``TypeError``): not an LLM call, no usage or cost; see ``EVENT_REQUEST_REFUSED``."""
LITELLM_PROVIDER: Final = "costtrace.litellm.provider"
"""LiteLLM's provider name for a LiteLLM call (``custom_llm_provider``: ``openai``, ``vertex_ai`` ...)."""
LITELLM_CACHE_HIT: Final = "costtrace.litellm.cache_hit"
"""True for a call LiteLLM answered from its own cache: no request was sent, recorded at $0."""
INTERNAL_ERROR: Final = "costtrace.internal_error"
"""Set when costtrace itself failed while recording this span: the numbers on it may be incomplete."""

# --- costtrace: task rollups (task spans only; the task's own calls, never its subtasks') ----
TASK_OUTCOME: Final = "costtrace.task.outcome"
TASK_OUTCOME_REASON: Final = "costtrace.task.outcome_reason"
TASK_FIRST_PASS: Final = "costtrace.task.first_pass"
TASK_COST_USD: Final = "costtrace.task.cost_usd"
TASK_WASTED_COST_USD: Final = "costtrace.task.wasted_cost_usd"
TASK_CACHE_SAVINGS_USD: Final = "costtrace.task.cache_savings_usd"
TASK_SUBTASKS_COST_USD: Final = "costtrace.task.subtasks.cost_usd"
"""Cost of finished subtasks (their own plus theirs): a separate number, never folded into ``cost_usd``."""
TASK_SUBTASKS_UNPRICED_CALLS: Final = "costtrace.task.subtasks.unpriced_calls"
"""Unpriced calls in finished subtasks (set only when > 0): ``subtasks.cost_usd`` is then a lower bound."""
TASK_INPUT_TOKENS: Final = "costtrace.task.input_tokens"
TASK_OUTPUT_TOKENS: Final = "costtrace.task.output_tokens"
TASK_CACHE_READ_INPUT_TOKENS: Final = "costtrace.task.cache_read.input_tokens"
TASK_CACHE_WRITE_INPUT_TOKENS: Final = "costtrace.task.cache_write.input_tokens"
TASK_REASONING_OUTPUT_TOKENS: Final = "costtrace.task.reasoning.output_tokens"
TASK_LLM_CALLS: Final = "costtrace.task.llm_calls"
TASK_FAILED_CALLS: Final = "costtrace.task.failed_calls"
TASK_ATTEMPTS: Final = "costtrace.task.attempts"
TASK_RETRIES: Final = "costtrace.task.retries"
TASK_ESCALATIONS: Final = "costtrace.task.escalations"
TASK_UNPRICED_CALLS: Final = "costtrace.task.unpriced_calls"
TASK_ESTIMATED_CALLS: Final = "costtrace.task.estimated_calls"
TASK_COST_COMPLETE: Final = "costtrace.task.cost_complete"
"""False when some call of the task itself is unpriced or has unknown usage: ``cost_usd`` is then a lower bound."""

# --- span events on the task span ------------------------------------------------------------
EVENT_RETRY: Final = "costtrace.retry"
EVENT_ESCALATION: Final = "costtrace.escalation"
EVENT_ATTEMPT_FAILED: Final = "costtrace.attempt.failed"
EVENT_SDK_RETRY: Final = "costtrace.sdk_retry"
"""The provider SDK re-sent a request by itself (429, 5xx, timeout): same call, same attempt."""
EVENT_REQUEST_REFUSED: Final = "costtrace.request_refused"
"""The SDK refused a request before sending it (``error.type``, bounded ``costtrace.details``): not a call,
not a failed attempt, no cost; the app usually sends it another way (pydantic-ai: as a stream)."""
EVENT_ATTR_ATTEMPT: Final = "costtrace.attempt"
EVENT_ATTR_NEXT_ATTEMPT: Final = "costtrace.next_attempt"
EVENT_ATTR_REASON: Final = "costtrace.reason"
EVENT_ATTR_DETAILS: Final = "costtrace.details"
EVENT_ATTR_MODEL: Final = "costtrace.model"
EVENT_ATTR_FROM_MODEL: Final = "costtrace.from_model"
EVENT_ATTR_TO_MODEL: Final = "costtrace.to_model"
"""``from_model`` and ``to_model`` are both requested model names (``gpt-4o-mini`` -> ``gpt-4o``)."""
EVENT_ATTR_FROM_RESPONSE_MODEL: Final = "costtrace.from_response_model"
"""The model that served the escalated-from call as the provider named it (``gpt-4o-mini-2024-07-18``),
when it differs from ``from_model``."""
EVENT_ATTR_ATTEMPT_COST_USD: Final = "costtrace.attempt.cost_usd"
EVENT_ATTR_TASK_COST_USD: Final = "costtrace.task.cost_so_far_usd"

# --- OpenInference (Arize Phoenix and other OpenInference readers; setting ``openinference``) ---
# Names as in openinference-semantic-conventions (``openinference.semconv.trace.SpanAttributes``).
OPENINFERENCE_SPAN_KIND: Final = "openinference.span.kind"
OPENINFERENCE_KIND_CHAIN: Final = "CHAIN"
"""Task spans: a chain of steps (OpenInference span kinds are upper case)."""
OPENINFERENCE_KIND_LLM: Final = "LLM"
OPENINFERENCE_KIND_EMBEDDING: Final = "EMBEDDING"
INPUT_VALUE: Final = "input.value"
"""Task spans: the task name and its dimensions as a JSON object (``input.mime_type`` = JSON)."""
INPUT_MIME_TYPE: Final = "input.mime_type"
OUTPUT_VALUE: Final = "output.value"
"""Task spans: a one-line summary (outcome, cost, calls, attempts...) as plain text."""
OUTPUT_MIME_TYPE: Final = "output.mime_type"
MIME_TYPE_JSON: Final = "application/json"
MIME_TYPE_TEXT: Final = "text/plain"
LLM_COST_TOTAL: Final = "llm.cost.total"
"""Call spans only, priced calls only: the same USD amounts as ``costtrace.call.cost*``; never on task
spans (a backend summing ``llm.cost.*`` over a trace would count a task's calls twice)."""
LLM_COST_PROMPT: Final = "llm.cost.prompt"
"""Input + cache read + cache write."""
LLM_COST_COMPLETION: Final = "llm.cost.completion"
"""Output + reasoning."""
LLM_COST_PROMPT_DETAILS_INPUT: Final = "llm.cost.prompt_details.input"
LLM_COST_PROMPT_DETAILS_CACHE_READ: Final = "llm.cost.prompt_details.cache_read"
LLM_COST_PROMPT_DETAILS_CACHE_WRITE: Final = "llm.cost.prompt_details.cache_write"
LLM_COST_COMPLETION_DETAILS_OUTPUT: Final = "llm.cost.completion_details.output"
LLM_COST_COMPLETION_DETAILS_REASONING: Final = "llm.cost.completion_details.reasoning"

# --- metrics ---------------------------------------------------------------------------------
METRIC_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
METRIC_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
METRIC_CALL_COST: Final = "costtrace.llm.cost"
METRIC_UNPRICED_CALLS: Final = "costtrace.llm.unpriced_calls"
METRIC_TASKS: Final = "costtrace.tasks"
METRIC_TASK_COST: Final = "costtrace.task.cost"
METRIC_TASK_TOKENS: Final = "costtrace.task.tokens"
METRIC_TASK_ATTEMPTS: Final = "costtrace.task.attempts"
METRIC_TASK_WASTED_COST: Final = "costtrace.task.wasted_cost"
METRIC_INTERNAL_ERRORS: Final = "costtrace.internal_errors"
METRIC_LEDGER_LOST_RECORDS: Final = "costtrace.ledger.lost_records"

TOKEN_USAGE_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
COST_BUCKETS_USD: Final = (
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 50.0,
)  # fmt: skip
ATTEMPT_BUCKETS: Final = (1, 2, 3, 4, 5, 7, 10, 15, 20)

# --- budgets and alerts (docs/budgets.md, docs/alerts.md) -----------------------------------
BUDGET_NAME: Final = "costtrace.budget.name"
BUDGET_DOWNGRADED_FROM: Final = "costtrace.budget.downgraded_from"
"""On a call span: the model the app asked for, replaced by a cheaper one by a ``downgrade`` budget."""
BUDGET_UNCHECKED: Final = "costtrace.budget.unchecked"
"""On a call span: a hard-capped budget could not be checked (store unreachable, ``fail_open``): sent unreserved."""
EVENT_BUDGET_BLOCKED: Final = "costtrace.budget.blocked"
"""Task span event: a call was blocked before it was sent (a hard cap or a task cap)."""
BUDGET_PERIOD: Final = "costtrace.budget.period"
"""The budget's period kind (``hour`` | ``day`` | ``week`` | ``month`` | ``rolling`` | ``total``): bounded."""
BUDGET_SPENT_USD: Final = "costtrace.budget.spent_usd"
BUDGET_LIMIT_USD: Final = "costtrace.budget.limit_usd"
BUDGET_PERIOD_START: Final = "costtrace.budget.period_start"
BUDGET_RESETS_AT: Final = "costtrace.budget.resets_at"
ALERT_KIND: Final = "costtrace.alert.kind"
"""``budget_threshold`` | ``budget_exhausted`` | ``budget_store_unavailable`` | ``outcome_rule``."""
ALERT_RULE: Final = "costtrace.alert.rule"
ALERT_THRESHOLD: Final = "costtrace.alert.threshold"
ALERT_UTILISATION: Final = "costtrace.alert.utilisation"
ALERT_MESSAGE: Final = "costtrace.alert.message"
ALERT_METRIC: Final = "costtrace.alert.metric"
ALERT_VALUE: Final = "costtrace.alert.value"
EVENT_BUDGET_ALERT: Final = "costtrace.budget.alert"
EVENT_OUTCOME_ALERT: Final = "costtrace.outcome.alert"
METRIC_BUDGET_SPEND: Final = "costtrace.budget.spend"
METRIC_BUDGET_LIMIT: Final = "costtrace.budget.limit"
METRIC_BUDGET_UTILISATION: Final = "costtrace.budget.utilisation"
