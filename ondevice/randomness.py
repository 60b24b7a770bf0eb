"""Randomness for DP noise and Poisson sampling: a secure default and a seeded source for tests.

Which source and why
--------------------
Production noise and sampling use ``SecureRandomSource``: bytes from the operating system's
CSPRNG (``os.urandom``, i.e. getrandom(2) on Linux/Android). numpy's default generator
(PCG64) is not enough for DP noise: it is seedable (a guessable seed reproduces every draw),
it is not cryptographic (its 128-bit state can be recovered from a modest number of outputs,
after which every later "noise" draw is predictable and can be subtracted from an update),
and a forked process inherits the parent's state, so two workers can add identical noise.

Floating-point caveat
---------------------
Normals here are Box-Muller in float64 on 53-bit uniforms. Like every floating-point sampler
this is not an exact DP mechanism: Mironov (2012) broke textbook floating-point Laplace
samplers through the set of representable outputs, and Jin et al. (2022) showed the same for
Gaussian samplers (Box-Muller, polar, ziggurat). The samples also lie on a grid and are
truncated at |z| ≤ √(2·53·ln 2) ≈ 8.57 (tail mass ~1e-17). The exact remedy, OpenDP's
discrete Gaussian (``make_gaussian`` on a grid), was measured by the team at ~6 s per 74,498
coordinates on this machine — ~30× a training step — so it is not the default.

Measured here (2 cores, load ~1.5 from other jobs, numpy 2.4.6): ``SecureRandomSource()
.standard_normal(74_498)`` took 4.6–4.7 ms median over 500 calls (min 3.3 ms; the
``os.urandom`` read alone ~1.9 ms) — small next to a DP step (156–286 ms in the issue's probes).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

_TWO_POW_MINUS_53 = 2.0**-53


@runtime_checkable
class RandomSource(Protocol):
    """A source of float64 uniforms in [0, 1) and standard normals."""

    name: str
    secure: bool

    def standard_normal(self, size: int) -> np.ndarray:
        """``size`` independent N(0, 1) draws, float64 [size]."""
        ...

    def uniform(self, size: int) -> np.ndarray:
        """``size`` independent U[0, 1) draws, float64 [size]."""
        ...


def _check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 0:
        raise ValueError(f"size must be an int >= 0, found {size!r}")
    return int(size)


def uniforms_from_bytes(raw: bytes) -> np.ndarray:
    """8·n random bytes → n float64 uniforms on the 53-bit grid {k / 2⁵³} ⊂ [0, 1)."""
    if len(raw) % 8:
        raise ValueError(f"need a multiple of 8 bytes, found {len(raw)}")
    words = np.frombuffer(raw, dtype="<u8")  # [n] uint64
    return (words >> np.uint64(11)).astype(np.float64) * _TWO_POW_MINUS_53  # top 53 bits


def box_muller(u: np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1), [2m] → standard normals, float64 [2m] (float64 throughout).

    Pairs (u1, u2) = (u[:m], u[m:]) give r = √(−2 ln(1 − u1)) and θ = 2π·u2; output is
    [r·cos θ, r·sin θ]. ``1 − u1`` lies in (0, 1], so the log never sees 0.
    """
    u = np.asarray(u, dtype=np.float64)
    if u.ndim != 1 or u.shape[0] % 2:
        raise ValueError(f"box_muller needs a 1-D array of even length, found shape {u.shape}")
    m = u.shape[0] // 2
    radius = np.sqrt(-2.0 * np.log1p(-u[:m]))  # [m]; log1p(-u1) = ln(1 - u1), u1 < 1
    theta = (2.0 * math.pi) * u[m:]  # [m]
    return np.concatenate([radius * np.cos(theta), radius * np.sin(theta)])  # [2m]


class SecureRandomSource:
    """OS CSPRNG (``os.urandom`` / getrandom(2)): 53-bit uniforms, Box-Muller normals in float64.

    Not seedable by design; use it for every noise draw and sampling decision on a device.
    """

    name = "secure"
    secure = True

    def uniform(self, size: int) -> np.ndarray:
        """``size`` uniforms in [0, 1) from one read of 8·size bytes, float64 [size]."""
        n = _check_size(size)
        return uniforms_from_bytes(os.urandom(8 * n))

    def standard_normal(self, size: int) -> np.ndarray:
        """``size`` N(0, 1) draws by Box-Muller on one read of 16·⌈size/2⌉ bytes, float64 [size]."""
        n = _check_size(size)
        pairs = (n + 1) // 2
        return box_muller(self.uniform(2 * pairs))[:n]


class SeededRandomSource:
    """numpy ``Generator(PCG64(seed))``: reproducible, NOT secure — tests and benchmarks only."""

    name = "seeded"
    secure = False

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, found {seed!r}")
        self.seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))

    def uniform(self, size: int) -> np.ndarray:
        """``size`` uniforms in [0, 1), float64 [size]."""
        return self._rng.random(_check_size(size), dtype=np.float64)

    def standard_normal(self, size: int) -> np.ndarray:
        """``size`` N(0, 1) draws, float64 [size]."""
        return self._rng.standard_normal(_check_size(size), dtype=np.float64)


def _make_secure(seed: int | None) -> RandomSource:
    if seed is not None:
        raise ValueError(f"the 'secure' source cannot be seeded, found seed={seed!r}")
    return SecureRandomSource()


def _make_seeded(seed: int | None) -> RandomSource:
    if seed is None:
        raise ValueError("the 'seeded' source needs a seed, found None")
    return SeededRandomSource(seed)


_SOURCES: dict[str, Callable[[int | None], RandomSource]] = {"secure": _make_secure, "seeded": _make_seeded}


def make_random_source(name: str, seed: int | None = None) -> RandomSource:
    """Registry: "secure" (no seed) or "seeded" (seed required); unknown names raise ValueError."""
    factory = _SOURCES.get(name)
    if factory is None:
        raise ValueError(f"unknown random source {name!r}; known: {sorted(_SOURCES)}")
    return factory(seed)


def gaussian_noise(source: RandomSource, size: int, std: float) -> np.ndarray:
    """N(0, std²) per coordinate, float32 [size] (drawn in float64, then cast); std == 0 → zeros."""
    n = _check_size(size)
    if isinstance(std, bool) or not isinstance(std, int | float | np.floating) or not math.isfinite(std) or std < 0:
        raise ValueError(f"std must be a finite number >= 0, found {std!r}")
    if std == 0:
        return np.zeros(n, dtype=np.float32)
    return (source.standard_normal(n) * float(std)).astype(np.float32)  # [size]
