"""Rate control for lossy JPEG 2000 tiles encoded at a target PSNR.

Where svsicc's OpenJPEG binding loads, lossy tiles are encoded once in OpenJPEG's rate mode at
their source's length (:mod:`.jpeg2k`); this module rates only the short ones (glass, edge tiles
that are mostly padding, where rate mode misses) and, without the binding, every lossy tile.
imagecodecs offers no byte budget, only a target PSNR (``level``). :class:`RateControl` spreads
each page's source bytes over its tiles at equal rate-distortion slope (what minimises the
page's squared error), searching each tile's level with 1.6 encodes on average (tcga); the page
total stays within a few per cent of the source's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

MIN_LEVEL = 20.0  # dB; imagecodecs treats a level below 1 as lossless
MAX_LEVEL = 70.0
START_LEVEL = 40.0
# Model of one tile: ln(bytes) = a + slope * level, and distortion 10**(-level / 10) (on textured
# tiles OpenJPEG's fixed-quality mode lands within a fraction of a dB of the level asked for;
# flat ones are handled apart, see RateControl.encode).
MODEL_SLOPE = 0.06  # typical d ln(bytes) / d level of 256x256 H&E tiles
MIN_SLOPE, MAX_SLOPE = 0.005, 0.4
SLOPE_BINS = 16  # the page fit groups tiles by slope, geometrically spaced
DISTORTION_SLOPE = math.log(10) / 10  # d ln(distortion) / d level
# K = DISTORTION_SLOPE * level + ln(bytes) over any level and tile length we could meet
K_RANGE = (DISTORTION_SLOPE * MIN_LEVEL, DISTORTION_SLOPE * MAX_LEVEL + math.log(1 << 26))
ACCEPT_DB = 1.0  # a tile within this of its equal-slope level is not encoded again ...
# ... and while K is not yet trusted (a page's first tiles, a small page's all), within this
# share of it: such a tile aims at its own length, and 1 dB is 6 % of its bytes (a one-tile
# top level of a 4:2:2 slide ended 4.6 % short)
EARLY_ACCEPT_SHARE = 0.25
MAX_ENCODES = 4
DEBT_SHARE = 0.25  # share of the page's byte surplus one tile tries to repay ...
MAX_CORRECTION = 0.15  # ... moving its own bytes by at most this fraction
MAX_REPAYMENT_DB = 2.0  # ... and its level by at most this
FREE_BYTES_RATIO, FREE_BYTES = 1.02, 64  # "no more bytes": within 2 % + 64 bytes
PROBE_BELOW_BYTES = 512  # streams this short are also tried at MAX_LEVEL ...
BISECT_STEPS = 2  # ... and, when shorter than their source, raised by bisection within it
# OpenJPEG's fixed-quality mode trusts its own distortion estimate, which on nearly flat tiles
# can be far off, and not even monotonic: on a 17 %-visible edge tile (a 43-pixel strip of
# glass and padding) levels 45-55 gave 202-235 bytes at 30.6 dB, level 42 191 bytes at 41.9 dB
# and level 60 246 bytes at 60.3 dB; glass tiles 187 bytes at 32.9 dB for levels 35-45. So a
# stream this short is decoded and its real PSNR checked (a ~1 KB stream decodes in ~1 ms) ...
CHECK_BELOW_BYTES = 1024
BROKEN_DB = 3.0  # ... and one that misses its level by more than this is replaced ...
BROKEN_STEP_DB = 5.0  # ... by the best real PSNR among the tries at about its length, higher
# levels probed in these steps
# Until the page constant rests on enough data, keep each tile near its own source length: the
# allowed ratio grows from 1 to MAX_RATIO as the tiles seen reach WARMUP_COUNT and the bytes
# seen WARMUP_TILES times this tile's (small pages, e.g. a pyramid's top, stay near 1). With 16
# tiles a 9-tile level (555x741 at 256 px) ended 3 % short of its bytes and 0.4 dB under its
# floor (the fit of a few tiles moved 5-8 % of the big tiles' bytes); with 48, 1 % and 0.0 dB.
WARMUP_TILES = 4
WARMUP_COUNT = 48
MAX_RATIO = 8.0
# A tile gets at most this much below the level that repeats its own length, however little
# its error weighs in the page: verify judges every tile against one encode at its source's
# length. Unbounded, equal slope left nearly flat tiles of the TCGA slide (ScanScope) 5-12 dB
# under that (40.0 dB against a 51.9 dB floor), over verify's per-tile margins on 30 tiles.
MAX_DROP_DB = 1.5


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _slope_bins() -> tuple[float, ...]:
    step = (MAX_SLOPE / MIN_SLOPE) ** (1 / (SLOPE_BINS - 1))
    return tuple(MIN_SLOPE * step**i for i in range(SLOPE_BINS))


_SLOPES = _slope_bins()


@dataclass
class RateControl:
    """Chooses each tile's imagecodecs ``level`` (target PSNR) so a page keeps its byte count.

    Bytes are spread over a page's tiles at equal rate-distortion slope, the allocation that
    minimises the page's squared error for its total size: a tile's level L solves
    ``DISTORTION_SLOPE * L + ln(bytes(L)) = K``, the same K for every tile. K is fitted to the
    tiles seen so far (each modelled as ln(bytes) = a + s L with its own measured slope s) so
    that, at K, they would have cost exactly their source bytes. On the tcga slide this gives
    1-2 dB more PSNR than matching every tile's own length. A surplus left by the fit's early
    estimates is repaid by later tiles. A tile's first encode starts from the level last chosen
    for a tile of similar source length.
    """

    tiles: int = 0
    encodes: int = 0
    source_bytes: int = 0
    written_bytes: int = 0
    slope: float = MODEL_SLOPE  # running estimate of d ln(bytes) / d level, for the search
    # Per slope bin b: sum over tiles of exp(a c / (c + s_b)); the tiles' modelled bytes at page
    # constant K are then sum_b fit[b] * exp(K s_b / (c + s_b)).
    _fit: list[float] = field(default_factory=lambda: [0.0] * SLOPE_BINS, repr=False)
    _start: dict[int, float] = field(default_factory=dict, repr=False)

    @staticmethod
    def _fit_term(level: float, size: int, slope: float) -> tuple[int, float]:
        c = DISTORTION_SLOPE
        b = min(range(SLOPE_BINS), key=lambda i: abs(math.log(_SLOPES[i] / slope)))
        s = _SLOPES[b]
        return b, math.exp((math.log(size) - s * level) * c / (c + s))

    def _page_constant(self, source_bytes: int, term: tuple[int, float]) -> float:
        """K at which the tiles so far, this one included, would cost their source bytes."""
        c = DISTORTION_SLOPE
        fit = list(self._fit)
        fit[term[0]] += term[1]
        wanted = self.source_bytes + source_bytes
        low, high = K_RANGE
        for _ in range(40):  # bisection: the modelled bytes grow with K
            k = (low + high) / 2
            modelled = sum(
                f * math.exp(k * s / (c + s)) for f, s in zip(fit, _SLOPES, strict=True) if f
            )
            if modelled < wanted:
                low = k
            else:
                high = k
        return (low + high) / 2

    def _repayment(self, expected: float, slope: float) -> float:
        """Level change that makes this tile repay part of the page's surplus: at most
        MAX_CORRECTION of its bytes and MAX_REPAYMENT_DB, so a tile whose length hardly moves
        with the level (blank glass) is not driven to a level where OpenJPEG's fixed-quality
        mode falls apart for a handful of bytes."""
        surplus = self.written_bytes - self.source_bytes
        share = _clamp(DEBT_SHARE * surplus / expected, -MAX_CORRECTION, MAX_CORRECTION)
        return _clamp(math.log(1 - share) / slope, -MAX_REPAYMENT_DB, MAX_REPAYMENT_DB)

    def _confidence(self, source_bytes: int) -> float:
        """0 .. 1: how far the page constant K can be trusted for a tile of this length."""
        return min(
            1.0, self.source_bytes / (WARMUP_TILES * source_bytes), self.tiles / WARMUP_COUNT
        )

    def _wanted_level(self, level: float, size: int, slope: float, source_bytes: int) -> float:
        """The level this tile should have, from its model through (level, size)."""
        c = DISTORTION_SLOPE
        a = math.log(size) - slope * level
        matching = (math.log(source_bytes) - a) / slope  # the level that repeats its length
        k = self._page_constant(source_bytes, self._fit_term(level, size, slope))
        equal_slope = (k - a) / (c + slope)
        expected = math.exp(a + slope * equal_slope)
        equal_slope += self._repayment(expected, slope)
        # Until K rests on several tiles' worth of bytes, stay near the tile's own length.
        allowed = self._confidence(source_bytes) * math.log(MAX_RATIO) / slope
        wanted = _clamp(equal_slope, matching - min(allowed, MAX_DROP_DB), matching + allowed)
        return _clamp(wanted, MIN_LEVEL, MAX_LEVEL)

    def encode(
        self,
        encode_at: Callable[[float], bytes],
        source_bytes: int,
        psnr_of: Callable[[bytes], float] | None = None,
    ) -> bytes:
        """Encode one tile through ``encode_at(level)``; returns the stream chosen.

        ``psnr_of(stream)`` is the PSNR the stream really decodes to (over the samples that
        were encoded): with it, a short stream whose level OpenJPEG did not keep is replaced
        (see CHECK_BELOW_BYTES)."""
        source_bytes = max(source_bytes, 1)
        bucket = round(2 * math.log2(max(source_bytes, 1)))
        level = self._start.get(bucket, START_LEVEL)
        tries: list[tuple[float, bytes]] = []
        slope = self.slope
        measured = False  # slope measured on this tile (two encodes)
        wanted = level
        accept = ACCEPT_DB * max(EARLY_ACCEPT_SHARE, self._confidence(source_bytes))
        for _ in range(MAX_ENCODES):
            stream = encode_at(level)
            self.encodes += 1
            tries.append((level, stream))
            if len(tries) >= 2:
                (l0, s0), (l1, s1) = sorted((lv, len(st)) for lv, st in tries[-2:])
                if l1 > l0:
                    slope = _clamp(math.log(s1 / s0) / (l1 - l0), MIN_SLOPE, MAX_SLOPE)
                    measured = True
            wanted = self._wanted_level(level, len(stream), slope, source_bytes)
            if abs(wanted - level) <= accept or any(abs(wanted - t[0]) < 1e-6 for t in tries):
                break
            level = wanted
        level, stream = min(tries, key=lambda t: abs(t[0] - wanted))
        # A higher level that costs next to nothing more is always the better buy: on flat
        # tiles (blank glass) OpenJPEG can miss a target PSNR by 15 dB at the same length, so
        # a near-empty stream is also tried at the top level.
        if len(stream) < PROBE_BELOW_BYTES and all(t[0] < MAX_LEVEL for t in tries):
            tries.append((MAX_LEVEL, encode_at(MAX_LEVEL)))
            self.encodes += 1
        for other_level, other in tries:
            if other_level > level and len(other) <= len(stream) * FREE_BYTES_RATIO + FREE_BYTES:
                level, stream = other_level, other
        if len(stream) < min(PROBE_BELOW_BYTES, source_bytes):
            level, stream = self._highest_within(encode_at, tries, level, stream, source_bytes)
        if psnr_of is not None and len(stream) < CHECK_BELOW_BYTES:
            level, stream = self._kept_word(encode_at, psnr_of, tries, level, stream)
        if measured:
            self.slope = 0.8 * self.slope + 0.2 * slope
        self._start[bucket] = level
        b, term = self._fit_term(level, len(stream), slope)
        self._fit[b] += term
        self.tiles += 1
        self.source_bytes += source_bytes
        self.written_bytes += len(stream)
        return stream

    def _highest_within(
        self,
        encode_at: Callable[[float], bytes],
        tries: list[tuple[float, bytes]],
        level: float,
        stream: bytes,
        source_bytes: int,
    ) -> tuple[float, bytes]:
        """The highest level, found by bisection towards the lowest tried level that costs
        more, whose stream stays within "free bytes" of the longer of this stream and the
        source's. A near-empty stream's length hardly follows the exponential model: a glass
        tile of 227 source bytes came out at 197 bytes and 49.0 dB where 227 bytes hold 59 dB,
        and its dE2000 failed verify."""
        budget = max(len(stream), source_bytes) * FREE_BYTES_RATIO + FREE_BYTES
        above = [lv for lv, st in tries if lv > level and len(st) > budget]
        if not above:
            return level, stream
        high = min(above)
        for _ in range(BISECT_STEPS):
            middle = (level + high) / 2
            other = encode_at(middle)
            self.encodes += 1
            tries.append((middle, other))
            if len(other) <= budget:
                level, stream = middle, other
            else:
                high = middle
        return level, stream

    def _kept_word(
        self,
        encode_at: Callable[[float], bytes],
        psnr_of: Callable[[bytes], float],
        tries: list[tuple[float, bytes]],
        level: float,
        stream: bytes,
    ) -> tuple[float, bytes]:
        """(level, stream) itself when it decodes to within BROKEN_DB of its level; else the
        try of the best real PSNR among those at most "free bytes" longer, higher levels
        probed until they cost more. Returns the real PSNR as the level when that is lower,
        so the page model learns what the bytes bought."""
        real = psnr_of(stream)
        if real >= level - BROKEN_DB:
            return level, stream
        budget = len(stream) * FREE_BYTES_RATIO + FREE_BYTES
        probe = level
        while probe < MAX_LEVEL:
            probe = min(MAX_LEVEL, probe + BROKEN_STEP_DB)
            known = [t for t in tries if abs(t[0] - probe) < 1e-6]
            if known:
                other = known[0][1]
            else:
                other = encode_at(probe)
                self.encodes += 1
                tries.append((probe, other))
            if len(other) > budget:
                break
        scored = [
            (real if st is stream else psnr_of(st), lv, st) for lv, st in tries if len(st) <= budget
        ]
        best_real, best_level, best = max(scored, key=lambda t: (t[0], -len(t[2])))
        return min(best_level, best_real), best
