"""Load over time: stateless, hash-based noise and the traffic shapes built on it.

Every function here is a pure function of a key and an array of Unix timestamps (seconds). No
random-number generator carries state between calls, so the value at any instant is the same
whether it is computed inside seven days of history or alone for a live scrape: the backfilled
past and the scraped present of a series join up exactly.

Noise is *value noise*: a 64-bit mix (splitmix64's finalizer) of (key, knot index) gives a
uniform number per knot, and smoothstep interpolation joins the knots; summing a few periods
gives structure at several time scales.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from gpu_rightsizer.fleetsim import fleets

FloatArray = npt.NDArray[np.float64]

SECONDS_PER_DAY = 86_400.0
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 2.0**-53

# Bursty traffic: the day is cut into slots; a slot holds at most one burst.
_BURST_SLOT_SECONDS = 1_800.0
# Training: a checkpoint every two hours, during which the GPUs mostly wait on storage.
_CHECKPOINT_EVERY_SECONDS = 7_200.0
_CHECKPOINT_SECONDS = 240.0


def key(*parts: object) -> int:
    """A stable 64-bit key for a tuple of names (Python's ``hash`` is salted per process)."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    # uint64 array arithmetic wraps silently, which is what a hash wants.
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def uniform(seed_key: int, index: npt.NDArray[np.int64]) -> FloatArray:
    """A uniform number in [0, 1) for each integer index, fixed by ``seed_key``."""
    x = index.astype(np.uint64) * _GOLDEN + np.full(index.shape, seed_key, dtype=np.uint64)
    return (_mix(x) >> np.uint64(11)).astype(np.float64) * _TO_UNIT


def value_noise(seed_key: int, times: FloatArray, period: float) -> FloatArray:
    """Smooth noise in [0, 1) with knots every ``period`` seconds."""
    position = times / period
    knot = np.floor(position)
    frac = position - knot
    index = knot.astype(np.int64)
    left = uniform(seed_key, index)
    right = uniform(seed_key, index + 1)
    weight = frac * frac * (3.0 - 2.0 * frac)
    return left + (right - left) * weight


def fractal(seed_key: int, times: FloatArray) -> FloatArray:
    """Noise in [0, 1) with structure at an hour, ten minutes and two minutes; mean about 0.5."""
    return (
        0.5 * value_noise(seed_key, times, 3_600.0)
        + 0.3 * value_noise(seed_key ^ 0x5A5A, times, 600.0)
        + 0.2 * value_noise(seed_key ^ 0xA5A5, times, 120.0)
    )


def load(
    traffic: fleets.Traffic, workload_key: int, replica_key: int, times: FloatArray
) -> FloatArray:
    """A replica's load (0-1 of what its allocation can serve) at each timestamp.

    ``workload_key`` fixes what replicas share (the daily cycle, the burst schedule, the
    checkpoint times); ``replica_key`` fixes each replica's own noise.
    """
    low, high = traffic.levels
    swing = high - low
    noise = fractal(replica_key, times)
    shape = traffic.shape
    if shape is fleets.TrafficShape.DIURNAL:
        hours = np.mod(times, SECONDS_PER_DAY) / 3_600.0
        daily = (0.5 + 0.5 * np.cos(2.0 * np.pi * (hours - traffic.peak_hour_utc) / 24.0)) ** 1.5
        # 1970-01-01 was a Thursday: day index + 3 gives Monday = 0.
        weekday = np.mod(np.floor(times / SECONDS_PER_DAY) + 3.0, 7.0)
        week = np.where(weekday >= 5.0, traffic.weekend_factor, 1.0)
        level = low + swing * daily * week
        result = level * (0.8 + 0.4 * noise) + 0.02 * swing * noise
    elif shape is fleets.TrafficShape.BURSTY:
        slot = np.floor(times / _BURST_SLOT_SECONDS).astype(np.int64)
        phase = times - slot.astype(np.float64) * _BURST_SLOT_SECONDS
        active = uniform(workload_key, slot) < traffic.bursts_per_day / 48.0
        start = uniform(workload_key ^ 0x1, slot) * (_BURST_SLOT_SECONDS / 2.0)
        length = 300.0 + uniform(workload_key ^ 0x2, slot) * 1_200.0
        inside = active & (phase >= start) & (phase < start + length)
        intensity = 0.75 + 0.25 * uniform(workload_key ^ 0x3, slot)
        quiet = low + 0.1 * swing * noise
        result = np.where(inside, low + swing * intensity * (0.9 + 0.2 * noise), quiet)
    elif shape is fleets.TrafficShape.TRAINING:
        offset = float(workload_key % int(_CHECKPOINT_EVERY_SECONDS))
        in_checkpoint = np.mod(times + offset, _CHECKPOINT_EVERY_SECONDS) < _CHECKPOINT_SECONDS
        result = np.where(in_checkpoint, 0.03 + 0.02 * noise, low + swing * noise)
    else:  # IDLE and CONSTANT: a flat band
        result = low + swing * noise
    return np.clip(result, 0.0, 1.0)
