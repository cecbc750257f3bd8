"""Out-of-core engine: Zarr stacks -> phase maps on Dask (docs/design.md, "Both executors").

Public entry points: :func:`unmix_store`, :func:`estimate_resources`, :func:`get_client`.
"""

from .cluster import get_client
from .unmix import DEFAULT_TILE, METHODS, InjectedFailure, estimate_resources, unmix_store

__all__ = [
    "unmix_store",
    "estimate_resources",
    "get_client",
    "DEFAULT_TILE",
    "METHODS",
    "InjectedFailure",
]
