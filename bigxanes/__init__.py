"""bigxanes: chemical phase maps from TXM-XANES stacks, in memory or out-of-core on Dask and Zarr."""

__version__ = "0.1.0"
