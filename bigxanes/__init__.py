"""bigxanes: chemical phase maps from TXM-XANES stacks, in memory or out-of-core (Dask, Zarr).

In memory::

    import bigxanes as bx
    ds = bx.simulate("particles", shape=(128, 128), n_components=2, sigma=7)
    result = bx.unmix(ds["stack"], ds["references"], method="rum-tv")

Out-of-core on a Dask cluster: :func:`bigxanes.engine.unmix_store`.
"""

__version__ = "0.1.0"

from .api import edge50, history_of, lcf, unmix  # noqa: E402
from .rum import RumParams  # noqa: E402
from .simulate import simulate  # noqa: E402

__all__ = ["__version__", "edge50", "history_of", "lcf", "unmix", "RumParams", "simulate"]
