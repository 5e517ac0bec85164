"""The op registry: stable names mapped to a parameter schema and a module.

``create_pool("max", kernel_size=2)`` validates the parameters with the op's schema
and builds its ``nn.Module``. The HTTP API and the exporter read the same entries,
so a name means the same op everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from torch import nn

from models.pooling.errors import PoolParamError, UnknownPoolError
from models.pooling.params import PoolParams


@dataclass(frozen=True)
class PoolSpec:
    """One registered op.

    Attributes:
        name: the stable name used by ``create_pool`` and the API.
        params: the pydantic schema that validates and normalises the op's parameters.
        module: builds the ``nn.Module`` from validated parameters.
        summary: one line for the README and the API's op listing.
        inputs: names of the tensor inputs, in call order.
        learnable: True when the op carries weights (they come from a checkpoint or a seed).
    """

    name: str
    params: type[PoolParams]
    module: Callable[[Any], nn.Module]
    summary: str
    inputs: tuple[str, ...] = ("x",)
    learnable: bool = False


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
