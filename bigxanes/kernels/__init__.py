"""Pure NumPy block kernels. Each function works on one block (the whole array in memory, or one
chunk with its halo under Dask) and never imports dask."""
