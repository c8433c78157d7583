"""Progress of a long pipeline run, reported phase by phase (the ``eddy`` command draws bars from it)."""

from __future__ import annotations


class Reporter:
    """Receives a run's progress: phases with a known number of steps; this base ignores it."""

    def start(self, task: str, total: int) -> None:
        """A phase named ``task`` with ``total`` steps begins."""

    def advance(self, task: str, n: int = 1) -> None:
        """``n`` more steps of ``task`` are done."""
