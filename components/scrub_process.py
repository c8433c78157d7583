"""``ProcessScrubber``: a Scrubber run in a child process of its own, so that a scrub past its deadline is
killed (with its process) instead of holding a thread of the worker for as long as it runs.

The child is started with ``spawn`` (a fresh interpreter: no copy of the worker's threads, event loop or
Kafka clients) and builds its scrubber with ``factory`` (picklable, e.g. ``partial(PresidioScrubber, key,
internal_domains=...)``), then ``start()``s it (the spaCy model loads there, not in the worker). One scrub
runs at a time. :meth:`ProcessScrubber.scrub_async` is what the curator awaits: past ``timeout_s`` the
child is killed, TimeoutError is raised (the caller fails closed) and a new child is started for the next
call, whose deadline only counts once that child is ready (``start_timeout_s`` covers the start).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from components.base import Conversation, Scrubbed, Scrubber, ScrubError

log = logging.getLogger(__name__)

_scrubber: Scrubber | None = None  # in the child: the scrubber ``factory`` built


def _start_child(factory: Callable[[], Scrubber]) -> None:
    global _scrubber
    _scrubber = factory()
    _scrubber.start()


def _ready() -> int:
    import os

    return os.getpid()


def _scrub(conversations: list[Conversation]) -> list[Scrubbed]:
    if _scrubber is None:
        raise ScrubError("the scrubbing process has no scrubber")
    return _scrubber.scrub_batch(conversations)


class ProcessScrubber:
    """Scrubber in a killable child process; ``version`` is the inner scrubber's (given, not asked: the
    worker records it without starting a child)."""

    def __init__(self, factory: Callable[[], Scrubber], version: str, *, start_timeout_s: float = 300.0) -> None:
        self.factory = factory
        self.version = version
        self.start_timeout_s = start_timeout_s
        self.pid: int | None = None  # the current child's
        self._pool: ProcessPoolExecutor | None = None
        self._lock: asyncio.Lock | None = None

    # ------------------------------------------------------------------ lifecycle
    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_child, initargs=(self.factory,))

    def start(self) -> None:
        """Start the child and wait until its scrubber is loaded (blocking)."""
        if self._pool is None:
            pool = self._new_pool()
            try:
                self.pid = pool.submit(_ready).result(timeout=self.start_timeout_s)
            except BaseException:
                self._kill(pool)
                raise
            self._pool = pool
            log.info("scrubber %s started in process %d", self.version, self.pid)

    async def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            pool = self._new_pool()
            try:
                self.pid = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(pool, _ready),
                                                  self.start_timeout_s)
            except BaseException:
                self._kill(pool)
                raise
            self._pool = pool
            log.info("scrubber %s restarted in process %d", self.version, self.pid)
        return self._pool

    def _kill(self, pool: ProcessPoolExecutor | None) -> None:
        if pool is None:
            return
        for process in list((getattr(pool, "_processes", None) or {}).values()):  # the executor has no kill()
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        if pool is self._pool:
            self._pool, self.pid = None, None

    def close(self) -> None:
        self._kill(self._pool)

    # ------------------------------------------------------------------ scrubbing
    async def scrub_async(self, conversations: Sequence[Conversation], timeout_s: float) -> list[Scrubbed]:
        """Scrub in the child; past ``timeout_s`` (from when the child is ready) kill it and raise TimeoutError."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            pool = await self._started()
            future = asyncio.get_running_loop().run_in_executor(pool, _scrub, list(conversations))
            try:
                return await asyncio.wait_for(future, timeout_s)
            except TimeoutError:
                log.warning("scrub of %d conversations past %g s: killing scrubbing process %s", len(conversations),
                            timeout_s, self.pid)
                self._kill(pool)
                raise
            except BrokenProcessPool as exc:  # the child died (e.g. out of memory)
                self._kill(pool)
                raise ScrubError(f"the scrubbing process died: {exc}") from exc

    def scrub_batch(self, conversations: Sequence[Conversation]) -> list[Scrubbed]:
        """Blocking, without a deadline (the curator uses :meth:`scrub_async`)."""
        self.start()
        assert self._pool is not None
        return self._pool.submit(_scrub, list(conversations)).result()
