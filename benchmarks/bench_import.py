"""What ``import costtrace`` costs beyond OpenTelemetry's own import, and where the deferred cost lands.

Run: ``python benchmarks/bench_import.py [-n 15]``. Each sample is a fresh interpreter (one warm-up run
first, so ``.pyc`` files exist); the configurations alternate so that machine noise hits both. Prints a
table of medians and minimums; no assertions.

- ``otel``: ``import opentelemetry.trace, opentelemetry.metrics, opentelemetry.context``, and VmRSS after.
- ``costtrace``: the same, then ``import costtrace`` (timed alone: its time beyond OpenTelemetry), VmRSS
  after; then the first ``with costtrace.task("t"): pass`` and the first priced ``llm_call`` inside a
  task (``set_usage``; this one loads the price catalog and genai-prices' data), each timed alone.

It also lists which heavy modules ``import costtrace`` leaves in ``sys.modules`` (there should be none).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

HEAVY = (
    "sqlalchemy",
    "tiktoken",
    "genai_prices",
    "opentelemetry.sdk",
    "costtrace.spend",
    "costtrace.price.catalog",
    "costtrace.price.lookup",
    "costtrace.price.tokens",
    "costtrace.cli",
    "costtrace.config",
    "costtrace.content",
    "costtrace.calls",
    "costtrace.tasks",
    "importlib.resources",
)

_PRELUDE = """
import json, sys, time
def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
out = {}
t = time.perf_counter()
import opentelemetry.trace, opentelemetry.metrics, opentelemetry.context
out["otel_ms"] = (time.perf_counter() - t) * 1e3
out["otel_rss_kb"] = rss_kb()
"""

OTEL_ONLY = _PRELUDE + "print(json.dumps(out))\n"

WITH_COSTTRACE = (
    _PRELUDE
    + f"heavy = {HEAVY!r}\n"
    + """
t = time.perf_counter()
import costtrace
out["import_ms"] = (time.perf_counter() - t) * 1e3
out["rss_kb"] = rss_kb()
out["heavy"] = sorted({h for h in heavy for m in sys.modules if m == h or m.startswith(h + ".")})
t = time.perf_counter()
with costtrace.task("t"):
    pass
out["first_task_ms"] = (time.perf_counter() - t) * 1e3
t = time.perf_counter()
with costtrace.task("t2"):
    with costtrace.llm_call(provider="openai", model="gpt-4o-mini") as call:
        call.set_usage(input_tokens=900, output_tokens=120)
out["first_call_ms"] = (time.perf_counter() - t) * 1e3
assert costtrace.last_finished_task().cost_usd > 0
out["after_call_rss_kb"] = rss_kb()
print(json.dumps(out))
"""
)


def run(code: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSTTRACE_", "OTEL_"))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=15, help="fresh interpreters per configuration (default 15)")
    args = parser.parse_args()

    run(OTEL_ONLY), run(WITH_COSTTRACE)  # warm-up: compile .pyc files
    otel: list[dict[str, Any]] = []
    ct: list[dict[str, Any]] = []
    for _ in range(args.n):
        otel.append(run(OTEL_ONLY))
        ct.append(run(WITH_COSTTRACE))

    def col(rows: list[dict[str, Any]], key: str) -> list[float]:
        return [float(row[key]) for row in rows]

    def line(label: str, values: list[float], unit: str) -> None:
        print(f"{label:52} {statistics.median(values):9.1f} {min(values):9.1f}  {unit}")

    print(f"python {sys.version.split()[0]}, {args.n} fresh interpreters per configuration")
    print(f"{'':52} {'median':>9} {'min':>9}")
    line("import opentelemetry.{trace,metrics,context}", col(otel, "otel_ms"), "ms")
    line("import costtrace, beyond OpenTelemetry", col(ct, "import_ms"), "ms")
    line("  then first `with costtrace.task('t'): pass`", col(ct, "first_task_ms"), "ms")
    line("  then first priced llm_call in a task (loads prices)", col(ct, "first_call_ms"), "ms")
    totals = [sum(float(row[k]) for k in ("import_ms", "first_task_ms", "first_call_ms")) for row in ct]
    line("  import + first task + first priced call", totals, "ms")
    otel_mb = statistics.median(col(otel, "otel_rss_kb")) / 1024
    line("VmRSS after OpenTelemetry (own process)", [v / 1024 for v in col(otel, "otel_rss_kb")], "MB")
    line("VmRSS after import costtrace", [v / 1024 for v in col(ct, "rss_kb")], "MB")
    deltas = [(r - o) / 1024 for r, o in zip(col(ct, "rss_kb"), col(ct, "otel_rss_kb"), strict=True)]
    line("  of which import costtrace (same process)", deltas, "MB")
    vs_otel_mb = statistics.median(col(ct, "rss_kb")) / 1024 - otel_mb
    print(f"{'  vs the OpenTelemetry-only process (medians)':52} {vs_otel_mb:9.1f}            MB")
    line("VmRSS after the first priced call", [v / 1024 for v in col(ct, "after_call_rss_kb")], "MB")
    heavy = sorted({h for row in ct for h in row["heavy"]})
    print("heavy modules in sys.modules after import costtrace:", ", ".join(heavy) or "none")


if __name__ == "__main__":
    main()
