"""The pooling library: every op as a functional form, an ``nn.Module`` and a parameter schema.

Importing this package registers every op; ``list_pools()`` names them and
``create_pool(name, **params)`` builds one. The package itself is torch-free (schemas,
registry, errors), so a service can validate parameters without torch; an op's module,
and torch with it, is imported when it is first built.
"""

from models.pooling import schemas  # noqa: F401  (registers every op)
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
