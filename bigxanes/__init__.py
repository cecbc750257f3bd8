"""bigxanes: chemical phase maps from TXM-XANES stacks, in memory or out-of-core (Dask, Zarr)."""

__version__ = "0.1.0"
