"""The pooling library: every op as a functional form, an ``nn.Module`` and a parameter schema.

Importing this package registers every op; ``list_pools()`` names them and
``create_pool(name, **params)`` builds one.
"""

from models.pooling import window  # noqa: F401  (registers its ops)
from models.pooling.errors import PoolError, PoolInputError, PoolParamError, UnknownPoolError
from models.pooling.registry import PoolSpec, create_pool, get_pool_spec, list_pools, parse_params

__all__ = [
    "PoolError",
    "PoolInputError",
    "PoolParamError",
    "PoolSpec",
    "UnknownPoolError",
    "create_pool",
    "get_pool_spec",
    "list_pools",
    "parse_params",
]
