"""Freshness decisions: pure functions of time, with no I/O.

XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015) refreshes a value
before it expires with probability exp(-(expiry - now) / (delta * beta)),
where delta is how long the value took to load: slow loads start early, and
only one of many readers tends to fire.
"""

from __future__ import annotations

import math
import random
from enum import Enum

__all__ = ["Freshness", "classify", "jittered", "quiet_until", "xfetch_probability"]

# An early refresh this many XFetch time units (beta × load time) before the soft expiry
# has a chance of exp(-40), below one in 10**17.
SURELY_FRESH = 40.0


class Freshness(Enum):
    """What to do with a value found in the cache."""

    FRESH = "fresh"  # serve it
    REFRESH_EARLY = "refresh_early"  # serve it and refresh in the background (XFetch)
    STALE = "stale"  # past soft expiry: serve it and refresh in the background


def xfetch_probability(remaining: float, delta: float, beta: float) -> float:
    """Return the chance that a read ``remaining`` seconds before expiry refreshes early."""
    if beta <= 0 or delta <= 0:
        return 0.0
    if remaining <= 0:
        return 1.0
    return math.exp(-remaining / (delta * beta))


def quiet_until(fresh_until: float, load_seconds: float, beta: float) -> float:
    """Until when a value surely needs no refresh: reads before then skip the random draw."""
    return fresh_until - beta * load_seconds * SURELY_FRESH


def classify(
    fresh_until: float, load_seconds: float, beta: float, now: float, rand: float
) -> Freshness:
    """Classify a value by its soft expiry; ``rand`` is uniform in [0, 1)."""
    remaining = fresh_until - now
    if remaining <= 0:
        return Freshness.STALE
    if rand < xfetch_probability(remaining, load_seconds, beta):
        return Freshness.REFRESH_EARLY
    return Freshness.FRESH


def jittered(ttl: float, jitter: float, rng: random.Random) -> float:
    """Return ``ttl`` shortened by a random fraction of at most ``jitter``."""
    if jitter <= 0:
        return ttl
    return ttl * (1.0 - jitter * rng.random())
