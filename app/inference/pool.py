"""/pool: validate an op request, price it, build (or reuse) its graph, run it.

Everything op-specific comes from the op's registry entry (``models.pooling``: inputs and
their bounds, outputs, params schema) and its lowering's (``export.runtime``: graph and
cost); nothing here names an op. Parameters go through the library's pydantic schemas,
shapes through the schema's ``output_shape``, so a request torch would refuse is a 422
here, never an empty or wrong onnxruntime result. Learnable ops (netvlad, nonlocal) run the
repository's ``pool_op`` entry that holds their weights (``model=<entry>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import numpy as np
import onnx

from app.core.config import Settings
from app.core.errors import ApiError, ErrorCode, check_json_numbers
from app.core.offload import OFF_LOOP_ELEMENTS, off_loop_if
from app.inference.deadline import RunControl
from app.inference.gate import HEAVY_FRACTION
from app.inference.graph_builder import BuildJob, GraphBuilder
from app.inference.graph_cache import GraphCache, PoolGraph
from app.inference.pool_inputs import check_inputs, draw_missing
from app.inference.runner import Runner
from app.inference.sessions import LoadedModel, open_session
from app.inference.trim import TRIM_AFTER_BYTES, release_freed_memory
from export.runtime.cost import Cost, estimate
from export.runtime.errors import LoweringError
from export.runtime.lowering import FLOAT_DTYPES, Lowering, select_lowering
from models.pooling import PoolError, get_pool_spec, list_pools, parse_params
from models.pooling.params import PoolParams
from models.pooling.registry import PoolSpec


@dataclass(frozen=True)
class PoolRequest:
    op: str
    params: Mapping[str, Any]
    tensors: Mapping[str, np.ndarray]
    model: str | None = None
    json_reply: bool = False
    """The result goes back as JSON, which has its own element cap."""
    control: RunControl | None = None
    """Stops the run when the client goes (the route watches the connection)."""


@dataclass(frozen=True)
class PoolResult:
    op: str
    params: dict[str, Any]
    outputs: dict[str, np.ndarray]
    provider: str
    lowering: str
    drawn: dict[str, str] = field(default_factory=dict)
    """Inputs the service drew itself, and how (``numpy-seed=3``)."""


def spec_of(op: str) -> PoolSpec:
    if op not in list_pools():  # the name is not echoed back
        raise ApiError(ErrorCode.UNKNOWN_OP, f"unknown pooling op; expected one of {list_pools()}")
    return get_pool_spec(op)


def validate_params(op: str, raw: Mapping[str, Any]) -> PoolParams:
    try:
        return parse_params(op, **raw)
    except PoolError as exc:
        raise ApiError(ErrorCode.INVALID_PARAMS, str(exc)) from None
    except TypeError:  # keyword names that are not strings
        raise ApiError(ErrorCode.INVALID_PARAMS, f"{op}: params must be an object") from None


class PoolEngine:
    def __init__(
        self,
        settings: Settings,
        runner: Runner,
        cache: GraphCache,
        models: Mapping[str, LoadedModel],
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.cache = cache
        self.models = models
        self.builder = GraphBuilder(settings.max_waiting, runner.on_worker)
        runner.on_close(self.builder.close)

    def entries_for(self, op: str) -> list[str]:
        """The loaded repository entries that hold a learnable op's weights."""
        return sorted(
            n for n, m in self.models.items() if m.entry.kind == "pool_op" and m.entry.op == op
        )

    async def run(self, request: PoolRequest) -> PoolResult:
        spec = spec_of(request.op)
        if spec.learnable:
            return await self._run_entry(spec, request)
        if request.model is not None:
            raise ApiError(
                ErrorCode.UNEXPECTED_MODEL, f"{spec.name} has no weights; do not name a model"
            )
        params = validate_params(spec.name, request.params)
        x = _float_x(spec.name, request.tensors)
        lowering = self._lowering(spec.name, params, x.dtype.name)
        tensors, drawn = draw_missing(spec, params, request.tensors)
        shapes = await _checked(spec, params, lowering.inputs, tensors)
        cost = self._admit(request, lowering, params, shapes, x.dtype.name)
        async with self.runner.heavy.slot() if self._heavy(cost) else nullcontext():
            graph = await self._graph(lowering, params, x)
            feeds = {name: np.ascontiguousarray(tensors[name]) for name in graph.input_names}
            outputs = await self.runner.run_session(
                f"pool:{spec.name}", graph.session, feeds, request.control, shrink_arena=True
            )
        if cost.peak_bytes > TRIM_AFTER_BYTES:  # a worker thread, but no inference slot
            await anyio.to_thread.run_sync(release_freed_memory)
        named = dict(zip(spec.output_names(params), outputs, strict=True))
        result_params = params.to_json()
        return PoolResult(spec.name, result_params, named, graph.providers[0], lowering.kind, drawn)

    async def _run_entry(self, spec: PoolSpec, request: PoolRequest) -> PoolResult:
        """A learnable op: the repository entry holding its weights, with its fixed params."""
        loaded = self._entry(spec.name, request.model)
        stored = validate_params(spec.name, loaded.entry.params or {})
        if request.params and validate_params(spec.name, request.params) != stored:
            raise ApiError(
                ErrorCode.PARAMS_MISMATCH,
                f"{loaded.name} was exported with fixed params "
                f"{stored.to_json()}; send none or exactly those",
            )
        x = _float_x(spec.name, request.tensors)
        if x.dtype.name != loaded.entry.inputs[0].dtype:
            raise ApiError(
                ErrorCode.UNSUPPORTED_DTYPE, f"{loaded.name} takes {loaded.entry.inputs[0].dtype}"
            )
        shapes = await _checked(spec, stored, loaded.input_names, request.tensors)
        _check_entry_shape(loaded, x)
        # the entry is torch's export; its op's own lowering prices the same computation
        self._admit(
            request, self._lowering(spec.name, stored, x.dtype.name), stored, shapes, x.dtype.name
        )
        feeds = {loaded.input_names[0]: np.ascontiguousarray(x)}
        outputs = await self.runner.run_session(loaded.name, loaded.session, feeds, request.control)
        named = dict(zip(spec.output_names(stored), outputs, strict=True))
        params = stored.to_json()
        return PoolResult(spec.name, params, named, loaded.provider, "repository")

    def _entry(self, op: str, name: str | None) -> LoadedModel:
        entries = self.entries_for(op)
        if name is None or name not in entries:
            raise ApiError(
                ErrorCode.MODEL_REQUIRED,
                f"{op} is learnable: name the repository entry that holds its weights with "
                f"model=<name>; loaded entries for it: {entries}",
            )
        return self.models[name]

    def _heavy(self, cost: Cost) -> bool:
        s = self.settings
        return (
            cost.work > HEAVY_FRACTION * s.max_pool_work
            or cost.peak_bytes > HEAVY_FRACTION * s.max_pool_memory_bytes
            or cost.graph_nodes > HEAVY_FRACTION * s.max_graph_nodes
        )

    def _lowering(self, op: str, params: PoolParams, dtype: str) -> Lowering:
        try:
            return select_lowering(op, params, dtype, self.settings.pool_prefer)
        except LoweringError as exc:
            raise ApiError(ErrorCode.UNSUPPORTED_PARAMS, str(exc)) from None

    def _admit(
        self,
        request: PoolRequest,
        lowering: Lowering,
        params: PoolParams,
        shapes: list[tuple[int, ...]],
        dtype: str,
    ) -> Cost:
        """Price the request from the registry's estimates; refuse it before anything is
        built or allocated when any part is over its budget."""
        cost = estimate(lowering, params, shapes, dtype)
        s = self.settings
        _admit_result(request, cost.output_elements, cost.result_bytes, s)
        for value, limit, what, setting in (
            (cost.graph_nodes, s.max_graph_nodes, "graph nodes", "max_graph_nodes"),
            (cost.work, s.max_pool_work, "operations", "max_pool_work"),
            (cost.peak_bytes, s.max_pool_memory_bytes, "bytes of memory", "max_pool_memory_bytes"),
        ):
            if value > limit:
                raise ApiError(
                    ErrorCode.TOO_EXPENSIVE,
                    f"{lowering.op} with these params and shapes needs about {value:.3g} "
                    f"{what}, over the {limit} allowed (setting {setting})",
                )
        return cost

    async def _graph(self, lowering: Lowering, params: PoolParams, x: np.ndarray) -> PoolGraph:
        """The cached session for this graph. A miss is built by the builder's process, and
        its session opened on a worker thread: a hit never waits for a build."""
        static_hw = (int(x.shape[2]), int(x.shape[3])) if lowering.needs_static_hw else None
        key = (lowering.op, lowering.kind, params, x.dtype.name, static_hw)
        graph = self.cache.get(key)
        if graph is not None:
            return graph
        job = BuildJob(lowering.op, lowering.kind, params, x.dtype.name, static_hw)
        model = await self._build(job)
        return await self.runner.on_worker(lambda: self.cache.put(key, self._open(lowering, model)))

    async def _build(self, job: BuildJob) -> bytes:
        try:
            return await self.builder.build(job)
        except LoweringError as exc:
            raise ApiError(ErrorCode.UNSUPPORTED_PARAMS, str(exc)) from None

    def _open(self, lowering: Lowering, model: bytes) -> PoolGraph:
        proto = onnx.load_from_string(model)
        session, active = open_session(proto, self.settings, f"pool:{lowering.op}", one_off=True)
        names = tuple(v.name for v in session.get_inputs())
        return PoolGraph(session, tuple(active), names, len(model))


def _float_x(op: str, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
    """The ``x`` input: present, a float dtype graphs are built in, NCHW."""
    x = tensors.get("x")
    if x is None:
        raise ApiError(ErrorCode.MISSING_TENSOR, "send the input tensor")
    if x.dtype.name not in FLOAT_DTYPES:
        raise ApiError(
            ErrorCode.UNSUPPORTED_DTYPE, f"the input tensor must be one of {FLOAT_DTYPES}"
        )
    if x.ndim != 4:  # every op pools NCHW maps
        raise ApiError(ErrorCode.INVALID_INPUT, f"{op}: expected a 4-D NCHW tensor, got {x.ndim}-D")
    return x


def _check_entry_shape(loaded: LoadedModel, x: np.ndarray) -> None:
    """x against the dims and minimum size the repository entry declares."""
    spec = loaded.entry.inputs[0].shape
    wrong = [i for i, d in enumerate(spec) if isinstance(d, int) and x.shape[i] != d]
    if x.ndim != len(spec) or wrong:
        raise ApiError(ErrorCode.INVALID_INPUT, f"{loaded.name} takes inputs of shape {list(spec)}")
    low = loaded.entry.min_hw or 1
    if min(x.shape[2:]) < low:
        raise ApiError(ErrorCode.INVALID_INPUT, f"{loaded.name} needs H and W of at least {low}")


def _admit_result(
    request: PoolRequest, elements: int, result_bytes: int, settings: Settings
) -> None:
    if elements > settings.max_tensor_elements or result_bytes > settings.max_result_bytes:
        raise ApiError(
            ErrorCode.OUTPUT_TOO_LARGE,
            f"{request.op} would return {elements} elements ({result_bytes} bytes), over "
            f"max_tensor_elements {settings.max_tensor_elements} or max_result_bytes "
            f"{settings.max_result_bytes}; send a smaller tensor",
        )
    if request.json_reply:
        check_json_numbers(
            elements,
            settings.max_json_result_elements,
            f"{request.op}'s result",
            "Accept: application/x-npy",
        )


async def _checked(
    spec: PoolSpec, params: PoolParams, names: tuple[str, ...], tensors: Mapping[str, np.ndarray]
) -> list[tuple[int, ...]]:
    """``check_inputs``; on a worker thread for large tensors (finiteness scans them)."""
    large = sum(t.size for t in tensors.values()) > OFF_LOOP_ELEMENTS
    return await off_loop_if(large, check_inputs, spec, params, names, tensors)
