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
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import ValidationError

from models.pooling.errors import PoolParamError, UnknownPoolError, describe_validation_errors
from models.pooling.params import PoolParams

if TYPE_CHECKING:
    from torch import nn


Dim = str | int
"""A tensor dim: a number, or a symbol. ``N``, ``C``, ``H``, ``W`` are x's dims wherever they
appear; any other symbol (``C2``) is free."""
Shape = tuple[int, ...]
NCHW: tuple[Dim, ...] = ("N", "C", "H", "W")


@dataclass(frozen=True)
class TensorSpec:
    """One tensor input of an op, as the API and the ONNX graph see it.

    Attributes:
        name: ``x``, or the extra input's name (``indices``, ``y``, ``samples``).
        dtype: ``float`` (whatever float dtype x is sent in) or ``int64``.
        dims: its dims, symbols shared with x (see ``Dim``).
        doc: one line for the API's documentation.
        bounds: the values the op accepts: ``unit`` is [0, 1); ``output_plane`` is
            [0, out_h * out_w), an index into one plane of the output.
        seed_param: the input is optional: when absent, it is drawn uniformly in [0, 1)
            from a generator seeded with this parameter (fresh when the parameter is None).
    """

    name: str
    dtype: Literal["float", "int64"] = "float"
    dims: tuple[Dim, ...] = NCHW
    doc: str = ""
    bounds: Literal["unit", "output_plane"] | None = None
    seed_param: str | None = None


X = TensorSpec("x", doc="the input feature maps, (N, C, H, W)")


def _elementwise(params: Any, shapes: Sequence[Shape]) -> int:
    """Work of an op that reads each input element about once."""
    return math.prod(shapes[0])


@dataclass(frozen=True)
class PoolSpec:
    """One registered op and everything the rest of poolserve needs to know about it.

    Attributes:
        name: the stable name used by ``create_pool`` and the API.
        params: the pydantic schema that validates and normalises the op's parameters.
        module_path: where the ``nn.Module`` class lives, as ``"package.module:Class"``.
        summary: one line for the README and the API's op listing.
        inputs: the tensor inputs, ``x`` first (see ``TensorSpec``).
        indices: the op can also return int64 indices (its params' ``return_indices``).
        learnable: the op carries weights (from a checkpoint or a seed), so /pool runs a
            repository model that holds them.
        examples: parameter sets that exercise the op, the first one typical; docs, bench
            and tests read them.
        fixed_dims: the input dims the params fix (``{"C": dim}``), by symbol.
        work: about how many elementary operations the op costs for these input shapes,
            from the params and shapes alone (``export.runtime.cost``).
        function_path: the functional form ``f(x, params, *drawn)``, for an op whose
            module draws an input itself (so a caller can pass the same draw).
    """

    name: str
    params: type[PoolParams]
    module_path: str
    summary: str
    inputs: tuple[TensorSpec, ...] = (X,)
    indices: bool = False
    learnable: bool = False
    examples: tuple[Mapping[str, Any], ...] = ({},)
    fixed_dims: Callable[[Any], Mapping[str, int]] | None = None
    work: Callable[[Any, Sequence[Shape]], int] = _elementwise
    function_path: str | None = None

    @property
    def module(self) -> Callable[[Any], nn.Module]:
        """The module class that ``module_path`` names, imported on first use (this imports
        torch)."""
        return _import_object(self.module_path)

    @property
    def function(self) -> Callable[..., Any] | None:
        """The functional form ``function_path`` names, imported on first use (torch)."""
        return _import_object(self.function_path) if self.function_path else None

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def module_inputs(self) -> tuple[str, ...]:
        """The inputs the module's ``forward`` takes (drawn inputs it draws itself)."""
        return tuple(t.name for t in self.inputs if t.seed_param is None)

    def output_names(self, params: Any) -> tuple[str, ...]:
        """``y``, and ``indices`` when these params ask for them."""
        wants = self.indices and bool(getattr(params, "return_indices", False))
        return ("y", "indices") if wants else ("y",)

    def input_spec(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)


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
        problems = exc.errors(include_input=False, include_url=False)
        message = describe_validation_errors(problems, fields=spec.params.model_fields)
        raise PoolParamError(f"{name}: {message}") from None


def create_pool(name: str, **params: Any) -> nn.Module:
    """Build the module for op ``name`` from keyword parameters."""
    spec = get_pool_spec(name)
    return spec.module(parse_params(name, **params))


def extra_input_names() -> tuple[str, ...]:
    """Every input name other than ``x`` that some op takes, in registration order."""
    names = [t.name for spec in _REGISTRY.values() for t in spec.inputs if t.name != "x"]
    return tuple(dict.fromkeys(names))


def extra_input_spec(name: str) -> TensorSpec:
    """The spec of an extra input (the first op that takes it describes it)."""
    return next(t for spec in _REGISTRY.values() for t in spec.inputs if t.name == name)
