"""Every op's parameter schema, without torch; importing this package registers every op.

The HTTP service validates requests with these schemas in a container that has no torch;
the ops themselves live in the family modules (``models.pooling.<family>``).
"""

from models.pooling.schemas import (
    adaptive,
    bilinear,
    fractional,
    gem,
    lp,
    median,
    mixed,
    netvlad,
    nonlocal_pool,
    pyramid,
    rmac,
    softpool,
    stochastic,
    token_mixer,
    unpool,
    window,
)

__all__ = [
    "adaptive",
    "bilinear",
    "fractional",
    "gem",
    "lp",
    "median",
    "mixed",
    "netvlad",
    "nonlocal_pool",
    "pyramid",
    "rmac",
    "softpool",
    "stochastic",
    "token_mixer",
    "unpool",
    "window",
]
