"""`import costtrace` imports almost nothing; each public name is imported the first time it is used.

Each test runs in a fresh interpreter: in this one, other tests have already imported everything.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import costtrace

INIT = Path(costtrace.__file__)

NOT_AT_IMPORT = (
    "sqlalchemy",
    "tiktoken",
    "genai_prices",
    "opentelemetry.sdk",
    "costtrace.spend",  # ledger, budgets, alerts, webhooks, admission, outcome rules
    "costtrace.cli",
    "costtrace.config",
    "costtrace.content",
    "costtrace.instrumentation",
    "costtrace.price.catalog",
    "costtrace.price.lookup",
    "costtrace.price.tokens",
    "costtrace.analysis",
)

NOT_FOR_A_TASK_AND_A_CALL = (
    "sqlalchemy",
    "tiktoken",
    "opentelemetry.sdk",
    "costtrace.spend",  # no budget configured: no hard-cap admission to import
    "costtrace.cli",
    "costtrace.config",
    "costtrace.content",
    "costtrace.instrumentation",
    "costtrace.price.tokens",
    "costtrace.analysis",
)


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def loaded(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_import_costtrace_loads_none_of_the_modules_a_first_task_does_not_need():
    out = run(
        """
        import json, sys
        before = set(sys.modules)
        import costtrace
        print(json.dumps(sorted(set(sys.modules) - before)))
        """
    )
    new = set(json.loads(out))
    assert loaded(new, NOT_AT_IMPORT) == []
    assert loaded(new, ("costtrace",)) == ["costtrace", "costtrace._moved", "costtrace._version"]


def test_a_task_and_a_priced_call_after_a_lazy_import_import_no_spend_config_or_tokenizer():
    out = run(
        """
        import json, sys
        import costtrace
        costtrace.set_price("lazy-llm", provider="acme", input_per_mtok=2, output_per_mtok=8)
        with costtrace.task("t") as t:
            with costtrace.llm_call(provider="openai", model="gpt-4o-mini") as first:
                first.set_usage(input_tokens=900, output_tokens=120)
            with costtrace.llm_call(provider="acme", model="lazy-llm") as second:
                second.set_usage(input_tokens=1000, output_tokens=500)
        modules = sorted(sys.modules)
        print(json.dumps({
            "modules": modules,
            "costs": [str(first.record.cost.total_usd), str(second.record.cost.total_usd)],
            "task_cost": str(t.summary.cost_usd),
        }))
        """
    )
    result = json.loads(out)
    assert loaded(set(result["modules"]), NOT_FOR_A_TASK_AND_A_CALL) == []
    from genai_prices import Usage as GPUsage
    from genai_prices import calc_price

    expected = calc_price(GPUsage(input_tokens=900, output_tokens=120), "gpt-4o-mini", provider_id="openai")
    costs = [Decimal(cost) for cost in result["costs"]]
    assert costs == [expected.total_price, Decimal("0.006")]  # 1000 x $2/M + 500 x $8/M
    assert Decimal(result["task_cost"]) == expected.total_price + Decimal("0.006")


def test_every_public_name_resolves_in_a_fresh_interpreter_both_ways():
    out = run(
        """
        import json
        import costtrace
        names = list(costtrace.__all__)
        by_attribute = {name: repr(type(getattr(costtrace, name))) for name in names}
        for name in names:
            exec(f"from costtrace import {name}")
        print(json.dumps({"names": names, "dir": dir(costtrace), "n": len(by_attribute)}))
        """
    )
    result = json.loads(out)
    assert result["n"] == len(result["names"]) == len(costtrace.__all__)
    assert set(result["names"]) <= set(result["dir"])


def test_from_costtrace_import_a_name_works_as_the_first_use():
    out = run(
        """
        from costtrace import Budget, ConfigError, record_llm_call, task
        print(Budget.__module__, ConfigError.__module__, record_llm_call.__module__, task.__module__)
        """
    )
    assert out.split() == ["costtrace.spend.budgets", "costtrace.errors", "costtrace.calls", "costtrace.tasks"]


def test_an_unknown_name_is_an_attribute_error_and_an_old_module_path_is_not_imported_by_hasattr():
    out = run(
        """
        import sys, warnings
        warnings.simplefilter("error")
        import costtrace
        print(hasattr(costtrace, "no_such_name"), hasattr(costtrace, "pricing"), "costtrace.pricing" in sys.modules)
        """
    )
    assert out.split() == ["False", "False", "False"]


def test_modules_that_import_costtrace_used_to_load_are_still_reachable_as_attributes():
    out = run(
        """
        import costtrace
        print(costtrace.tasks.current_task() is None, costtrace.errors.ConfigError is costtrace.ConfigError)
        """
    )
    assert out.split() == ["True", "True"]


def test_threads_racing_for_the_first_use_of_a_name_get_the_same_object():
    out = run(
        """
        import threading
        import costtrace
        barrier = threading.Barrier(8)
        seen = []
        def first_use():
            barrier.wait()
            seen.append(costtrace.llm_call)
        threads = [threading.Thread(target=first_use) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        import costtrace.calls
        print(len(seen), all(s is costtrace.calls.LLMCall for s in seen))
        """
    )
    assert out.split() == ["8", "True"]


def test_the_lazy_table_matches_what_type_checkers_see():
    """``_LAZY`` (run time) and the ``if TYPE_CHECKING:`` imports (type checkers) name the same modules."""
    tree = ast.parse(INIT.read_text())
    ifs = [node for node in tree.body if isinstance(node, ast.If)]
    (block,) = [node for node in ifs if ast.unparse(node.test) == "_typing.TYPE_CHECKING"]
    typed = {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert typed == costtrace._LAZY
    assert set(typed) == set(costtrace.__all__) - {"__version__"}
