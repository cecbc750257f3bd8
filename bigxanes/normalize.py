"""XANES edge-step normalization (moved to :mod:`bigxanes.kernels.normalize`; names kept here)."""

from .kernels.normalize import NormResult, auto_nnorm, find_e0, normalize_spectra

__all__ = ["NormResult", "auto_nnorm", "find_e0", "normalize_spectra"]
