"""The pipeline both executors share: input preparation (:mod:`.prepare`), result assembly
(:mod:`.result`) and the one set of defaults (:mod:`.defaults`).

The in-memory API (:mod:`bigxanes.api`) runs it with the whole array as one block; the engine
(:mod:`bigxanes.engine`) runs the same kernels block-wise on Dask (docs/architecture.md).
"""
