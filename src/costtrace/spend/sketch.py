"""A mergeable quantile sketch: p50/p95 of per-task cost, tokens, attempts and latency with a stated error.

The ledger's rollups keep one :class:`QuantileSketch` per (period, group) and metric, and merge them across
periods and groups to answer a percentile without reading every task. The design is DDSketch's (Masson,
Rim and Lee, VLDB 2019): positive values fall into log-spaced buckets, bucket ``i`` holding the values in
``(gamma**(i-1), gamma**i]`` with ``gamma = (1 + alpha) / (1 - alpha)``, and only the count per bucket is
kept. Every value of a bucket is within a relative ``alpha`` of one representative, so:

**The error bound.** ``quantile(q)`` is within ``alpha * exact`` of the exact *nearest-rank* quantile of
the values added, ``alpha`` being ``relative_accuracy`` (1% by default). The nearest-rank quantile of
``n`` values is the ``ceil(q * n)``-th smallest (1-based) for ``q`` in ``(0, 1]``, and the smallest for
``q = 0``; ``q * n`` is computed exactly with ``q`` read as the decimal it prints as, so ``q=0.07`` of
100 values is the 7th smallest, not the 8th that ``0.07`` in binary (0.07000000000000000666) would give.

**What is exact.** ``count``, ``min``, ``max``, the number of zeros (zero has its own counter, so a
median of 0 is 0), ``quantile(0)`` (the min), ``quantile(1)`` (the max), and ``sum`` while every value
added was an ``int`` (it is None once a float was added). In a sketch of ``int`` values only (cost in
nano-USD, tokens, attempts) the estimate is the value that minimises the worst relative error over the
integers its bucket can hold, and it is exact when the bucket holds one integer: every integer from 0 to
:data:`EXACT_INTEGERS_UP_TO` (57 at 1%) comes back exact, e.g. attempts 1..5. Estimates are clamped to
``[min, max]``.

**Merging is exact.** Bucket counts add, so merging the sketches of any split of the data, in any order,
gives the sketch of the whole, bucket for bucket and byte for byte (:meth:`QuantileSketch.to_bytes`).

**Size, and why no bucket is ever collapsed.** A sketch holds one bucket per occupied key: at 1%,
``ln(max / min) / ln(gamma)`` + 1 buckets at most for values in ``[min, max]``: 1,447 from 1 ns to
1 hour (``3.6e12``), 1,383 from 1 to ``10**12`` nano-USD (a billionth of a dollar to a thousand dollars),
and 69,076 over the whole accepted range ``{0} U [1e-300, 1e300]``. DDSketch caps the bucket count by
collapsing the lowest buckets; that is not done here because the ranges above already bound it, and a
collapse depends on the order of merges, which would break exact merging (and the equality of a rollup
with a recomputation from raw rows). Serialized with varints and delta-coded keys, a sketch of 10**6
latencies spread over 1 ms .. 1 h takes a few KB (see docs/performance.md).

Example:
    >>> sketch = QuantileSketch()
    >>> for attempts in (1, 1, 1, 2, 3):
    ...     sketch.add(attempts)
    >>> sketch.quantile(0.5), sketch.quantile(0.95), sketch.count, sketch.sum
    (1.0, 3.0, 5, 8)
    >>> other = QuantileSketch()
    >>> other.add(2, count=5)
    >>> sketch.merge(other)
    >>> sketch.quantile(0.5), QuantileSketch.from_bytes(sketch.to_bytes()) == sketch
    (2.0, True)
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import re
import struct
from collections.abc import Sequence
from fractions import Fraction

from costtrace.errors import ConfigError

__all__ = ["EXACT_INTEGERS_UP_TO", "FORMAT_VERSION", "MAX_VALUE", "MIN_POSITIVE", "QuantileSketch"]

MIN_POSITIVE = 1e-300
"""Smallest positive value accepted (zero is accepted too): far below a nanosecond or a nano-USD."""
MAX_VALUE = 1e300
"""Largest value accepted, so that bucket bounds stay finite floats."""
FORMAT_VERSION = 1
"""The version byte of :meth:`QuantileSketch.to_bytes`, after the magic ``b"QS"``."""
EXACT_INTEGERS_UP_TO = 57
"""At the default 1% accuracy, every integer 0..57 has a bucket of its own: exact in an int-only sketch."""

_MAGIC = b"QS"
_FLAG_INTS = 1
_DOUBLE = struct.Struct(">d")
_EXACT_FLOAT_INTS = 2.0**53
"""Above this, integers are not all floats and a bucket spans millions of them: int-only sketches use the
float estimate there (the same bound holds)."""
_MARGIN = 1e-6
"""Buckets are built for ``alpha * (1 - _MARGIN)``, so floating-point rounding in a logarithm (a value on
a bucket's edge landing in the next bucket) cannot push an estimate past the stated ``alpha``."""


def _check_accuracy(relative_accuracy: object) -> float:
    if isinstance(relative_accuracy, bool) or not isinstance(relative_accuracy, int | float):
        raise ConfigError(
            f"relative_accuracy must be a number between 0 and 1 (e.g. 0.01 for 1%), got {relative_accuracy!r}"
        )
    alpha = float(relative_accuracy)
    if not 0 < alpha < 1:  # also refuses NaN
        raise ConfigError(f"relative_accuracy must be between 0 and 1 exclusive (e.g. 0.01 for 1%), got {alpha!r}")
    return alpha


class QuantileSketch:
    """Counts of values in log-spaced buckets: quantiles within a relative error, mergeable exactly.

    Args:
        relative_accuracy: ``alpha``, the relative error bound of :meth:`quantile` (``0 < alpha < 1``);
            sketches merge only with sketches of the same accuracy.

    Raises:
        ConfigError: ``relative_accuracy`` is not a number strictly between 0 and 1.

    Example:
        >>> latency = QuantileSketch(relative_accuracy=0.01)
        >>> for seconds in (0.8, 1.2, 1.3, 2.0, 9.5):
        ...     latency.add(seconds)
        >>> p50 = latency.quantile(0.5)
        >>> abs(p50 - 1.3) <= 0.01 * 1.3, latency.min, latency.max, latency.sum
        (True, 0.8, 9.5, None)
    """

    __slots__ = ("_alpha", "_buckets", "_gamma", "_ints", "_max", "_min", "_multiplier", "_sum", "_zeros")

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        self._alpha = _check_accuracy(relative_accuracy)
        inner = self._alpha * (1 - _MARGIN)
        self._gamma = (1 + inner) / (1 - inner)
        self._multiplier = 1 / math.log(self._gamma)
        self._buckets: dict[int, int] = {}
        self._zeros = 0
        self._min: int | float | None = None
        self._max: int | float | None = None
        self._ints = True  # every value added so far was an int
        self._sum = 0  # exact, meaningful while _ints

    # -- reading ---------------------------------------------------------------------------------------

    @property
    def relative_accuracy(self) -> float:
        """``alpha``: :meth:`quantile` is within ``alpha * exact`` of the exact nearest-rank quantile."""
        return self._alpha

    @property
    def count(self) -> int:
        """How many values were added (exact)."""
        return self._zeros + sum(self._buckets.values())

    @property
    def min(self) -> int | float | None:
        """The smallest value added (exact; a float once any float was added); None when empty."""
        return self._min

    @property
    def max(self) -> int | float | None:
        """The largest value added (exact; a float once any float was added); None when empty."""
        return self._max

    @property
    def sum(self) -> int | None:
        """The exact sum while every value added was an ``int``; None once a float was added."""
        return self._sum if self._ints else None

    @property
    def bucket_count(self) -> int:
        """Occupied buckets (zero's counter not included): what the sketch's size grows with."""
        return len(self._buckets)

    def quantile(self, q: float) -> float | None:
        """The nearest-rank ``q``-quantile, within ``relative_accuracy`` of the exact one; None when empty.

        The exact nearest-rank quantile of ``n`` values is the ``ceil(q * n)``-th smallest for ``0 < q <= 1``
        and the smallest for ``q = 0``, with ``q * n`` computed exactly from the decimal ``q`` prints as.
        The rank's bucket gives the estimate; the 1st and ``n``-th smallest are the exact min and max.

        Raises:
            ConfigError: ``q`` is not a number in ``[0, 1]``.
        """
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """:meth:`quantile` of each of ``qs`` (in their order), in one pass over the buckets.

        Example:
            >>> sketch = QuantileSketch()
            >>> sketch.add(3, count=90)
            >>> sketch.add(20, count=10)
            >>> sketch.quantiles([0.5, 0.95])
            [3.0, 20.0]
        """
        ranks = [self._rank(q) for q in qs]
        n = self.count
        if n == 0:
            return [None] * len(ranks)
        assert self._min is not None and self._max is not None
        low, high = float(self._min), float(self._max)
        found: dict[int, float] = {1: low, n: high}
        wanted = sorted({r for r in ranks if r not in found})
        if wanted and wanted[0] <= self._zeros:
            for rank in wanted:
                if rank <= self._zeros:
                    found[rank] = 0.0
            wanted = [r for r in wanted if r > self._zeros]
        if wanted:
            seen, i = self._zeros, 0
            for key in sorted(self._buckets):
                seen += self._buckets[key]
                if seen >= wanted[i]:
                    estimate = min(max(self._estimate(key), low), high)
                    while i < len(wanted) and seen >= wanted[i]:
                        found[wanted[i]] = estimate
                        i += 1
                    if i == len(wanted):
                        break
        return [found[r] for r in ranks]

    def _rank(self, q: float) -> int:
        """The nearest rank of ``q``: ``ceil(q * count)``, at least 1, with ``q`` read as its decimal."""
        if isinstance(q, bool) or not isinstance(q, int | float):
            raise ConfigError(f"quantile q must be a number between 0 and 1 (0.95 for p95), got {q!r}")
        if not 0 <= q <= 1:  # also refuses NaN
            raise ConfigError(f"quantile q must be between 0 and 1 inclusive (0.95 for p95), got {q!r}")
        return max(1, math.ceil(Fraction(str(q)) * self.count)) if q else 1

    def _key(self, value: int | float) -> int:
        return _key(self._multiplier, value)

    def _estimate(self, key: int) -> float:
        upper = math.exp(key / self._multiplier)  # the bucket holds (upper / gamma, upper]
        if self._ints and upper < _EXACT_FLOAT_INTS:
            low, high = _int_span(self._multiplier, key)
            return 2 * low * high / (low + high)  # harmonic mean: the least worst relative error; exact if equal
        # (1 + alpha) * gamma**(key-1) = 2 gamma**key / (gamma + 1): within alpha of all of the bucket
        return (1 + self._alpha * (1 - _MARGIN)) * upper / self._gamma

    # -- writing ---------------------------------------------------------------------------------------

    def add(self, value: int | float, count: int = 1) -> None:
        """Add ``value`` ``count`` times.

        Args:
            value: An ``int`` or ``float``: 0, or between :data:`MIN_POSITIVE` and :data:`MAX_VALUE`.
            count: How many times (an int >= 1).

        Raises:
            ConfigError: ``value`` is negative, NaN, infinite, out of range or not a number, or ``count``
                is not an int >= 1.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"QuantileSketch.add: count must be an int >= 1, got {count!r}")
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if not is_int and not isinstance(value, float):
            raise ConfigError(f"QuantileSketch.add: value must be an int or a float, got {type(value).__name__}")
        if not value >= 0:  # also refuses NaN
            raise ConfigError(f"QuantileSketch.add: value must be >= 0 (and not NaN), got {value!r}")
        if value > MAX_VALUE:  # also refuses inf
            shown = "an int above 1e300" if is_int else repr(value)
            raise ConfigError(f"QuantileSketch.add: value must be finite and <= {MAX_VALUE:g}, got {shown}")
        if value == 0:
            self._zeros += count
        elif value < MIN_POSITIVE:
            raise ConfigError(f"QuantileSketch.add: a positive value must be >= {MIN_POSITIVE:g}, got {value!r}")
        else:
            key = self._key(value)
            self._buckets[key] = self._buckets.get(key, 0) + count
        if isinstance(value, float):
            if self._ints:
                self._to_floats()
        elif self._ints:
            self._sum += value * count
        if self._min is None or value < self._min:
            self._min = value if self._ints else float(value)
        if self._max is None or value > self._max:
            self._max = value if self._ints else float(value)

    def _to_floats(self) -> None:
        self._ints = False
        self._sum = 0
        if self._min is not None and self._max is not None:
            self._min, self._max = float(self._min), float(self._max)

    def merge(self, other: QuantileSketch) -> None:
        """Add every value of ``other`` to this sketch (in place; ``other`` is unchanged).

        Exact: the result is the sketch of all the values of both, whatever the split and the order.

        Raises:
            ConfigError: ``other`` is not a QuantileSketch or has another ``relative_accuracy``.
        """
        if not isinstance(other, QuantileSketch):
            raise ConfigError(f"QuantileSketch.merge: expected a QuantileSketch, got {type(other).__name__}")
        if other._alpha != self._alpha:
            raise ConfigError(
                f"QuantileSketch.merge: relative_accuracy {other._alpha!r} differs from {self._alpha!r};"
                " only sketches built with the same accuracy merge"
            )
        if other._min is None or other._max is None:
            return
        buckets = self._buckets
        if not buckets:
            buckets.update(other._buckets)  # the first merge into an empty sketch: a copy, at C speed
        else:
            get = buckets.get
            for key, n in other._buckets.items():  # other may be self: only values change, no key is added
                buckets[key] = get(key, 0) + n
        self._zeros += other._zeros
        self._sum += other._sum
        low = other._min if self._min is None else min(self._min, other._min)
        high = other._max if self._max is None else max(self._max, other._max)
        self._min, self._max = low, high
        if not (self._ints and other._ints):
            self._to_floats()

    def copy(self) -> QuantileSketch:
        """An independent copy."""
        clone = QuantileSketch(self._alpha)
        clone.merge(self)
        return clone

    # -- comparing and storing -------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantileSketch):
            return NotImplemented
        return self._state() == other._state()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def _state(self) -> tuple[object, ...]:
        return (
            self._alpha,
            self._ints,
            self._zeros,
            sorted(self._buckets.items()),
            (type(self._min), self._min),
            (type(self._max), self._max),
            self._sum,
        )

    def __repr__(self) -> str:
        return (
            f"QuantileSketch(relative_accuracy={self._alpha!r}, count={self.count}, min={self._min!r},"
            f" max={self._max!r}, buckets={len(self._buckets)})"
        )

    def to_bytes(self) -> bytes:
        """A compact, stable encoding for the database (the same sketch always gives the same bytes).

        Layout: ``b"QS"``, the version byte (:data:`FORMAT_VERSION`), ``relative_accuracy`` as a
        big-endian double, a flags byte (bit 0: int-only), then unsigned LEB128 varints: the zero count,
        the number of buckets, each bucket as (key delta, count) with the first key zigzag-encoded and
        later ones as the gap to the previous key minus one, then min and max (varints when int-only,
        doubles otherwise; absent when empty) and, when int-only, the exact sum.
        """
        out = bytearray(_MAGIC)
        out.append(FORMAT_VERSION)
        out += _DOUBLE.pack(self._alpha)
        out.append(_FLAG_INTS if self._ints else 0)
        _put(out, self._zeros)
        keys = sorted(self._buckets)
        _put(out, len(keys))
        previous: int | None = None
        buckets = self._buckets
        for key in keys:
            gap = (key << 1) ^ (key >> 63) if previous is None else key - previous - 1
            count = buckets[key]
            if gap < 0x80 and count < 0x80:  # the common case: one byte each
                out.append(gap)
                out.append(count)
            else:
                _put(out, gap)
                _put(out, count)
            previous = key
        if self._min is not None and self._max is not None:
            for bound in (self._min, self._max):
                if self._ints:
                    assert isinstance(bound, int)
                    _put(out, bound)
                else:
                    out += _DOUBLE.pack(bound)
        if self._ints:
            _put(out, self._sum)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> QuantileSketch:
        """The sketch :meth:`to_bytes` encoded.

        Raises:
            ConfigError: ``data`` is not a sketch encoding (wrong magic, unknown version, truncated,
                trailing bytes, or values that contradict each other).
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ConfigError(f"QuantileSketch.from_bytes: expected bytes, got {type(data).__name__}")
        reader = _Reader(bytes(data))
        if reader.take(2) != _MAGIC:
            raise ConfigError("QuantileSketch.from_bytes: not a quantile sketch (the data does not start with b'QS')")
        version = reader.take(1)[0]
        if version != FORMAT_VERSION:
            raise ConfigError(
                f"QuantileSketch.from_bytes: format version {version} is not known (this costtrace reads version"
                f" {FORMAT_VERSION}); upgrade costtrace or rebuild the rollups"
            )
        alpha = reader.double()
        if not 0 < alpha < 1:
            raise ConfigError(f"QuantileSketch.from_bytes: corrupt sketch: relative_accuracy {alpha!r}")
        sketch = cls(alpha)
        flags = reader.take(1)[0]
        if flags & ~_FLAG_INTS:
            raise ConfigError(f"QuantileSketch.from_bytes: corrupt sketch: unknown flags {flags:#x}")
        sketch._ints = bool(flags & _FLAG_INTS)
        sketch._zeros = reader.varint()
        n_buckets = reader.varint()
        if n_buckets > len(data):
            raise ConfigError(f"QuantileSketch.from_bytes: corrupt sketch: {n_buckets} buckets in {len(data)} bytes")
        data, pos, buckets, key = reader.data, reader.pos, sketch._buckets, 0
        fast, i = True, 0
        try:
            while i < n_buckets:
                if i and fast:
                    # The common case, a run of one-byte (gap, count) pairs, decoded at C speed: the same
                    # buckets as the loop below; anything else (a longer varint, a zero count, the end of
                    # the data) is left to the loop, which decodes it or raises as it always did.
                    end = min(pos + 2 * (n_buckets - i), len(data))
                    found = _LONG_VARINT.search(data, pos, end)
                    run = ((found.start() if found else end) - pos) // 2
                    if run:
                        stop = pos + 2 * run
                        counts = data[pos + 1 : stop : 2]
                        if 0 in counts:
                            fast = False
                        else:
                            keys = list(
                                map(operator.add, itertools.accumulate(data[pos:stop:2]), itertools.count(key + 1))
                            )
                            buckets.update(zip(keys, counts, strict=True))
                            key, pos, i = keys[-1], stop, i + run
                            continue
                raw = data[pos]
                pos += 1
                if raw >= 0x80:
                    raw, pos = _varint_rest(data, pos, raw)
                key = (raw >> 1) ^ -(raw & 1) if i == 0 else key + raw + 1
                count = data[pos]
                pos += 1
                if count >= 0x80:
                    count, pos = _varint_rest(data, pos, count)
                elif count == 0:
                    raise ConfigError(f"QuantileSketch.from_bytes: corrupt sketch: bucket {key} has count 0")
                buckets[key] = count
                i += 1
        except IndexError:
            raise ConfigError(_TRUNCATED) from None
        reader.pos = pos
        if sketch._zeros or n_buckets:
            bounds = (reader.varint(), reader.varint()) if sketch._ints else (reader.double(), reader.double())
            sketch._min, sketch._max = bounds
        if sketch._ints:
            sketch._sum = reader.varint()
        if not reader.done():
            raise ConfigError("QuantileSketch.from_bytes: corrupt sketch: trailing bytes after the sketch")
        sketch._check()
        return sketch

    def _check(self) -> None:
        """Refuse a decoded sketch whose parts contradict each other."""
        if self._min is None or self._max is None:
            if self._sum:
                raise ConfigError("QuantileSketch.from_bytes: corrupt sketch: an empty sketch with a sum")
            return
        low, high = self._min, self._max
        problem = None
        if not (0 <= low <= high <= MAX_VALUE):  # also NaN
            problem = f"min {low!r} and max {high!r}"
        elif (low == 0) != (self._zeros > 0):
            problem = f"min {low!r} with {self._zeros} zeros"
        elif 0 < low < MIN_POSITIVE:
            problem = f"min {low!r}"
        elif self._buckets and (high == 0 or self._key(high) != max(self._buckets)):
            problem = f"max {high!r} outside the highest bucket"
        elif self._buckets and not self._zeros and self._key(low) != min(self._buckets):
            problem = f"min {low!r} outside the lowest bucket"
        elif not self._buckets and high != 0:
            problem = f"max {high!r} with only zeros"
        elif self._ints and not high + low * (self.count - 1) <= self._sum <= low + high * (self.count - 1):
            problem = f"sum {self._sum} for values in [{low}, {high}]"
        if problem:
            raise ConfigError(f"QuantileSketch.from_bytes: corrupt sketch: {problem}")


def _key(multiplier: float, value: int | float) -> int:
    """The bucket of a positive value: ``ceil(log_gamma(value))``, with ``multiplier = 1 / ln(gamma)``."""
    return math.ceil(math.log(value) * multiplier)


@functools.lru_cache(maxsize=4096)
def _int_span(multiplier: float, key: int) -> tuple[int, int]:
    """The smallest and largest integers in bucket ``key``, by :func:`_key` itself (not by rounded bounds)."""
    low = max(1, math.floor(math.exp((key - 1) / multiplier)) + 1)
    while low > 1 and _key(multiplier, low - 1) >= key:
        low -= 1
    while _key(multiplier, low) < key:
        low += 1
    high = max(low, math.floor(math.exp(key / multiplier)))
    while _key(multiplier, high) > key:
        high -= 1
    while _key(multiplier, high + 1) <= key:
        high += 1
    return low, high


def _put(out: bytearray, value: int) -> None:
    """Append ``value`` (>= 0) as an unsigned LEB128 varint."""
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


_LONG_VARINT = re.compile(rb"[\x80-\xff]")
"""A byte that starts (or continues) a varint of more than one byte."""
_TRUNCATED = "QuantileSketch.from_bytes: corrupt sketch: the data ends too early (truncated?)"


def _varint_rest(data: bytes, pos: int, first: int) -> tuple[int, int]:
    """The rest of a varint whose first byte (>= 0x80) was ``first``: (value, position after it)."""
    value, shift = first & 0x7F, 7
    while True:
        byte = data[pos]  # IndexError: truncated
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ConfigError(_TRUNCATED)
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def double(self) -> float:
        value: float = _DOUBLE.unpack(self.take(8))[0]
        return value

    def varint(self) -> int:
        try:
            first = self.data[self.pos]
        except IndexError:
            raise ConfigError(_TRUNCATED) from None
        self.pos += 1
        if first < 0x80:
            return first
        try:
            value, self.pos = _varint_rest(self.data, self.pos, first)
        except IndexError:
            raise ConfigError(_TRUNCATED) from None
        return value

    def done(self) -> bool:
        return self.pos == len(self.data)
