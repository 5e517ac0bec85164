"""Parameter schemas shared by the library and the HTTP API.

Field names follow torch (``kernel_size``, ``stride``, ``padding``, ...). Every
schema is a frozen pydantic model, so a validated parameter set is hashable and
can key a graph cache. Values are normalised on the way in: sizes become
``(h, w)`` pairs and padding becomes ``(left, right, top, bottom)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema, model_validator

from models.pooling.errors import PoolInputError, PoolParamError


def to_pair(value: Any) -> Any:
    """A number -> (v, v); a one-element sequence -> (v0, v0); anything else is left to
    pydantic (which then says what is wrong with it)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 1:
        return (value[0], value[0])
    return value


def _to_padding(value: Any) -> Any:
    """int -> all four sides; (ph, pw) -> symmetric; (l, r, t, b) kept as given."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value, value, value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) == 1:
            return (value[0],) * 4
        if len(value) == 2:
            return (value[1], value[1], value[0], value[0])
    return value


_INT_OR_PAIR_SCHEMA = {
    "anyOf": [
        {"type": "integer"},
        {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
    ]
}

Pair = Annotated[tuple[int, int], BeforeValidator(to_pair), WithJsonSchema(_INT_OR_PAIR_SCHEMA)]
"""An int or an (h, w) pair, normalised to a pair."""

Padding = Annotated[
    tuple[int, int, int, int],
    BeforeValidator(_to_padding),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer"},
                {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
                {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4},
            ],
            "description": "int, (pad_h, pad_w), or asymmetric (left, right, top, bottom)",
        }
    ),
]
"""Padding normalised to (left, right, top, bottom), the order of ``torch.nn.functional.pad``."""

OptionalPair = Annotated[
    tuple[int, int] | None,
    BeforeValidator(to_pair),
    WithJsonSchema({"anyOf": [*_INT_OR_PAIR_SCHEMA["anyOf"], {"type": "null"}]}),
]


INT64_MAX = 2**63 - 1
INFINITIES = {"inf": math.inf, "Infinity": math.inf, "-inf": -math.inf, "-Infinity": -math.inf}
"""How an infinite float param is written in JSON, which has no infinity."""


def _json_to_python(value: Any) -> Any:
    """JSON's forms of the values a schema takes: arrays as tuples, ``"inf"`` as infinity.
    Strict validation then refuses everything else that is not exactly the field's type."""
    if isinstance(value, list | tuple):
        return tuple(_json_to_python(v) for v in value)
    if isinstance(value, str) and value in INFINITIES:
        return INFINITIES[value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX:
        raise ValueError("integers must fit in int64")
    return value


class PoolParams(BaseModel):
    """Base for every op's parameters: unknown fields are refused, instances are immutable,
    types are strict (``true`` is not 1, ``"yes"`` is not a bool) and ints fit in int64."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _from_json(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: _json_to_python(value) for key, value in data.items()}
        return data

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape for these input shapes; raises PoolInputError when they don't fit."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """The resolved params as JSON values, infinities as the string ``"inf"``."""
        return {k: _inf_as_string(v) for k, v in self.model_dump(mode="json").items()}


def _inf_as_string(value: Any) -> Any:
    if isinstance(value, list):
        return [_inf_as_string(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def require(condition: bool, message: str) -> None:
    """Raise PoolParamError with an actionable message; used instead of ``assert``."""
    if not condition:
        raise PoolParamError(message)


def check_nchw(shape: Sequence[int], op: str) -> tuple[int, int, int, int]:
    """Input must be a non-empty 4-D NCHW tensor.

    The dims come back as given, never through ``int()``: under the dynamo exporter they are
    symbolic, and ``int()`` would specialise a dynamic batch or H/W to the traced value.
    """
    if len(shape) != 4:
        raise PoolInputError(f"{op}: expected a 4-D NCHW input, got {len(shape)}-D {tuple(shape)}")
    if any(d <= 0 for d in shape):
        raise PoolInputError(f"{op}: every input dimension must be > 0, got {tuple(shape)}")
    n, c, h, w = shape
    return n, c, h, w


Minimum = Callable[[Any, Any], Any]


def ceil_div(a: Any, b: int) -> Any:
    return -(-a // b)


def window_length(
    size: Any,
    kernel: int,
    stride: int,
    pads: tuple[int, int],
    dilation: int,
    ceil: bool,
    minimum: Minimum = min,
) -> Any:
    """torch's pooled length along one axis, for padding at most half the kernel (the
    schemas' rule), written without branches on ``size`` so a symbolic dim stays symbolic
    under torch's exporter (which passes ``minimum=torch.sym_min``).

    In ceil mode torch drops the last window when it would start in the trailing padding:
    min(ceil(span / s) + 1, ceil((size + pad_begin) / s)).
    """
    pad_begin, pad_end = pads
    span = size + pad_begin + pad_end - (dilation * (kernel - 1) + 1)
    if not ceil:
        return span // stride + 1
    return minimum(ceil_div(span, stride) + 1, ceil_div(size + pad_begin, stride))


def pooled_length(
    size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int, ceil: bool
) -> int:
    """``window_length``, or 0 when the window does not fit at all. Never ``int()`` the
    result: under torch's exporter ``size`` is symbolic, and ``int()`` would pin it."""
    if size + pad_begin + pad_end < dilation * (kernel - 1) + 1:
        return 0
    length: int = window_length(size, kernel, stride, (pad_begin, pad_end), dilation, ceil)
    return length


def check_padding(padding: tuple[int, int, int, int], kernel: tuple[int, int]) -> None:
    """torch's rule: padding (left, right, top, bottom) >= 0 and at most half the kernel."""
    left, right, top, bottom = padding
    require(min(padding) >= 0, f"padding must be >= 0, got {padding}")
    require(
        max(left, right) <= kernel[1] // 2 and max(top, bottom) <= kernel[0] // 2,
        f"padding {padding} (left, right, top, bottom) must be at most half the kernel "
        f"{kernel}: use padding <= kernel_size // 2 on each side",
    )


class KernelParams(PoolParams):
    """A kernel and a stride, which defaults to the kernel (torch's rule for every pool)."""

    kernel_size: Pair
    stride: OptionalPair = None

    @model_validator(mode="after")
    def _check_kernel(self) -> KernelParams:
        kh, kw = self.kernel_size
        require(kh > 0 and kw > 0, f"kernel_size must be > 0, got {self.kernel_size}")
        if self.stride is None:
            object.__setattr__(self, "stride", self.kernel_size)
        require(min(self.strides) > 0, f"stride must be > 0, got {self.stride}")
        return self

    @property
    def strides(self) -> tuple[int, int]:
        """The resolved stride (the validator fills ``stride`` from ``kernel_size``)."""
        return self.stride if self.stride is not None else self.kernel_size


class WindowParams(KernelParams):
    """A sliding window: kernel, stride (defaults to the kernel), padding, dilation, ceil_mode."""

    padding: Padding = (0, 0, 0, 0)
    dilation: Pair = (1, 1)
    ceil_mode: bool = False

    @model_validator(mode="after")
    def _check_window(self) -> WindowParams:
        require(self.dilation[0] > 0 and self.dilation[1] > 0, "dilation must be > 0")
        check_padding(self.padding, self.kernel_size)
        return self

    @property
    def symmetric(self) -> bool:
        left, right, top, bottom = self.padding
        return left == right and top == bottom

    def output_hw(self, h: int, w: int, op: str = "pool") -> tuple[int, int]:
        left, right, top, bottom = self.padding
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.strides, self.dilation
        oh = pooled_length(h, kh, sh, top, bottom, dh, self.ceil_mode)
        ow = pooled_length(w, kw, sw, left, right, dw, self.ceil_mode)
        if oh < 1 or ow < 1:
            raise PoolInputError(
                f"{op}: window {self.kernel_size} (dilation {self.dilation}) is larger than the "
                f"padded input {h + top + bottom}x{w + left + right}"
            )
        return oh, ow

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = check_nchw(shapes[0], type(self).__name__)
        return (n, c, *self.output_hw(h, w))


def window_work(params: WindowParams, shapes: Sequence[tuple[int, ...]]) -> int:
    """A sliding window's work: every output element reads its kernel's k_h * k_w inputs."""
    kh, kw = params.kernel_size
    return math.prod(params.output_shape(*shapes)) * kh * kw


def adaptive_span(size: int, bins: int) -> int:
    """How many input positions torch's ``bins`` adaptive bins over ``size`` read in all.

    Bin i covers [floor(i * size / bins), ceil((i + 1) * size / bins)); the lengths sum to
    size + bins - gcd(size, bins) (a bin overlaps the next one except where the split is exact).
    """
    return size + bins - math.gcd(size, bins)
