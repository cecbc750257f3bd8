"""Pre-edge baseline removal (moved to :mod:`bigxanes.kernels.baseline`; names kept here)."""

from .kernels.baseline import (
    BASELINES,
    MIN_PRE_EDGE_POINTS,
    pre_edge_window,
    pre_edge_window_from_data,
    resolve_baseline,
    subtract_pre_edge,
)

__all__ = [
    "BASELINES",
    "MIN_PRE_EDGE_POINTS",
    "pre_edge_window",
    "pre_edge_window_from_data",
    "resolve_baseline",
    "subtract_pre_edge",
]
