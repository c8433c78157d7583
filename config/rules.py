"""Shapes of structured settings: the monitor's alert rules and the model price table.

They are settings (``EDDY_ALERT_RULES``, ``EDDY_MODEL_PRICES``, JSON) and so live on the ground floor;
``schemas.alerts`` re-exports them beside the ``Alert`` event they produce.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AlertRule(BaseModel):
    """Fire when ``metric`` compared with ``threshold`` holds for ``for_s`` seconds; resolve when it stops holding.

    ``metric`` names one of the monitor's windowed figures (``components.monitoring.MonitorState.values``),
    e.g. ``ttft_p95_ms``, ``error_rate``, ``dlq_per_min``, ``freshness_lag_p95_ms``,
    ``consumer_lag_max``, ``retrieval_score_drift_ks``. A figure without data never fires.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128, description="rule id; the Alert's key")
    metric: str = Field(min_length=1)
    op: Literal[">", ">=", "<", "<="] = ">"
    threshold: float
    for_s: float = Field(300.0, ge=0, description="how long the condition must hold before firing, seconds")
    severity: Literal["info", "warning", "critical"] = "warning"
    description: str = ""


class ModelPrice(BaseModel):
    """Price of a model's tokens, US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_usd_per_mtok: float = Field(0.0, ge=0)
    output_usd_per_mtok: float = Field(0.0, ge=0)
