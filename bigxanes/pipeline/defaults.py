"""The one set of names, choices and defaults of both executors (docs/architecture.md)."""

from __future__ import annotations

from ..kernels.baseline import BASELINES
from ..kernels.maps import MASK_THRESHOLD
from ..kernels.pass1 import LCF_SOLVERS
from ..kernels.stats import HIST_BINS
from ..rum import METHODS as RUM_METHODS

#: Every method of ``bx.unmix`` and ``unmix_store``.
METHODS = ("lcf", "edge50") + RUM_METHODS
#: LCF variants (``variant`` of ``bx.lcf``, ``lcf_variant`` of ``unmix_store``).
LCF_VARIANTS = tuple(LCF_SOLVERS)
#: What to do with spectra holding NaN/Inf: zero them and leave them out of ``mask``, or raise.
NAN_POLICIES = ("mask", "raise")
DEFAULT_NAN_POLICY = "mask"
DEFAULT_BASELINE = "pre-edge"
#: Energies at least this many after an ``energy_range`` selection.
MIN_ENERGIES = 3

__all__ = [
    "BASELINES",
    "DEFAULT_BASELINE",
    "DEFAULT_NAN_POLICY",
    "HIST_BINS",
    "LCF_VARIANTS",
    "MASK_THRESHOLD",
    "METHODS",
    "MIN_ENERGIES",
    "NAN_POLICIES",
    "component_names",
]


def component_names(n: int) -> list[str]:
    """Default names of ``n`` references without names of their own: ``ref1 .. refn``."""
    return [f"ref{i + 1}" for i in range(int(n))]
