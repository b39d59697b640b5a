"""The quantile sketch (``costtrace.spend.sketch``): µs per add, per merge, per quantile and bytes per sketch.

Run: ``python benchmarks/bench_sketch.py [--values 1000000]``. Prints one line per case; no assertions.
Values are drawn with a fixed seed: latencies log-uniform over 1 ms .. 1 h (floats), costs log-uniform
over 1 .. 10^12 nano-USD (ints), tokens 50 .. 200,000 (ints), attempts 1..5 (ints).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from costtrace.spend.sketch import QuantileSketch


def shapes(n: int) -> dict[str, list[int | float]]:
    rng = random.Random(14)
    return {
        "latency 1 ms..1 h (float)": [10 ** rng.uniform(-3, 3.556) for _ in range(n)],
        "cost 1..1e12 nano-USD (int)": [round(10 ** rng.uniform(0, 12)) for _ in range(n)],
        "tokens 50..200k (int)": [round(10 ** rng.uniform(1.7, 5.3)) for _ in range(n)],
        "attempts 1..5 (int)": [min(5, 1 + int(rng.expovariate(1.5))) for _ in range(n)],
    }


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--values", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.values
    print(f"{n:,} values per sketch, best of {args.repeats}")
    for name, values in shapes(n).items():

        def fill(values: list[int | float] = values) -> QuantileSketch:
            sketch = QuantileSketch()
            add = sketch.add
            for value in values:
                add(value)
            return sketch

        add_s = best_of(args.repeats, fill)
        sketch = fill()
        data = sketch.to_bytes()
        # merging: the 1,000 daily x group rollups a report reads, each a sketch of n/1000 values
        parts = [QuantileSketch() for _ in range(1000)]
        for i, value in enumerate(values):
            parts[i % 1000].add(value)

        def merge_all(parts: list[QuantileSketch] = parts) -> QuantileSketch:
            total = QuantileSketch()
            for part in parts:
                total.merge(part)
            return total

        merge_s = best_of(args.repeats, merge_all)
        assert merge_all().to_bytes() == data  # exact merge: the benchmark's own sanity check
        part_bytes = sum(len(p.to_bytes()) for p in parts) / len(parts)
        blobs = [p.to_bytes() for p in parts]
        decode_s = best_of(args.repeats, lambda blobs=blobs: [QuantileSketch.from_bytes(b) for b in blobs])
        encode_s = best_of(args.repeats, lambda parts=parts: [p.to_bytes() for p in parts])
        quantile_s = best_of(args.repeats, lambda: [sketch.quantiles((0.5, 0.95)) for _ in range(100)])
        print(
            f"{name:30} add {add_s / n * 1e6:5.2f} µs | merge {merge_s / len(parts) * 1e6:6.1f} µs"
            f" (sketch of {n // 1000:,}) | whole: {sketch.bucket_count:5,} buckets, {len(data):6,} bytes"
            f" | part: {part_bytes:6,.0f} bytes, encode {encode_s / len(parts) * 1e6:5.1f} µs,"
            f" decode {decode_s / len(parts) * 1e6:5.1f} µs | p50+p95 {quantile_s / 100 * 1e6:5.1f} µs"
        )


if __name__ == "__main__":
    main()
