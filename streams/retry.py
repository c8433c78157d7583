"""Retry with exponential backoff for RetryableError; permanent errors pass straight through."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from components.base import RetryableError

log = logging.getLogger(__name__)
T = TypeVar("T")


async def call_blocking(
    fn: Callable[..., T], *args: object, what: str, deadline_s: float | None = None,
    base_delay_s: float = 0.2, max_delay_s: float = 5.0,
) -> T:
    """Run blocking ``fn(*args)`` in a worker thread, retrying RetryableError with backoff.

    Delays double from ``base_delay_s`` up to ``max_delay_s``. With ``deadline_s`` the last
    RetryableError is re-raised once that many seconds have passed; without, it retries until
    it succeeds (the caller must not acknowledge its input before the effect is durable).
    """
    start = time.monotonic()
    delay = base_delay_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return await asyncio.to_thread(fn, *args)
        except RetryableError as exc:
            if deadline_s is not None and time.monotonic() - start + delay > deadline_s:
                raise
            log.warning("%s failed (attempt %d, retrying in %.1fs): %s", what, attempt, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)
