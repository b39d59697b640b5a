"""The pytest plugin (costtrace.pytest_plugin) and the assertion helpers of costtrace.testing.

Plugin tests run an inner pytest session with ``pytester``; the inner suites load the plugin through
its ``pytest11`` entry point, as users' suites do. One call of gpt-4o-mini with 1000 input and 100
output tokens costs $0.00021.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from decimal import Decimal
from importlib.metadata import entry_points

import pytest

import costtrace
from costtrace.testing import (
    assert_attempts,
    assert_llm_calls,
    assert_task_cost,
    assert_tokens_per_task,
    capture,
)

pytest_plugins = ["pytester"]

HEADER = """
import threading
import pytest
import costtrace

def resolve(calls=1, retries=0, model="gpt-4o-mini", name="resolve_ticket"):
    with costtrace.task(name) as t:
        for i in range(calls):
            if i and i <= retries:
                t.retry(reason="validation_failed")
            costtrace.record_llm_call("openai", model, 1000, 100)
    return t
"""


def run(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=HEADER + body)
    # hypothesis' plugin imports hypothesis at the end of each inner session (a second apiece)
    return pytester.runpytest("--strict-markers", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", *args)


# --- The plugin is installed and inert --------------------------------------------------------------


def test_the_plugin_is_registered_under_the_pytest11_entry_point():
    found = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert found.get("costtrace") == "costtrace.pytest_plugin"


def test_loading_the_plugin_imports_no_optional_library():
    code = (
        "import sys, costtrace.pytest_plugin\n"
        "heavy = ('sqlalchemy', 'tiktoken', 'genai_prices', 'opentelemetry.sdk')\n"
        "print(','.join(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_suite_that_does_not_use_the_plugin_sees_nothing_of_it(pytester: pytest.Pytester):
    result = run(pytester, "def test_plain():\n    resolve()\n")
    result.assert_outcomes(passed=1)
    mentions = [line for line in result.outlines if "costtrace" in line]
    assert len(mentions) == 1 and mentions[0].startswith("plugins: ")  # the header's plugin list only


def test_the_plugin_can_be_disabled(pytester: pytest.Pytester):
    result = run(pytester, "def test_plain(costtrace_tasks):\n    resolve()\n", "-p", "no:costtrace")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'costtrace_tasks' not found*"])


def test_a_disabled_plugin_leaves_the_marker_unregistered(pytester: pytest.Pytester):
    # In a subprocess: in-process, pytest.mark remembers the markers the outer session registered.
    pytester.makepyfile(
        test_inner=HEADER + "@pytest.mark.costtrace(max_cost_usd=1)\ndef test_marked():\n    resolve()\n"
    )
    result = pytester.runpytest_subprocess("--strict-markers", "-p", "no:cacheprovider", "-p", "no:costtrace")
    result.stdout.fnmatch_lines(["*'costtrace' not found in `markers` configuration option*"])


def test_the_marker_is_registered_for_strict_markers(pytester: pytest.Pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.costtrace(max_cost_usd=None, max_attempts=None, *"])


# --- Fixtures ----------------------------------------------------------------------------------------


def test_costtrace_tasks_collects_the_tasks_and_calls_of_the_test(pytester: pytest.Pytester):
    result = run(
        pytester,
        """
def test_collects(costtrace_tasks, costtrace_calls):
    resolve(calls=2, retries=1)
    resolve(name="triage")
    assert [t.name for t in costtrace_tasks.tasks] == ["resolve_ticket", "triage"]
    assert costtrace_tasks.task("resolve_ticket").attempts == 2
    assert len(costtrace_calls) == 3 and costtrace_calls is costtrace_tasks.calls

def test_starts_empty(costtrace_tasks):
    assert costtrace_tasks.tasks == [] and costtrace_tasks.calls == []

def test_collects_tasks_from_other_threads(costtrace_tasks):
    threads = [threading.Thread(target=resolve) for _ in range(8)]
    for th in threads: th.start()
    for th in threads: th.join()
    assert len(costtrace_tasks.tasks) == 8 and len(costtrace_tasks.calls) == 8
""",
    )
    result.assert_outcomes(passed=3)


# --- The marker --------------------------------------------------------------------------------------


def test_marker_passes_within_limits(pytester: pytest.Pytester):
    result = run(
        pytester,
        """
@pytest.mark.costtrace(task="resolve_ticket", max_cost_usd="0.00042", max_attempts=2, max_tokens_per_task=2200,
                       max_llm_calls=2)
def test_at_the_limits():
    resolve(calls=2, retries=1)
""",
    )
    result.assert_outcomes(passed=1)


def test_marker_fails_a_task_over_its_cost_budget(pytester: pytest.Pytester):
    result = run(
        pytester,
        """
@pytest.mark.costtrace(task="resolve_ticket", max_cost_usd=0.0004)
def test_too_expensive():
    resolve(calls=3, retries=1)
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*costtrace: task 'resolve_ticket' (id *) cost $0.00063 > max_cost_usd $0.0004 (3 calls, 2 attempts)*"]
    )


def test_marker_fails_too_many_attempts_tokens_and_calls_listing_each(pytester: pytest.Pytester):
    result = run(
        pytester,
        """
@pytest.mark.costtrace(max_attempts=1, max_tokens_per_task=2000, max_llm_calls=2)
def test_regressed():
    resolve(calls=3, retries=2)
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*costtrace: 3 cost limits exceeded*",
            "*task 'resolve_ticket' (id *) took 3 attempts > max_attempts 1 (2 retries, 0 escalations)*",
            "*task 'resolve_ticket' (id *) used 3300 tokens > max_tokens_per_task 2000"
            " (3000 input + 300 output, 3 calls)*",
            "*task 'resolve_ticket' (id *) made 3 LLM calls > max_llm_calls 2 (0 failed, 3 attempts)*",
        ]
    )


def test_marker_checks_every_matching_task_and_only_those(pytester: pytest.Pytester):
    result = run(
        pytester,
        """
@pytest.mark.costtrace(task="resolve_ticket", max_llm_calls=1)
def test_filtered():
    resolve()
    resolve(calls=5, name="triage")   # another task: not checked

@pytest.mark.costtrace(max_llm_calls=1)
def test_all():
    resolve()
    resolve(calls=2)
""",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*_ test_all _*", "costtrace: task 'resolve_ticket' (id *) made 2 LLM calls > max_llm_calls 1 *"]
    )


def test_marker_fails_when_no_task_ran_unless_allowed(pytester: pytest.Pytester):
    result = run(
        pytester,
        """
@pytest.mark.costtrace(task="resolve_ticket", max_cost_usd=1)
def test_none():
    resolve(name="triage")

@pytest.mark.costtrace(max_cost_usd=1)
def test_nothing():
    pass

@pytest.mark.costtrace(task="resolve_ticket", max_cost_usd=1, allow_none=True)
def test_allowed():
    pass
""",
    )
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_none _*",
            "costtrace: no task named 'resolve_ticket' ran in the test body (tasks that ran: triage)",
            "*_ test_nothing _*",
            "costtrace: no costtrace task ran in the test body",
        ]
    )


def test_marker_fails_an_incomplete_cost_unless_priced_is_not_required(pytester: pytest.Pytester):
    result = run(
        pytester,
        """
def unpriced():
    with costtrace.task("resolve_ticket"):
        costtrace.record_llm_call("openai", "gpt-4o-mini", 1000, 100)
        costtrace.record_llm_call("openai", "my-finetune-xyz", 1000, 100)

@pytest.mark.costtrace(max_cost_usd=1)
def test_required():
    unpriced()

@pytest.mark.costtrace(max_cost_usd=1, require_priced=False)
def test_not_required():
    unpriced()

@pytest.mark.costtrace(max_cost_usd="0.0001", require_priced=False)
def test_lower_bound_over():
    unpriced()

@pytest.mark.costtrace(max_attempts=1)
def test_no_cost_limit():
    unpriced()
""",
    )
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_required _*",
            "costtrace: task 'resolve_ticket' (id *) cost is incomplete: 1 of its 2 calls unpriced"
            " (no price or unknown usage), so $0.00021 is only a lower bound and may be over max_cost_usd $1"
            " (2 calls, 1 attempt); price the model (costtrace.set_price) or pass require_priced=False",
            "*_ test_lower_bound_over _*",
            "costtrace: task 'resolve_ticket' (id *) cost $0.00021 > max_cost_usd $0.0001 (2 calls, 1 attempt),"
            " and that is a lower bound: 1 of its 2 calls unpriced",
        ]
    )


def test_marker_counts_subtasks_in_the_cost_and_their_unpriced_calls(pytester: pytest.Pytester):
    result = run(
        pytester,
        """
@pytest.mark.costtrace(task="parent", max_cost_usd="0.0003")
def test_subtask_cost():
    with costtrace.task("parent"):
        costtrace.record_llm_call("openai", "gpt-4o-mini", 1000, 100)
        with costtrace.task("child"):
            costtrace.record_llm_call("openai", "gpt-4o-mini", 1000, 100)

@pytest.mark.costtrace(task="parent", max_cost_usd=1)
def test_subtask_unpriced():
    with costtrace.task("parent"):
        with costtrace.task("child"):
            costtrace.record_llm_call("openai", "my-finetune-xyz", 1000, 100)
""",
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*task 'parent' (id *) cost $0.00042 > max_cost_usd $0.0003"
            " (1 call, 1 attempt; $0.00021 of it in subtasks)*",
            "*task 'parent' (id *) cost is incomplete: 1 call in its subtasks unpriced*",
        ]
    )


def test_marker_checks_the_body_only_and_leaves_a_failing_body_alone(pytester: pytest.Pytester):
    result = run(
        pytester,
        """
@pytest.fixture
def warm_up():
    resolve(calls=9)   # in set-up: not the body's

@pytest.mark.costtrace(max_llm_calls=1)
def test_body_only(warm_up):
    resolve()

@pytest.mark.costtrace(max_llm_calls=1)
def test_body_fails():
    resolve(calls=2)
    assert 1 == 2, "the body's own failure"

@pytest.mark.costtrace(max_llm_calls=1)
@pytest.mark.xfail(reason="known regression", strict=True)
def test_expected():
    resolve(calls=2)
""",
    )
    result.assert_outcomes(passed=1, failed=1, xfailed=1)
    result.stdout.fnmatch_lines(["*AssertionError: the body's own failure*"])
    result.stdout.no_fnmatch_line("*made 2 LLM calls*test_body_fails*")
    assert "costtrace: task" not in result.stdout.str()


def test_marker_applies_to_every_test_of_a_class(pytester: pytest.Pytester):
    result = run(
        pytester,
        """
@pytest.mark.costtrace(max_attempts=1)
class TestSupport:
    def test_one(self):
        resolve()

    def test_two(self):
        resolve(calls=2, retries=1)
""",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*_ TestSupport.test_two _*", "costtrace: task * took 2 attempts > max_attempts 1 *"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("0.01", "*takes keyword arguments only*"),
        ("max_cost=0.01", "*unknown argument(s) max_cost; it takes allow_none, max_attempts, *"),
        ("max_cost_usd=-1", "*max_cost_usd=-1 must be >= 0*"),
        ("max_attempts=1.5", "*max_attempts=1.5 must be an int >= 0*"),
        ("task=['a']", "*task=[[]'a'[]] must be a task name (str) or None"),
    ],
)
def test_a_bad_marker_argument_fails_the_test_with_the_fix(pytester: pytest.Pytester, args: str, message: str):
    result = run(pytester, f"@pytest.mark.costtrace({args})\ndef test_bad():\n    resolve()\n")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([message])
    assert "During handling" not in result.stdout.str()


# --- --costtrace-report ------------------------------------------------------------------------------


def test_report_summarises_tasks_by_name(pytester: pytest.Pytester):
    result = run(
        pytester,
        """
def test_a():
    resolve()
    resolve(calls=3, retries=2)

def test_b():
    resolve(name="triage")
    with costtrace.task("triage"):
        costtrace.record_llm_call("openai", "my-finetune-xyz", 1000, 100)
""",
        "--costtrace-report",
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*- costtrace: tasks run by the tests -*",
            "task             tasks      mean cost       max cost  attempts mean/max  unpriced tasks",
            "resolve_ticket       2       $0.00042       $0.00063              2.0/3               0",
            # The unpriced triage task makes both figures lower bounds, and the row says so.
            "triage               2    >=$0.000105     >=$0.00021              1.0/1               1",
            "cost: the task's calls and its subtasks', as max_cost_usd counts it",
            "1 task had unpriced calls (no price or unknown usage): the costs on their rows are lower bounds (>=)",
        ]
    )


def test_report_with_no_task(pytester: pytest.Pytester):
    result = run(pytester, "def test_plain():\n    pass\n", "--costtrace-report")
    result.stdout.fnmatch_lines(["*- costtrace: tasks run by the tests -*", "no costtrace task ran"])


# --- The assertion helpers, without pytest's plugin ------------------------------------------------------


def _resolve(calls: int = 1, retries: int = 0, model: str = "gpt-4o-mini") -> costtrace.Task:
    with costtrace.task("resolve_ticket") as t:
        for i in range(calls):
            if i and i <= retries:
                t.retry(reason="validation_failed")
            costtrace.record_llm_call("openai", model, 1000, 100)
    return t


def test_assert_task_cost_passes_at_the_limit_and_fails_past_it():
    t = _resolve()
    assert_task_cost(t, "0.00021")
    assert_task_cost(t.summary, Decimal("0.01"))
    with pytest.raises(AssertionError) as info:
        assert_task_cost(t, 0.0002)
    assert str(info.value) == (
        f"task 'resolve_ticket' (id {t.id}) cost $0.00021 > max_cost_usd $0.0002 (1 call, 1 attempt)"
    )


def test_assert_task_cost_fails_an_unpriced_task_unless_told_not_to():
    t = _resolve(model="my-finetune-xyz")
    with pytest.raises(AssertionError, match=r"cost is incomplete: 1 of its 1 call unpriced .* \$0 is only a lower"):
        assert_task_cost(t, 1)
    assert_task_cost(t, 1, require_priced=False)


def test_assert_task_cost_sees_unpriced_subtasks_among_the_captured_tasks():
    with capture() as got:
        with costtrace.task("parent") as parent:
            with costtrace.task("child"):
                costtrace.record_llm_call("openai", "my-finetune-xyz", 1000, 100)
    # The parent's summary knows its finished subtasks' unpriced calls: no list of subtasks needed.
    assert parent.summary.cost_usd is None and parent.summary.subtasks_unpriced_calls == 1
    with pytest.raises(AssertionError, match="1 call in its subtasks unpriced"):
        assert_task_cost(parent, 1)
    with pytest.raises(AssertionError, match="1 call in its subtasks unpriced"):
        assert_task_cost(parent, 1, subtasks=got.tasks)
    assert_task_cost(parent, 1, require_priced=False)  # the lower bound, $0, is under $1


def test_assert_attempts_tokens_and_calls():
    t = _resolve(calls=3, retries=2)
    assert_attempts(t, 3)
    assert_tokens_per_task(t, 3300)
    assert_llm_calls(t, 3)
    with pytest.raises(AssertionError, match=r"took 3 attempts > max_attempts 2 \(2 retries, 0 escalations\)"):
        assert_attempts(t, 2)
    with pytest.raises(AssertionError, match=r"used 3300 tokens > max_tokens_per_task 3299 \(3000 input \+ 300 output"):
        assert_tokens_per_task(t, 3299)
    with pytest.raises(AssertionError, match=r"made 3 LLM calls > max_llm_calls 2"):
        assert_llm_calls(t, 2)


def test_helpers_reject_a_bad_limit_with_a_config_error():
    t = _resolve()
    with pytest.raises(costtrace.ConfigError, match="max_cost_usd"):
        assert_task_cost(t, "a lot")
    with pytest.raises(costtrace.ConfigError, match="max_attempts=True must be an int >= 0"):
        assert_attempts(t, True)


def test_capture_is_thread_safe():
    with capture() as got:
        threads = [threading.Thread(target=lambda: [_resolve() for _ in range(20)]) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert len(got.tasks) == 80 and len(got.calls) == 80
