"""``alerts`` (Alert): an alert rule of the monitor fired or resolved. Also the rule and price-table
shapes the settings carry (``EDDY_ALERT_RULES``, ``EDDY_MODEL_PRICES``, JSON)."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.base import Event


class AlertRule(BaseModel):
    """Fire when ``metric`` compared with ``threshold`` holds for ``for_s`` seconds; resolve when it stops holding.

    ``metric`` names one of the monitor's windowed figures (``agents.monitor.MonitorState.values``),
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


class Alert(Event):
    """One transition of an alert rule. Keyed by ``rule``.

    ``state="firing"`` when the condition has held for ``for_s`` seconds (``since`` = when it
    started holding); ``state="resolved"`` when it stops holding after having fired.
    """

    rule: str
    state: Literal["firing", "resolved"]
    severity: Literal["info", "warning", "critical"]
    metric: str
    op: Literal[">", ">=", "<", "<="]
    threshold: float
    value: float | None = Field(description="the metric's value at the transition (None when it has no data)")
    for_s: float
    since: AwareDatetime = Field(description="when the condition started holding")
    description: str = ""
