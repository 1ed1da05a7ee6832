"""Many seeded draws at once: ``default_rng([seed, key]).choice(n, k, replace=False)`` for a block of keys.

A prompt's few-shot seeds are drawn by a generator seeded with its sample id, so a prompt never
depends on how indices were batched. Creating one ``numpy.random.Generator`` per prompt costs
about 20 us, most of the prompt's cost; here the same numbers come out of numpy arrays, every
prompt of a block at once:

- ``SeedSequence([seed, key])`` (its uint32 hash mixing, pool of 4 words) -> the PCG64 state;
- PCG64 (128-bit LCG, XSL-RR output), 32-bit draws taken low half first as numpy buffers them;
- ``choice(n, k, replace=False)`` with ``n <= 10,000`` or ``k <= n // 50``: Floyd's algorithm
  with Lemire's bounded integers, then the Fisher-Yates shuffle of the ``k`` picks (Lemire's too).

Resumed jobs rebuild their prompts, so the draws must equal numpy's exactly: :func:`choose` checks
itself against numpy once per process and falls back to the per-row generators (with a warning)
should a numpy release change any of these algorithms; rows outside the cases above always use them.
"""

from __future__ import annotations

import warnings

import numpy as np

_M32 = 0xFFFFFFFF
# SeedSequence (numpy/random/bit_generator.pyx)
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R, _POOL = 0xCA01F9DD, 0x4973F715, 4
# PCG64's 128-bit multiplier, as (high, low) 64-bit halves
_PCG_MULT = (np.uint64(2549297995355413924), np.uint64(4865540595714422341))
_U64 = np.uint64
_LOW32 = _U64(_M32)


def _words(value: int) -> list[int]:
    """``SeedSequence``'s uint32 words of a non-negative int (little end first; 0 -> [0])."""
    out = []
    while True:
        out.append(value & _M32)
        value >>= 32
        if not value:
            return out


def _seed_pools(seed_words: list[int], keys: np.ndarray) -> np.ndarray:
    """The 4-word entropy pool of ``SeedSequence([seed, key])`` per key, shape (n, 4) uint32.

    Entropy words beyond the given ones hash as zeros, so a key below 2**32 (one word) and the
    same key padded with a zero word give the same pool, as numpy's do.
    """
    n = len(keys)
    entropy = np.zeros((n, _POOL), dtype=np.uint32)
    for i, word in enumerate(seed_words):
        entropy[:, i] = word
    at = len(seed_words)
    entropy[:, at] = (keys & _LOW32).astype(np.uint32)
    entropy[:, at + 1] = (keys >> _U64(32)).astype(np.uint32)
    hash_const = _INIT_A

    def hashmix(value: np.ndarray) -> np.ndarray:
        nonlocal hash_const
        value = value ^ np.uint32(hash_const)
        hash_const = (hash_const * _MULT_A) & _M32
        value = value * np.uint32(hash_const)
        return value ^ (value >> np.uint32(16))

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        result = np.uint32(_MIX_L) * x - np.uint32(_MIX_R) * y
        return result ^ (result >> np.uint32(16))

    pool = np.empty_like(entropy)
    for i in range(_POOL):
        pool[:, i] = hashmix(entropy[:, i])
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                pool[:, dst] = mix(pool[:, dst], hashmix(pool[:, src]))
    return pool


def _state_words(pool: np.ndarray) -> list[np.ndarray]:
    """``SeedSequence.generate_state(4, uint64)``: four uint64 arrays."""
    hash_const = _INIT_B
    halves = []
    for i in range(8):
        value = pool[:, i % _POOL] ^ np.uint32(hash_const)
        hash_const = (hash_const * _MULT_B) & _M32
        value = value * np.uint32(hash_const)
        halves.append((value ^ (value >> np.uint32(16))).astype(np.uint64))
    return [halves[2 * k] | (halves[2 * k + 1] << _U64(32)) for k in range(4)]


def _mul64(a: np.ndarray, b: np.ndarray | np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """The full 128-bit product of uint64s, as (high, low)."""
    a0, a1 = a & _LOW32, a >> _U64(32)
    b0, b1 = b & _LOW32, b >> _U64(32)
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> _U64(32)) + (p01 & _LOW32) + (p10 & _LOW32)
    return p11 + (p01 >> _U64(32)) + (p10 >> _U64(32)) + (mid >> _U64(32)), (p00 & _LOW32) | (mid << _U64(32))


class _Pcg64Streams:
    """One PCG64 per row (as ``PCG64(SeedSequence(...))`` seeds it), drawn for subsets of rows."""

    def __init__(self, words: list[np.ndarray]) -> None:
        n = len(words[0])
        # pcg64_set_seed: state = w0:w1, inc = w2:w3; srandom: state 0, inc = (inc << 1) | 1, step, += state, step
        self.inc_hi = (words[2] << _U64(1)) | (words[3] >> _U64(63))
        self.inc_lo = (words[3] << _U64(1)) | _U64(1)
        self.hi, self.lo = np.zeros(n, np.uint64), np.zeros(n, np.uint64)
        rows = np.arange(n)
        self._step(rows)
        lo = self.lo + words[1]
        self.hi = self.hi + words[0] + (lo < self.lo).astype(np.uint64)
        self.lo = lo
        self._step(rows)
        self.has_half = np.zeros(n, dtype=bool)  # numpy keeps the high half of a 64-bit draw for the next 32
        self.half = np.zeros(n, dtype=np.uint64)

    def _step(self, rows: np.ndarray) -> None:
        hi, lo = self.hi[rows], self.lo[rows]
        carry_hi, new_lo = _mul64(lo, _PCG_MULT[1])
        new_hi = carry_hi + hi * _PCG_MULT[1] + lo * _PCG_MULT[0]
        out_lo = new_lo + self.inc_lo[rows]
        new_hi = new_hi + self.inc_hi[rows] + (out_lo < new_lo).astype(np.uint64)
        self.hi[rows], self.lo[rows] = new_hi, out_lo

    def next64(self, rows: np.ndarray) -> np.ndarray:
        self._step(rows)
        hi, lo = self.hi[rows], self.lo[rows]
        value, rot = hi ^ lo, hi >> _U64(58)
        return (value >> rot) | (value << ((_U64(64) - rot) & _U64(63)))

    def next32(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty(len(rows), dtype=np.uint64)
        buffered = self.has_half[rows]
        if buffered.any():
            out[buffered] = self.half[rows[buffered]]
            self.has_half[rows[buffered]] = False
        fresh = rows[~buffered]
        if len(fresh):
            value = self.next64(fresh)
            out[~buffered] = value & _LOW32
            self.half[fresh] = value >> _U64(32)
            self.has_half[fresh] = True
        return out

    def bounded(self, rows: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Integers in ``[0, high]`` per row (``random_bounded_uint64``: Lemire's method, 32-bit)."""
        out = np.zeros(len(rows), dtype=np.uint64)
        draw = high > 0  # a range of one value draws nothing
        rows_d, excl = rows[draw], high[draw].astype(np.uint64) + _U64(1)
        m = self.next32(rows_d) * excl
        threshold = (_U64(_M32) - (excl - _U64(1))) % excl
        retry = np.flatnonzero((m & _LOW32) < threshold)  # leftover < threshold implies leftover < excl
        while len(retry):
            m[retry] = self.next32(rows_d[retry]) * excl[retry]
            retry = retry[(m[retry] & _LOW32) < threshold[retry]]
        out[draw] = m >> _U64(32)
        return out


def _vector_choose(seed: int, keys: np.ndarray, sizes: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The draws of :func:`choose` from arrays (Floyd's algorithm rows only; no self-check)."""
    n = len(keys)
    width = int(k.max()) if n else 0
    picks = np.full((n, width), -1, dtype=np.int64)
    if not n or not width:
        return picks
    streams = _Pcg64Streams(_state_words(_seed_pools(_words(seed), keys)))
    for t in range(width):  # Floyd: j = n - k + t; take bounded(j), or j if already taken
        rows = np.flatnonzero(t < k)
        j = (sizes[rows] - k[rows] + t).astype(np.int64)
        value = streams.bounded(rows, j.astype(np.uint64)).astype(np.int64)
        taken = (picks[rows, :t] == value[:, None]).any(axis=1)
        picks[rows, t] = np.where(taken, j, value)
    for i in range(width - 1, 0, -1):  # the shuffle: swap position i with bounded(i), i = k-1 .. 1
        rows = np.flatnonzero(i < k)
        other = streams.bounded(rows, np.full(len(rows), i, dtype=np.uint64)).astype(np.int64)
        moved = picks[rows, other]
        picks[rows, other] = picks[rows, i]
        picks[rows, i] = moved
    return picks


def _reference_choose(seed: int, key: int, size: int, k: int) -> list[int]:
    return np.random.default_rng([seed, key]).choice(size, size=k, replace=False).tolist() if k else []


_SELF_CHECK: bool | None = None


def _vector_path_matches_numpy() -> bool:
    """Once per process: do the array draws equal this numpy's on a fixed set of awkward cases?"""
    global _SELF_CHECK
    if _SELF_CHECK is None:
        rng = np.random.default_rng(20261129)
        keys = np.concatenate([rng.integers(0, 2**48, 48, dtype=np.uint64), rng.integers(0, 2**32, 8, dtype=np.uint64),
                               np.array([0, 1, 2**48 - 1, 2**32, 2**32 - 1], dtype=np.uint64)])
        sizes = rng.integers(1, 5000, len(keys))
        sizes[:6] = [1, 2, 3, 7, 2**20, 10_000]
        k = np.minimum(rng.integers(0, 9, len(keys)), sizes)
        ok = True
        for seed in (0, 7, 2**32 + 5):
            got = _vector_choose(seed, keys, sizes, k)
            for row, (key, size, kk) in enumerate(zip(keys.tolist(), sizes.tolist(), k.tolist())):
                ok &= got[row, :kk].tolist() == _reference_choose(seed, key, size, kk)
        _SELF_CHECK = bool(ok)
        if not ok:
            warnings.warn("this numpy draws differently from bias_ray.generate.seeded_draws; prompts are built "
                          "with one generator per row (slower, same prompts)", RuntimeWarning, stacklevel=3)
    return _SELF_CHECK


def choose(seed: int, keys: np.ndarray, sizes: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Row ``r``: ``default_rng([seed, keys[r]]).choice(sizes[r], size=k[r], replace=False)``, -1 padded.

    ``keys`` are non-negative ints below 2**64, ``0 <= k <= sizes``; returns (rows, max k) int64.
    """
    keys = np.asarray(keys, dtype=np.uint64)
    sizes = np.asarray(sizes, dtype=np.int64)
    k = np.asarray(k, dtype=np.int64)
    if np.any(k > sizes) or np.any(k < 0):
        raise ValueError("choose: every k must lie in [0, size]")
    # numpy shuffles a tail of arange(n) instead of Floyd's algorithm when n > 10,000 and k > n // 50
    floyd = (sizes <= 10_000) | (k <= sizes // 50)
    vector = seed >= 0 and len(_words(seed)) <= _POOL - 2 and _vector_path_matches_numpy()
    if vector and floyd.all():
        return _vector_choose(seed, keys, sizes, k)
    picks = np.full((len(keys), int(k.max()) if len(k) else 0), -1, dtype=np.int64)
    rows = np.flatnonzero(floyd) if vector else np.zeros(0, dtype=np.int64)
    if len(rows):
        got = _vector_choose(seed, keys[rows], sizes[rows], k[rows])
        picks[rows, : got.shape[1]] = got
    for row in np.setdiff1d(np.arange(len(keys)), rows).tolist():
        drawn = _reference_choose(seed, int(keys[row]), int(sizes[row]), int(k[row]))
        picks[row, : len(drawn)] = drawn
    return picks
