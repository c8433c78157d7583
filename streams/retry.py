"""Blocking calls off the event loop: ``call_blocking`` (the shared pool, retrying RetryableError with
exponential backoff; permanent errors pass straight through) and ``OwnThread`` (a component's own thread,
under a deadline: a stuck call cannot hold the shared pool)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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


class OwnThread:
    """Blocking calls of one component on a thread of their own, never the event loop's shared pool (which
    every agent's ``call_blocking`` uses), each under a deadline.

    A call past ``timeout_s`` raises TimeoutError and its thread is abandoned (a Python thread cannot be
    killed; it ends when the call returns): the next call gets a new thread, so a stuck call holds neither
    the shared pool nor the calls after it. At most ``max_stuck`` abandoned threads may still be running;
    past that, calls raise TimeoutError at once until one ends (the component is stuck: fail closed).
    Use a child process instead when the work must be killable (``components.scrub_process``).
    """

    def __init__(self, name: str, *, max_stuck: int = 4) -> None:
        self.name = name
        self.max_stuck = max_stuck
        self._pool: ThreadPoolExecutor | None = None
        self._stuck: list[asyncio.Future] = []

    async def call(self, fn: Callable[..., T], *args: object, timeout_s: float) -> T:
        self._stuck = [f for f in self._stuck if not f.done()]
        if len(self._stuck) >= self.max_stuck:
            raise TimeoutError(f"{len(self._stuck)} calls of {self.name} are still stuck past their deadline")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        future = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            log.warning("%s: no result within %g s; its thread is abandoned", self.name, timeout_s)
            self._stuck.append(future)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
