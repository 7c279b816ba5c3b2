"""Backoff with jitter and Retry-After parsing, in one place."""

from __future__ import annotations

import email.utils
import random
import time


def backoff(attempt: int, base: float = 0.25, cap: float = 20.0) -> float:
    """Full jitter: spreads retries of many workers instead of thundering together."""
    return random.uniform(0, min(cap, base * 2 ** attempt))


def rate_limit_wait(window: float, in_a_row: int) -> float:
    """Wait after a 429 without Retry-After: the vendor's window, doubling up to 8 windows
    for 429s in a row, plus up to a quarter more so workers do not return together."""
    delay = window * min(2 ** in_a_row, 8)
    return delay * random.uniform(1.0, 1.25)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait, from `Retry-After` given as seconds or as an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
