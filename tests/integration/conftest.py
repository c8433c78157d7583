"""Fixtures of the observability tests (tracing, monitor, dashboard): a worker with the fast echo
generator and the monitor on a port of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from config.settings import Settings
from eddy.stack import Stack
from schemas import ModelPrice
from tests.conftest import TestStack, free_port


@pytest.fixture
def obs_settings(settings: Settings) -> Settings:
    """The test's settings with the echo generator (answers in milliseconds) and a monitor port of its own."""
    return settings.model_copy(update={
        "generator": "echo", "monitor_port": free_port(), "monitor_tick_s": 0.5, "monitor_lag_interval_s": 2.0,
        "tracing_export_delay_ms": 200,
        "model_prices": {"echo": ModelPrice(input_usd_per_mtok=150.0, output_usd_per_mtok=600.0)},
    })


@pytest.fixture
def obs_stack(obs_settings: Settings) -> Iterator[Stack]:
    s = TestStack(obs_settings)
    yield s
    s.stop_worker(kill=True)
