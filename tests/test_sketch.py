"""The quantile sketch: within its stated relative error of exact nearest-rank quantiles, merged exactly.

Every shape below is enumerated (no random sampling); the reference is a plain sort.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costtrace.errors import ConfigError
from costtrace.spend.sketch import EXACT_INTEGERS_UP_TO, FORMAT_VERSION, QuantileSketch

ALPHA = 0.01
Q_GRID = (0, 0.01, 0.05, 0.5, 0.9, 0.95, 0.99, 1)

Value = int | float


def nearest_rank(values: list[Value], q: float) -> Value:
    """The ceil(q*n)-th smallest (1-based), q read as the decimal it prints as; q=0 -> the smallest."""
    ordered = sorted(values)
    if q == 0:
        return ordered[0]
    rank = math.ceil(Fraction(str(q)) * len(ordered))
    return ordered[rank - 1]


def sketch_of(values: list[Value], alpha: float = ALPHA) -> QuantileSketch:
    sketch = QuantileSketch(relative_accuracy=alpha)
    for value in values:
        sketch.add(value)
    return sketch


def _geometric(start: float, stop: float, n: int) -> list[float]:
    ratio = (stop / start) ** (1 / (n - 1))
    return [start * ratio**i for i in range(n)]


SHAPES: dict[str, list[Value]] = {
    "one int": [7],
    "one float": [0.37],
    "all equal ints": [42] * 1000,
    "all equal floats": [3.3] * 500,
    "zeros only": [0] * 10,
    "zero floats only": [0.0] * 3,
    "zeros mixed": [0] * 30 + list(range(1, 71)),
    "mostly zeros": [0] * 96 + [5, 900, 10**6, 10**9],
    "ramp 1..10000": list(range(1, 10_001)),
    "ramp reversed": list(range(10_000, 0, -1)),
    "geometric 1.1^k": [1.1**k for k in range(300)],
    "two clusters far apart": [1e-3 * (1 + i / 100) for i in range(100)] + [1e9 * (1 + i / 100) for i in range(100)],
    "heavy tail 1.5^k": [1.5**k for k in range(120)],
    "heavy tail ints": [round(1.5**k) for k in range(80)],
    "heavy tail repeated": [1.5 ** (k % 40) for k in range(4000)],
    "attempts 1..5": [1] * 700 + [2] * 200 + [3] * 60 + [4] * 30 + [5] * 10,
    "latency 1 ms..1 h": _geometric(1e-3, 3600.0, 2000),
    "latency 1 ns..1 h": _geometric(1e-9, 3600.0, 500),
    "cost nano-USD 1..1e12": [round(x) for x in _geometric(1.0, 1e12, 3000)],
    "cost nano-USD near 2^53": [2**53 - 5 + i for i in range(10)] + [10**15, 3 * 10**16],
    "tokens": [120 + 37 * i for i in range(5000)],
    "ints 0..57 twice": list(range(EXACT_INTEGERS_UP_TO + 1)) * 2,
    "ints and floats": [1, 2, 3, 4.5, 10, 0, 0.25, 1000, 99.9, 7],
    "half-integers": [k / 2 for k in range(1, 400)],
}


def test_empty_sketch() -> None:
    sketch = QuantileSketch()
    for q in Q_GRID:
        assert sketch.quantile(q) is None
    assert (sketch.count, sketch.min, sketch.max, sketch.sum, sketch.bucket_count) == (0, None, None, 0, 0)
    assert QuantileSketch.from_bytes(sketch.to_bytes()) == sketch


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("q", Q_GRID)
def test_quantile_within_alpha_of_exact_nearest_rank(name: str, q: float) -> None:
    values = SHAPES[name]
    exact = nearest_rank(values, q)
    estimate = sketch_of(values).quantile(q)
    assert estimate is not None
    assert abs(estimate - exact) <= ALPHA * exact, (name, q, exact, estimate)


@pytest.mark.parametrize("name", ["ramp 1..10000", "latency 1 ms..1 h", "cost nano-USD 1..1e12", "zeros mixed"])
def test_every_rank_within_alpha(name: str) -> None:
    """Not only the grid: q = r/n for every rank r of a thinned copy of the shape."""
    values = SHAPES[name][::7]
    sketch = sketch_of(values)
    n = len(values)
    for rank in range(1, n + 1):
        q = rank / n
        exact = nearest_rank(values, q)
        estimate = sketch.quantile(q)
        assert estimate is not None
        assert abs(estimate - exact) <= ALPHA * exact, (rank, exact, estimate)


@pytest.mark.parametrize("alpha", [0.001, 0.005, 0.02, 0.05, 0.2])
@pytest.mark.parametrize("name", ["ramp 1..10000", "latency 1 ms..1 h", "heavy tail ints", "two clusters far apart"])
def test_other_accuracies_keep_their_bound(alpha: float, name: str) -> None:
    values = SHAPES[name]
    sketch = sketch_of(values, alpha)
    for q in Q_GRID:
        exact = nearest_rank(values, q)
        estimate = sketch.quantile(q)
        assert estimate is not None
        assert abs(estimate - exact) <= alpha * exact, (q, exact, estimate)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    values=st.lists(
        st.one_of(
            st.integers(min_value=0, max_value=10**13),
            st.floats(min_value=1e-9, max_value=1e7, allow_nan=False, allow_infinity=False),
            st.just(0),
        ),
        min_size=1,
        max_size=60,
    ),
    q=st.sampled_from([*Q_GRID, 0.25, 0.75, 0.07, 1 / 3]),
)
def test_property_bound_and_split_merge(values: list[Value], q: float) -> None:
    whole = sketch_of(values)
    estimate = whole.quantile(q)
    exact = nearest_rank(values, q)
    assert estimate is not None and abs(estimate - exact) <= ALPHA * exact
    left, right = sketch_of(values[::2]), sketch_of(values[1::2])
    left.merge(right)
    assert left.to_bytes() == whole.to_bytes()


def test_small_integers_come_back_exact() -> None:
    values = SHAPES["ints 0..57 twice"]
    sketch = sketch_of(values)
    n = len(values)
    for rank in range(1, n + 1):
        assert sketch.quantile(rank / n) == nearest_rank(values, rank / n)
    attempts = sketch_of(SHAPES["attempts 1..5"])
    assert [attempts.quantile(q) for q in Q_GRID] == [nearest_rank(SHAPES["attempts 1..5"], q) for q in Q_GRID]
    assert [attempts.quantile(q) for q in Q_GRID] == [1, 1, 1, 1, 2, 3, 4, 5]


def test_exact_integer_bound_is_where_buckets_start_sharing() -> None:
    """Every integer up to EXACT_INTEGERS_UP_TO has a bucket of its own; the next one shares its bucket."""
    sketch = QuantileSketch()
    keys = [sketch._key(k) for k in range(1, EXACT_INTEGERS_UP_TO + 3)]
    assert len(set(keys[:EXACT_INTEGERS_UP_TO])) == EXACT_INTEGERS_UP_TO
    assert keys[EXACT_INTEGERS_UP_TO] == keys[EXACT_INTEGERS_UP_TO + 1]


def test_nearest_rank_reads_q_as_its_decimal() -> None:
    values = list(range(1, 51))  # all below EXACT_INTEGERS_UP_TO: the answers are exact
    sketch = sketch_of(values)
    assert sketch.quantile(0.14) == 7  # 0.14 * 50 in binary is 7.000000000000001: not the 8th
    assert sketch.quantile(0.56) == 28  # 28.000000000000004 in binary
    assert sketch.quantile(0.95) == 48  # ceil(47.5)
    assert sketch.quantile(0.001) == 1
    assert sketch.quantile(0) == 1 and sketch.quantile(1) == 50


def test_exact_extremes_count_and_sum() -> None:
    sketch = sketch_of([5, 3, 0, 1000, 17])
    assert (sketch.min, sketch.max, sketch.count, sketch.sum) == (0, 1000, 5, 1025)
    assert type(sketch.min) is int and type(sketch.max) is int
    assert sketch.quantile(0) == 0 and sketch.quantile(1) == 1000 and sketch.quantile(0.2) == 0
    sketch.add(2.5)
    assert (sketch.min, sketch.max, sketch.sum) == (0.0, 1000.0, None)
    assert type(sketch.min) is float and type(sketch.max) is float
    floats = sketch_of([0.123456789, 3599.987654321])
    assert (floats.quantile(0), floats.quantile(1)) == (0.123456789, 3599.987654321)


def test_add_with_count_equals_repeated_adds() -> None:
    by_count = QuantileSketch()
    by_count.add(3, count=1000)
    by_count.add(0, count=5)
    by_count.add(0.75, count=2)
    assert by_count == sketch_of([3] * 1000 + [0] * 5 + [0.75] * 2)
    assert by_count.count == 1007


def test_huge_sum_is_exact() -> None:
    sketch = QuantileSketch()
    sketch.add(10**18, count=10**6)
    sketch.add(1)
    assert sketch.sum == 10**24 + 1
    assert QuantileSketch.from_bytes(sketch.to_bytes()).sum == 10**24 + 1


# -- merging -----------------------------------------------------------------------------------------------

MERGE_SHAPES = [
    "zeros mixed",
    "ramp 1..10000",
    "latency 1 ms..1 h",
    "two clusters far apart",
    "ints and floats",
    "attempts 1..5",
    "cost nano-USD 1..1e12",
]


def _chunks(values: list[Value], k: int) -> list[list[Value]]:
    size = -(-len(values) // k)
    return [values[i * size : (i + 1) * size] for i in range(k)]


def _round_robin(values: list[Value], k: int) -> list[list[Value]]:
    return [values[i::k] for i in range(k)]


def _left_fold(parts: list[QuantileSketch]) -> QuantileSketch:
    total = QuantileSketch()
    for part in parts:
        total.merge(part)
    return total


def _into_last(parts: list[QuantileSketch]) -> QuantileSketch:
    total = parts[-1].copy()
    for part in reversed(parts[:-1]):
        total.merge(part)
    return total


def _tree(parts: list[QuantileSketch]) -> QuantileSketch:
    level = [p.copy() for p in parts]
    while len(level) > 1:
        merged = []
        for i in range(0, len(level) - 1, 2):
            level[i + 1].merge(level[i])  # right into left's sibling: another order again
            merged.append(level[i + 1])
        if len(level) % 2:
            merged.append(level[-1])
        level = merged
    return level[0]


SPLITS: list[Callable[[list[Value], int], list[list[Value]]]] = [_chunks, _round_robin]
FOLDS: list[Callable[[list[QuantileSketch]], QuantileSketch]] = [_left_fold, _into_last, _tree]


@pytest.mark.parametrize("name", MERGE_SHAPES)
@pytest.mark.parametrize("ways", [2, 3, 7])
def test_merging_any_split_in_any_order_gives_the_whole(name: str, ways: int) -> None:
    values = SHAPES[name]
    whole = sketch_of(values).to_bytes()
    for split in SPLITS:
        for ordering in (lambda v: v, lambda v: v[::-1]):
            parts = [sketch_of(part) for part in split(ordering(values), ways)]
            for fold in FOLDS:
                merged = fold(parts)
                assert merged.to_bytes() == whole, (split.__name__, fold.__name__)
                assert merged == sketch_of(values)


def test_merge_is_commutative_and_associative_with_mixed_types() -> None:
    a, b, c = sketch_of([3, 0, 9]), sketch_of([2.5, 1e6]), sketch_of([10**12, 7])
    ab_c, a_bc, cba = a.copy(), a.copy(), c.copy()
    ab_c.merge(b)
    ab_c.merge(c)
    bc = b.copy()
    bc.merge(c)
    a_bc.merge(bc)
    cba.merge(b)
    cba.merge(a)
    assert ab_c.to_bytes() == a_bc.to_bytes() == cba.to_bytes() == sketch_of([3, 0, 9, 2.5, 1e6, 10**12, 7]).to_bytes()
    ints_first = sketch_of([5])
    ints_first.merge(sketch_of([0.5]))
    floats_first = sketch_of([0.5])
    floats_first.merge(sketch_of([5]))
    assert ints_first.to_bytes() == floats_first.to_bytes()
    assert type(floats_first.max) is float


def test_merge_with_empty_and_with_itself() -> None:
    sketch = sketch_of([1, 2, 3])
    before = sketch.to_bytes()
    sketch.merge(QuantileSketch())
    assert sketch.to_bytes() == before
    empty = QuantileSketch()
    empty.merge(sketch)
    assert empty.to_bytes() == before
    sketch.merge(sketch)
    assert sketch == sketch_of([1, 2, 3, 1, 2, 3])


def test_merge_leaves_the_other_unchanged() -> None:
    a, b = sketch_of([1, 2]), sketch_of([3.5])
    snapshot = b.to_bytes()
    a.merge(b)
    assert b.to_bytes() == snapshot


# -- serialization -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHAPES)
def test_round_trip(name: str) -> None:
    sketch = sketch_of(SHAPES[name])
    data = sketch.to_bytes()
    back = QuantileSketch.from_bytes(data)
    assert back == sketch
    assert back.to_bytes() == data
    assert (type(back.min), type(back.max)) == (type(sketch.min), type(sketch.max))
    assert [back.quantile(q) for q in Q_GRID] == [sketch.quantile(q) for q in Q_GRID]
    assert QuantileSketch.from_bytes(bytearray(data)) == sketch
    assert QuantileSketch.from_bytes(memoryview(data)) == sketch


def test_encoding_is_stable() -> None:
    """The bytes of a known sketch: a change of format must change FORMAT_VERSION."""
    sketch = sketch_of([0, 1, 2, 2, 100])
    expected = (
        b"QS\x01"
        + struct.pack(">d", 0.01)
        + b"\x01"  # int-only
        + b"\x01"  # one zero
        + b"\x03"  # three buckets
        + b"\x00\x01"  # key 0 (zigzag 0), count 1
        + b"\x22\x02"  # key 35 (gap 35 - 0 - 1 = 34), count 2
        + b"\xc3\x01\x01"  # key 231 (gap 195), count 1
        + b"\x00\x64"  # min 0, max 100
        + b"\x69"  # sum 105
    )
    assert sketch.to_bytes() == expected
    assert FORMAT_VERSION == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "ends too early"),
        (b"XX\x01", "not a quantile sketch"),
        (b"QS\x02" + bytes(20), "format version 2 is not known"),
        (b"QS\x01" + struct.pack(">d", 0.0) + b"\x00\x00\x00", "relative_accuracy 0.0"),
        (b"QS\x01" + struct.pack(">d", math.nan) + b"\x00\x00\x00", "relative_accuracy nan"),
        (b"QS\x01" + struct.pack(">d", 0.01) + b"\x04\x00\x00", "unknown flags"),
        (b"QS\x01" + struct.pack(">d", 0.01) + b"\x00\x00\x00" + b"\x00", "trailing bytes"),
        (b"QS\x01" + struct.pack(">d", 0.01) + b"\x00\x00\x7f", "127 buckets in"),
        (b"QS\x01" + struct.pack(">d", 0.01) + b"\x00\x00\x01\x00\x00" + bytes(16), "count 0"),
        (b"QS\x01" + struct.pack(">d", 0.01) + b"\x01\x00\x00\x05", "empty sketch with a sum"),
        # one bucket (key 0: the value 1) whose max says 100
        (b"QS\x01" + struct.pack(">d", 0.01) + b"\x01\x00\x01\x00\x01\x01\x64\x01", "outside the highest bucket"),
        # min 0 without any zero
        (b"QS\x01" + struct.pack(">d", 0.01) + b"\x01\x00\x01\x00\x01\x00\x01\x01", "min 0 with 0 zeros"),
        # the value 1 with a sum of 7
        (b"QS\x01" + struct.pack(">d", 0.01) + b"\x01\x00\x01\x00\x01\x01\x01\x07", "sum 7"),
        # a float sketch with max nan
        (
            b"QS\x01" + struct.pack(">d", 0.01) + b"\x00\x00\x01\x00\x01" + struct.pack(">dd", 1.0, math.nan),
            "min 1.0 and max nan",
        ),
    ],
)
def test_garbage_is_refused_clearly(data: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=r"QuantileSketch\.from_bytes") as caught:
        QuantileSketch.from_bytes(data)
    assert message in str(caught.value)


@pytest.mark.parametrize("name", ["zeros mixed", "latency 1 ms..1 h", "one int", "zero floats only"])
def test_every_truncation_is_refused(name: str) -> None:
    data = sketch_of(SHAPES[name]).to_bytes()
    for end in range(len(data)):
        with pytest.raises(ConfigError, match=r"QuantileSketch\.from_bytes"):
            QuantileSketch.from_bytes(data[:end])
    empty_floats = QuantileSketch().to_bytes()
    for end in range(len(empty_floats)):
        with pytest.raises(ConfigError):
            QuantileSketch.from_bytes(empty_floats[:end])


def test_from_bytes_refuses_non_bytes() -> None:
    with pytest.raises(ConfigError, match="expected bytes, got str"):
        QuantileSketch.from_bytes("QS")  # type: ignore[arg-type]


def test_size_is_bounded_by_the_value_range() -> None:
    """Bucket counts quoted in the docs: 1 ns .. 1 h, 1 .. 1e12 nano-USD, and the whole accepted range."""
    latency = sketch_of(_geometric(1e-9, 3600.0, 20_000))
    assert latency.bucket_count <= 1447
    cost = sketch_of([round(x) for x in _geometric(1.0, 1e12, 20_000)])
    assert cost.bucket_count <= 1383
    assert len(cost.to_bytes()) < 4 * 1383
    widest = sketch_of([1e-300, 1e300])
    assert widest._key(1e300) - widest._key(1e-300) + 1 == 69_076


# -- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "must be >= 0"),
        (-0.5, "must be >= 0"),
        (-math.inf, "must be >= 0"),
        (math.nan, "not NaN"),
        (math.inf, "finite"),
        (1e301, "finite and <= 1e+300"),
        (10**301, "an int above 1e300"),
        (1e-301, "positive value must be >= 1e-300"),
        ("3", "int or a float, got str"),
        (Decimal("3"), "int or a float, got Decimal"),
        (True, "int or a float, got bool"),
        (None, "int or a float, got NoneType"),
    ],
)
def test_bad_values_are_refused_and_leave_the_sketch_unchanged(value: object, message: str) -> None:
    sketch = sketch_of([1, 2.5])
    before = sketch.to_bytes()
    with pytest.raises(ConfigError, match=r"QuantileSketch\.add") as caught:
        sketch.add(value)  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert sketch.to_bytes() == before


@pytest.mark.parametrize("count", [0, -1, 1.5, True, "2", None])
def test_bad_counts_are_refused(count: object) -> None:
    sketch = QuantileSketch()
    with pytest.raises(ConfigError, match="count must be an int >= 1"):
        sketch.add(1, count=count)  # type: ignore[arg-type]
    assert sketch.count == 0


@pytest.mark.parametrize("q", [-0.01, 1.01, math.nan, math.inf, "0.5", None, True])
def test_bad_q_is_refused(q: object) -> None:
    for sketch in (QuantileSketch(), sketch_of([1, 2, 3])):
        with pytest.raises(ConfigError, match="quantile q must be"):
            sketch.quantile(q)  # type: ignore[arg-type]


@pytest.mark.parametrize("alpha", [0, 1, -0.01, 1.5, math.nan, math.inf, "0.01", None, True])
def test_bad_accuracy_is_refused(alpha: object) -> None:
    with pytest.raises(ConfigError, match="relative_accuracy must be"):
        QuantileSketch(relative_accuracy=alpha)  # type: ignore[arg-type]


def test_merge_refuses_another_accuracy_or_type() -> None:
    sketch = sketch_of([1])
    with pytest.raises(ConfigError, match=r"relative_accuracy 0\.02 differs from 0\.01"):
        sketch.merge(sketch_of([2], alpha=0.02))
    with pytest.raises(ConfigError, match="expected a QuantileSketch, got list"):
        sketch.merge([2])  # type: ignore[arg-type]
    assert sketch == sketch_of([1])


def test_repr_and_equality() -> None:
    sketch = sketch_of([0, 4, 4.5])
    assert repr(sketch) == "QuantileSketch(relative_accuracy=0.01, count=3, min=0.0, max=4.5, buckets=2)"
    assert sketch != sketch_of([0, 4, 4.6])
    assert sketch != "sketch"
    assert sketch_of([2]) != sketch_of([2.0])  # an int-only sketch keeps its exact sum; a float one does not


def test_docstring_examples_run() -> None:
    import doctest

    from costtrace.spend import sketch

    result = doctest.testmod(sketch)
    assert result.attempted >= 10 and result.failed == 0


@pytest.mark.parametrize("name", ["zeros mixed", "mostly zeros", "latency 1 ms..1 h", "attempts 1..5", "one int"])
def test_quantiles_in_one_pass_equal_quantile_one_by_one(name: str) -> None:
    sketch = sketch_of(SHAPES[name])
    qs = [0.99, 0, 0.5, 0.5, 1, 0.01, 0.95, 0.05, 0.9]
    assert sketch.quantiles(qs) == [sketch.quantile(q) for q in qs]
    assert QuantileSketch().quantiles([0.5, 0.95]) == [None, None]
    assert sketch.quantiles([]) == []
    with pytest.raises(ConfigError, match="quantile q must be"):
        sketch.quantiles([0.5, 2])
