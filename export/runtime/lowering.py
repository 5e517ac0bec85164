"""The lowering registry: for each pooling op, the ways it can be written in ONNX.

A lowering is a plain function ``build(emit, params, *inputs)`` that emits ONNX nodes through
an onnxscript ``OpBuilder`` (``emit.MaxPool(x, kernel_shape=[3, 3])``) and returns the output
values. It never touches torch, so the same function builds the graph the service runs and
replaces the op inside a torch-exported model (see ``export.torch_export``).

Each lowering has one kind:

- ``native``: one standard ONNX op that already has the op's semantics;
- ``decomposition``: several standard ONNX ops (slices, TopK, Pad, ...);
- ``custom``: a node in ``ai.onnx.contrib`` run by a kernel that ``export.runtime.sessions``
  registers.

Standard lowerings run on every execution provider (CUDA, TensorRT, Triton); custom ones are
the fallback for ops whose standard form is slow or large.

Some lowerings need more than the params, and say so in their ``Lowering`` fields:

- ``needs_static_hw``: the graph is built for one (H, W) (rmac's region grid); the caller
  passes ``static_hw`` to ``export.runtime.graph.build_pool_graph`` and ``build`` reads the fixed
  dims from ``x.shape`` (``static_hw(x)``);
- ``weight_shapes``: learned weights (netvlad, nonlocal), by the torch module's
  ``state_dict()`` key; ``build`` gets them as initializers, ``build(emit, params, *inputs,
  weights={key: value})``;

Each lowering also states its cost before anything is built (``export.runtime.cost``):
``nodes``, the exact node count of the graph ``build_pool_graph`` writes, and
``peak_bytes``, the largest total of tensors alive at once while that graph runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import onnx_ir as ir

from export.runtime.errors import LoweringError

LoweringKind = Literal["native", "decomposition", "custom"]
Prefer = Literal["standard", "custom"]
Outputs = ir.Value | tuple[ir.Value, ...]


class Ops(Protocol):
    """What a lowering builds with: ``emit.MaxPool(x, kernel_shape=[2, 2])`` adds a node and
    returns its output. onnxscript's ``OpBuilder`` is one; extra keywords ``_domain``,
    ``_version`` and ``_outputs`` pick a custom domain or several outputs (see ``outputs``).
    """

    def __getattr__(self, op_type: str) -> Callable[..., ir.Value]: ...


def outputs(values: object, count: int) -> tuple[ir.Value, ...]:
    """The outputs of a node built with ``_outputs=count``, typed as a tuple."""
    if not isinstance(values, Sequence) or len(values) != count:
        raise TypeError(f"expected {count} output values, got {values!r}")
    return tuple(values)


STANDARD_KINDS: tuple[LoweringKind, ...] = ("native", "decomposition")
FLOAT_DTYPES = ("float32", "float16")
"""The float dtypes graphs are built in. float64 is left out: onnxruntime's CPU provider has
no double AveragePool or LpPool."""


def _no_limit(params: Any) -> str | None:
    return None


WeightShapes = Callable[[Any], Mapping[str, tuple[int, ...]]]
"""params -> the weights a lowering needs: state_dict key -> shape."""
Shape = tuple[int, ...]
NodeCount = Callable[[Any, Shape], int]
"""params, x's (N, C, H, W) -> how many nodes the graph has (only rmac's depends on x)."""
PeakBytes = Callable[[Any, Sequence[Shape], int], int]
"""params, the input shapes (x first), bytes per float element -> the largest total of
intermediate and output tensors alive at once while the graph runs (inputs and weights not
counted: the request and the model already hold them)."""


@dataclass(frozen=True)
class Lowering:
    """One way to write an op in ONNX.

    Attributes:
        op: the pooling registry name (``"max"``, ``"avg"``, ...).
        kind: ``native``, ``decomposition`` or ``custom``.
        build: ``build(emit, params, *inputs) -> value or tuple of values``.
        limitation: returns why these params cannot use this lowering, or None when they can.
        dtypes: input dtypes the lowering handles (custom kernels are float32 only).
        inputs: names of the tensor inputs, in ``build``'s order.
        tolerance: absolute fp32 error allowed against torch (the default 1e-5 unless
            ``note`` says why not).
        note: one line for the ops table: what the lowering emits, any caveat.
        needs_static_hw: the graph is built for one input (H, W), given as ``static_hw``.
        weight_shapes: the learned weights ``build`` needs (key -> shape), or None.
        unused_weights: state_dict keys accepted and ignored (BatchNorm's
            ``num_batches_tracked``), so a whole state_dict can be passed.
        nodes: the graph's exact node count (see ``NodeCount``).
        peak_bytes: its peak memory while running (see ``PeakBytes``).
    """

    op: str
    kind: LoweringKind
    build: Callable[..., Outputs]
    limitation: Callable[[Any], str | None] = _no_limit
    dtypes: frozenset[str] = frozenset(FLOAT_DTYPES)
    inputs: tuple[str, ...] = ("x",)
    tolerance: float = 1e-5
    note: str = ""
    needs_static_hw: bool = False
    weight_shapes: WeightShapes | None = None
    unused_weights: frozenset[str] = frozenset()
    nodes: NodeCount | None = None
    peak_bytes: PeakBytes | None = None

    @property
    def needs_weights(self) -> bool:
        return self.weight_shapes is not None

    def expected_weights(self, params: Any) -> dict[str, tuple[int, ...]]:
        """The weights ``build`` needs for ``params`` (key -> shape); empty for none."""
        return dict(self.weight_shapes(params)) if self.weight_shapes is not None else {}

    def refusal(self, params: Any, dtype: str) -> str | None:
        """Why this lowering cannot build ``params`` for ``dtype``, or None when it can."""
        if dtype not in self.dtypes:
            return (
                f"{self.kind} lowering of {self.op!r} supports {sorted(self.dtypes)}, not {dtype}"
            )
        return self.limitation(params)


def static_hw(x: ir.Value) -> tuple[int, int]:
    """The fixed (H, W) of an NCHW value, for lowerings built for one input size."""
    dims = list(x.shape) if x.shape is not None else []
    h, w = dims[2:4] if len(dims) == 4 else (None, None)
    if not (isinstance(h, int) and isinstance(w, int)):
        raise LoweringError(
            f"this lowering needs a fixed input height and width, but the input's shape is "
            f"{dims or 'unknown'}; pass static_hw=(H, W) to build_pool_graph"
        )
    return h, w


_LOWERINGS: dict[str, dict[LoweringKind, Lowering]] = {}


def register_lowering(lowering: Lowering) -> Lowering:
    """Add a lowering; one per (op, kind)."""
    kinds = _LOWERINGS.setdefault(lowering.op, {})
    if lowering.kind in kinds:
        raise ValueError(f"{lowering.kind} lowering of {lowering.op!r} is registered twice")
    kinds[lowering.kind] = lowering
    return lowering


def lowered_ops() -> list[str]:
    """Every op with at least one lowering, sorted."""
    return sorted(_LOWERINGS)


def lowerings_for(op: str) -> list[Lowering]:
    """The op's lowerings in the order native, decomposition, custom."""
    if op not in _LOWERINGS:
        raise LoweringError(f"no ONNX lowering for op {op!r}; lowered ops are {lowered_ops()}")
    kinds = _LOWERINGS[op]
    return [kinds[k] for k in ("native", "decomposition", "custom") if k in kinds]


def select_lowering(
    op: str,
    params: Any,
    dtype: str = "float32",
    prefer: Prefer = "standard",
    kind: LoweringKind | None = None,
) -> Lowering:
    """Pick the lowering for ``op`` with ``params``.

    Args:
        op: registry name of the op.
        params: the op's validated parameter object.
        dtype: input dtype name.
        prefer: ``standard`` tries native, then decomposition, then custom; ``custom`` tries
            custom first, then the standard ones.
        kind: force one kind (tests use this to reach every lowering).

    Raises:
        LoweringError: the op is unknown or no lowering accepts these params, with each
            lowering's reason.
    """
    candidates = _ordered(lowerings_for(op), prefer)
    if kind is not None:
        candidates = [c for c in candidates if c.kind == kind]
        if not candidates:
            raise LoweringError(f"op {op!r} has no {kind} lowering")
    reasons = []
    for lowering in candidates:
        reason = lowering.refusal(params, dtype)
        if reason is None:
            return lowering
        reasons.append(reason)
    raise LoweringError(f"cannot lower {op!r} with these parameters: {'; '.join(reasons)}")


def _ordered(lowerings: Sequence[Lowering], prefer: Prefer) -> list[Lowering]:
    if prefer == "custom":
        return sorted(lowerings, key=lambda lw: lw.kind != "custom")
    if prefer != "standard":
        raise LoweringError(f"prefer must be 'standard' or 'custom', got {prefer!r}")
    return list(lowerings)
