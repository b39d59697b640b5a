"""A process that spends against the ledger's budgets: run by the hard-cap tests as a subprocess.

    python tests/ledger/spender.py URL BUDGETS_JSON --calls N --threads T [--clock-offset-s S] [--wait-go]

Each thread makes calls with ``costtrace.llm_call`` (gpt-4o-mini, input text and ``max_tokens`` set,
actual usage at most the worst case) until it has made ``--calls`` attempts. It prints one JSON line:
``{"sent": n, "blocked": n, "errors": [...]}``; an exception of any other kind is an error. With
``--wait-go`` it first prints ``ready`` and starts spending when a line arrives on stdin, so that the
test starts every process together however long each took to start.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("budgets")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock-offset-s", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pace-s", type=float, default=0.0)
    parser.add_argument("--wait-go", action="store_true", help="print 'ready', start on a line from stdin")
    parser.add_argument(
        "--clock-at-go", type=float, default=0.0, help="epoch seconds the clock reads when first read after go"
    )
    args = parser.parse_args()
    offset = [int(args.clock_offset_s * 1e9)]
    set_at_next_read: list[int] = []  # set by the first spending thread to read the clock after go
    clock_lock = threading.Lock()
    if args.clock_offset_s or args.clock_at_go:
        real_time_ns = time.time_ns

        def fake_time_ns() -> int:  # a clock set near a period boundary (calls read it)
            now = real_time_ns()
            if set_at_next_read and threading.current_thread().name.startswith("spender-"):
                with clock_lock:
                    if set_at_next_read:
                        offset[0] = set_at_next_read.pop() - now
            return now + offset[0]

        time.time_ns = fake_time_ns

    import costtrace
    from costtrace.spend.budgets import Budget

    budgets = [Budget.from_json(json.dumps(b)) for b in json.loads(args.budgets)]
    costtrace.configure_ledger(args.url, budgets=budgets)
    sent = blocked = 0
    errors: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        nonlocal sent, blocked
        rng = random.Random(args.seed * 1000 + n)
        for _ in range(args.calls):
            try:
                with costtrace.task("spend", feature="support"):
                    with costtrace.llm_call(
                        provider="openai", model="gpt-4o-mini", max_tokens=200, input="word " * 300
                    ) as call:
                        call.set_usage(input_tokens=rng.randint(100, 300), output_tokens=rng.randint(0, 200))
                with lock:
                    sent += 1
            except costtrace.BudgetExceeded:
                with lock:
                    blocked += 1
            except Exception as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
            if args.pace_s:
                time.sleep(args.pace_s)

    if args.wait_go:  # every process starts together
        print("ready", flush=True)
        sys.stdin.readline()
    if args.clock_at_go:  # the first call reads it however late its thread starts
        set_at_next_read.append(int(args.clock_at_go * 1e9))
    threads = [threading.Thread(target=work, args=(n,), name=f"spender-{n}") for n in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = costtrace.close_ledger(timeout_s=30)
    print(json.dumps({"sent": sent, "blocked": blocked, "errors": errors, "closed": ok}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
