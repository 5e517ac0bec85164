"""Lowerings, one module per pooling family (mirroring ``models/pooling``).

Importing this package registers every lowering. The modules import nothing from torch and,
from ``models.pooling``, only the torch-free schema modules (rmac's region grid): they read
parameters by field name from the op's validated schema.
"""

from export.runtime.lowerings import (
    adaptive,  # noqa: F401
    bilinear,  # noqa: F401
    fractional,  # noqa: F401
    gem,  # noqa: F401
    lp,  # noqa: F401
    median,  # noqa: F401
    mixed,  # noqa: F401
    netvlad,  # noqa: F401
    nonlocal_pool,  # noqa: F401
    pyramid,  # noqa: F401
    rmac,  # noqa: F401
    softpool,  # noqa: F401
    stochastic,  # noqa: F401
    token_mixer,  # noqa: F401
    unpool,  # noqa: F401
    window,  # noqa: F401  (registers its lowerings)
)
