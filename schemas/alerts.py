"""``alerts`` (Alert): an alert rule of the monitor fired or resolved.

The rule and price-table shapes the settings carry (``EDDY_ALERT_RULES``, ``EDDY_MODEL_PRICES``, JSON)
live with the settings in ``config.rules`` and are re-exported here."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from config.rules import AlertRule, ModelPrice
from schemas.base import Event

__all__ = ["Alert", "AlertRule", "ModelPrice"]


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
