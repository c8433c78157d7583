"""Summary statistics shared by the monitor, ingest totals, evaluation reports, the demo and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (``q`` in 0..100) of ``values``, in their unit, with numpy's default
    linear interpolation. Raises IndexError when ``values`` is empty."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))
