"""The op registry: stable names mapped to a parameter schema and a module.

``create_pool("max", kernel_size=2)`` validates the parameters with the op's schema
and builds its ``nn.Module``. The HTTP API and the exporter read the same entries,
so a name means the same op everywhere.

The registry is torch-free: a spec names its module by import path, and the module (and
with it torch) is imported only when ``PoolSpec.module`` is first read. The API validates
parameters without ever importing torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError

from models.pooling.errors import PoolParamError, UnknownPoolError
from models.pooling.params import PoolParams

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class PoolSpec:
    """One registered op.

    Attributes:
        name: the stable name used by ``create_pool`` and the API.
        params: the pydantic schema that validates and normalises the op's parameters.
        module_path: where the ``nn.Module`` class lives, as ``"package.module:Class"``.
        summary: one line for the README and the API's op listing.
        inputs: names of the tensor inputs, in call order.
        learnable: True when the op carries weights (they come from a checkpoint or a seed).
    """

    name: str
    params: type[PoolParams]
    module_path: str
    summary: str
    inputs: tuple[str, ...] = ("x",)
    learnable: bool = False

    @property
    def module(self) -> Callable[[Any], nn.Module]:
        """The module class that ``module_path`` names, imported on first use (this imports
        torch)."""
        return _import_object(self.module_path)


@cache
def _import_object(path: str) -> Callable[[Any], nn.Module]:
    """Import ``"package.module:Name"`` and return ``Name``."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"module path must look like 'package.module:Class', got {path!r}")
    return cast("Callable[[Any], nn.Module]", getattr(importlib.import_module(module_name), attr))


_REGISTRY: dict[str, PoolSpec] = {}


def register_pool(spec: PoolSpec) -> PoolSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"pool op {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def list_pools() -> list[str]:
    """Every registered op name, sorted."""
    return sorted(_REGISTRY)


def get_pool_spec(name: str) -> PoolSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownPoolError(
            f"unknown pooling op {name!r}; expected one of {list_pools()}"
        ) from None


def parse_params(name: str, **params: Any) -> PoolParams:
    """Validate ``params`` against the op's schema, raising PoolParamError on any problem."""
    spec = get_pool_spec(name)
    try:
        return spec.params(**params)
    except ValidationError as exc:
        raise PoolParamError(f"{name}: {describe_validation_error(exc)}") from None


def create_pool(name: str, **params: Any) -> nn.Module:
    """Build the module for op ``name`` from keyword parameters."""
    spec = get_pool_spec(name)
    return spec.module(parse_params(name, **params))


def describe_validation_error(exc: ValidationError) -> str:
    """A one-line summary of a pydantic error that never echoes the input value back."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "params"
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
