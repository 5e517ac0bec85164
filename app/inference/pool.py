"""/pool: validate an op request, build (or reuse) its graph, run it.

Parameters go through the library's own pydantic schemas; shapes through the schema's
``output_shape``, so a request that torch would refuse is a 422 here, never an empty or
wrong onnxruntime result. Learnable ops (netvlad, nonlocal) run the repository's
``pool_op`` entry that holds their weights (``model=<entry>``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.codecs.tensor import check_finite
from app.core.config import Settings
from app.core.errors import ApiError
from app.inference.graph_cache import GraphCache, PoolGraph
from app.inference.runner import Runner
from app.inference.sessions import LoadedModel, open_session
from export.runtime.errors import LoweringError
from export.runtime.graph import build_pool_graph
from export.runtime.lowering import Lowering, select_lowering
from models.pooling import PoolError, get_pool_spec, list_pools, parse_params
from models.pooling.params import PoolParams

FLOAT_DTYPES = ("float32", "float16")
INPUT_DTYPES = {"indices": ("int64",)}
COLUMN_OPS = frozenset({"median", "softpool", "stochastic"})
"""Ops whose graphs lay every window out as a column: memory is kernel area x output."""
SAMPLED_INPUTS = frozenset({"samples"})
"""Inputs the service can supply itself when the client sends none."""


@dataclass(frozen=True)
class PoolCall:
    op: str
    params: Mapping[str, Any]
    tensors: Mapping[str, np.ndarray]
    model: str | None = None


@dataclass(frozen=True)
class PoolResult:
    op: str
    params: dict[str, Any]
    outputs: dict[str, np.ndarray]
    provider: str
    lowering: str
    notes: dict[str, str] = field(default_factory=dict)


def _invalid(code: str, message: str) -> ApiError:
    return ApiError(422, code, message)


def resolve_op(op: str) -> None:
    if op not in list_pools():  # the name is not echoed back
        raise _invalid("unknown_op", f"unknown pooling op; expected one of {list_pools()}")


def validate_params(op: str, raw: Mapping[str, Any]) -> PoolParams:
    try:
        return parse_params(op, **raw)
    except PoolError as exc:
        raise _invalid("invalid_params", str(exc)) from None
    except TypeError:  # keyword names that are not strings
        raise _invalid("invalid_params", f"{op}: params must be an object of names") from None


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

    def pool_entries(self, op: str) -> list[str]:
        return sorted(
            n for n, m in self.models.items() if m.entry.kind == "pool_op" and m.entry.op == op
        )

    async def pool(self, call: PoolCall) -> PoolResult:
        resolve_op(call.op)
        if get_pool_spec(call.op).learnable:
            return await self._pool_learnable(call)
        if call.model is not None:
            raise _invalid("unexpected_model", f"{call.op} has no weights; do not name a model")
        params = validate_params(call.op, call.params)
        x = self._x(call)
        lowering = self._lowering(call.op, params, x.dtype.name)
        tensors = dict(call.tensors)
        notes = self._fill_samples(call.op, params, lowering, tensors)
        self._check_inputs(call.op, lowering.inputs, tensors, x.dtype.name)
        out_shape = self._output_shape(call.op, params, tensors)
        self._check_work(call.op, params, out_shape)
        static_hw = (int(x.shape[2]), int(x.shape[3])) if lowering.needs_static_hw else None
        key = (call.op, params, x.dtype.name, self.settings.pool_prefer, static_hw)
        graph = await self.runner.call(
            lambda: self.cache.get_or_build(
                key, lambda: self._build(call.op, params, x.dtype.name, static_hw)
            )
        )
        feeds = {name: np.ascontiguousarray(tensors[name]) for name in graph.input_names}
        outputs = await self.runner.run_session(f"pool:{call.op}", graph.session, feeds)
        named = self._name_outputs(graph.session, outputs)
        return PoolResult(
            call.op,
            params.model_dump(mode="json"),
            named,
            graph.providers[0],
            graph.lowering,
            notes,
        )

    async def _pool_learnable(self, call: PoolCall) -> PoolResult:
        entries = self.pool_entries(call.op)
        if call.model is None or call.model not in entries:
            raise _invalid(
                "model_required",
                f"{call.op} is learnable: name the repository entry that holds its weights "
                f"with model=<name>; loaded entries for it: {entries}",
            )
        loaded = self.models[call.model]
        stored = validate_params(call.op, loaded.entry.params or {})
        if call.params and validate_params(call.op, call.params) != stored:
            raise _invalid(
                "params_mismatch",
                f"{call.model} was exported with fixed params {stored.model_dump(mode='json')}; "
                "send none or exactly those",
            )
        x = self._x(call)
        if x.dtype.name != loaded.entry.inputs[0].dtype:
            raise _invalid(
                "unsupported_dtype", f"{call.model} takes {loaded.entry.inputs[0].dtype}"
            )
        self._check_inputs(call.op, loaded.input_names, call.tensors, x.dtype.name)
        self._output_shape(call.op, stored, call.tensors)
        self._check_fixed_dims(loaded, x)
        feeds = {loaded.input_names[0]: np.ascontiguousarray(x)}
        outputs = await self.runner.run_session(call.model, loaded.session, feeds)
        named = self._name_outputs(loaded.session, outputs)
        return PoolResult(
            call.op, stored.model_dump(mode="json"), named, loaded.provider, "repository",
            {"model": call.model},
        )  # fmt: skip

    def _x(self, call: PoolCall) -> np.ndarray:
        x = call.tensors.get("x")
        if x is None:
            raise _invalid("missing_tensor", "send the input tensor")
        if x.dtype.name not in FLOAT_DTYPES:
            raise _invalid("unsupported_dtype", f"the input tensor must be one of {FLOAT_DTYPES}")
        if x.ndim != 4:  # every op pools NCHW maps
            raise _invalid(
                "invalid_input", f"{call.op}: expected a 4-D NCHW tensor, got {x.ndim}-D"
            )
        return x

    def _lowering(self, op: str, params: PoolParams, dtype: str) -> Lowering:
        try:
            return select_lowering(op, params, dtype, self.settings.pool_prefer)
        except LoweringError as exc:
            raise _invalid("unsupported_params", str(exc)) from None

    def _fill_samples(
        self, op: str, params: Any, lowering: Lowering, tensors: dict[str, np.ndarray]
    ) -> dict[str, str]:
        """fractional_max's samples: the client's, else a NumPy draw from ``seed``."""
        if "samples" not in lowering.inputs:
            return {}
        if "samples" in tensors:
            return {"samples": "client"}
        x = tensors["x"]
        seed = getattr(params, "seed", None)
        rng = np.random.default_rng(seed)
        tensors["samples"] = rng.random((x.shape[0], x.shape[1], 2), dtype=np.float32).astype(
            x.dtype
        )
        return {"samples": "numpy-fresh" if seed is None else f"numpy-seed={seed}"}

    def _check_inputs(
        self, op: str, names: tuple[str, ...], tensors: Mapping[str, np.ndarray], dtype: str
    ) -> None:
        missing = [n for n in names if n not in tensors]
        extra = [n for n in tensors if n not in names]
        if missing or extra:
            raise _invalid(
                "wrong_tensors",
                f"{op} takes the tensors {list(names)}; missing {missing}, unexpected {extra}",
            )
        for name in names:
            arr = tensors[name]
            allowed = INPUT_DTYPES.get(name, (dtype,))
            if arr.dtype.name not in allowed:
                raise _invalid("unsupported_dtype", f"tensor {name} must be {' or '.join(allowed)}")
            check_finite(arr)
        if "samples" in tensors:
            self._check_samples(tensors["x"], tensors["samples"])

    @staticmethod
    def _check_samples(x: np.ndarray, samples: np.ndarray) -> None:
        if x.ndim != 4 or samples.shape != (x.shape[0], x.shape[1], 2):
            raise _invalid("invalid_input", "samples must have shape (N, C, 2) for x (N, C, H, W)")
        if samples.min() < 0 or samples.max() >= 1:
            raise _invalid("invalid_input", "samples must lie in [0, 1)")

    def _output_shape(
        self, op: str, params: PoolParams, tensors: Mapping[str, np.ndarray]
    ) -> tuple[int, ...]:
        names = get_pool_spec(op).inputs
        shapes = [tuple(int(d) for d in tensors[n].shape) for n in names if n in tensors]
        try:
            shape = tuple(int(d) for d in params.output_shape(*shapes))
        except PoolError as exc:
            raise _invalid("invalid_input", str(exc)) from None
        if any(d < 1 for d in shape):
            raise _invalid("invalid_input", f"{op}: these params give an empty output {shape}")
        if "indices" in tensors:
            self._check_indices(tensors["indices"], shape)
        return shape

    @staticmethod
    def _check_indices(indices: np.ndarray, out_shape: tuple[int, ...]) -> None:
        plane = out_shape[-1] * out_shape[-2]
        if indices.min() < 0 or indices.max() >= plane:
            raise _invalid("invalid_input", f"indices must lie in [0, {plane}) (the output plane)")

    def _check_work(self, op: str, params: Any, out_shape: tuple[int, ...]) -> None:
        limit = self.settings.max_tensor_elements
        work = math.prod(out_shape)
        kernel = getattr(params, "kernel_size", None)
        if op in COLUMN_OPS and isinstance(kernel, tuple):
            work *= math.prod(kernel)
        if work > limit:
            raise ApiError(
                413, "output_too_large",
                f"{op} would produce more than the {limit} elements allowed (output, times the "
                "window size for column-based ops); send a smaller tensor",
            )  # fmt: skip

    @staticmethod
    def _check_fixed_dims(loaded: LoadedModel, x: np.ndarray) -> None:
        spec = loaded.entry.inputs[0].shape
        if x.ndim != len(spec):
            raise _invalid("invalid_input", f"{loaded.name} takes a {len(spec)}-D input")
        wrong = [i for i, d in enumerate(spec) if isinstance(d, int) and x.shape[i] != d]
        if wrong:
            raise _invalid("invalid_input", f"{loaded.name} takes inputs of shape {list(spec)}")
        low = loaded.entry.min_hw or 1
        if x.ndim == 4 and min(x.shape[2:]) < low:
            raise _invalid("invalid_input", f"{loaded.name} needs H and W of at least {low}")

    def _build(
        self, op: str, params: Any, dtype: str, static_hw: tuple[int, int] | None
    ) -> PoolGraph:
        try:
            model = build_pool_graph(
                op, params, dtype, self.settings.pool_prefer, static_hw=static_hw
            )
        except LoweringError as exc:
            raise _invalid("unsupported_params", str(exc)) from None
        lowering = next(
            (p.value for p in model.metadata_props if p.key == "poolserve.lowering"), ""
        )
        session, active = open_session(model, self.settings, f"pool:{op}")
        names = tuple(v.name for v in session.get_inputs())
        return PoolGraph(session, lowering, tuple(active), names)

    @staticmethod
    def _name_outputs(session: Any, outputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        names = [v.name for v in session.get_outputs()]
        named = {}
        for name, value in zip(names, outputs, strict=True):
            named["indices" if name == "indices" else "y"] = value
        return named
