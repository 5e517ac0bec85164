"""Triton's ``config.pbtxt`` for one ONNX model of the repository.

A model whose every input and output has a symbolic first dim (the batch, ``N``) gets
``max_batch_size > 0``, its dims without that batch dim (Triton prepends ``-1``), and Triton's
dynamic batcher with the service's own batch size and queue delay. Other models keep
``max_batch_size: 0`` and their full shapes. Every model gets one GPU instance, the CUDA EP
settings poolserve uses, and a warmup request, so Triton does not meet the first client cold.
Symbolic dims are written ``-1``. Torch-free: the exporter writes it, a test parses it with
Triton's own ``ModelConfig`` proto.
"""

from __future__ import annotations

from collections.abc import Sequence

from export.runtime.manifest import ModelEntry, TensorSpec

PLATFORM = "onnxruntime_onnx"

TRITON_DTYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}
"""NumPy dtype name -> Triton ``DataType``."""

# Defaults equal app.core.config.Settings' (tests/test_pbtxt.py checks); export must not
# import the service, so they are repeated here rather than read from it.
MAX_BATCH_SIZE = 8
MAX_QUEUE_DELAY_MS = 2.0
CUDNN_CONV_ALGO_SEARCH = "EXHAUSTIVE"
ARENA_EXTEND_STRATEGY = "kNextPowerOfTwo"

# The ORT backend's numeric values for these two CUDA EP options (its README, "Deprecated
# Parameters": model-level `parameters`, still honoured and the only form it documents with
# values for these keys).
CUDNN_SEARCH_VALUES = {"EXHAUSTIVE": "0", "HEURISTIC": "1", "DEFAULT": "2"}
ARENA_STRATEGY_VALUES = {"kNextPowerOfTwo": "0", "kSameAsRequested": "1"}

# One instance per GPU (KIND_GPU without `gpus` places `count` on each GPU): the dynamic
# batcher already fills it, and every extra instance is one more ORT session with its own
# arena and its own cuDNN search. KIND_CPU would differ: the ORT backend's default count
# there is 2, each a session with its own thread pool, so a CPU host should set count.
INSTANCE_GROUP = "instance_group [\n  {\n    count: 1\n    kind: KIND_GPU\n  }\n]"

WARMUP_NAME = "sample_batch_1"


def quote(text: str) -> str:
    """``text`` as a protobuf text-format string: quotes and backslashes escaped, every byte
    outside printable ASCII as an octal escape (which every protobuf parser reads)."""
    chars = []
    for byte in text.encode():
        char = chr(byte)
        if char in '"\\':
            chars.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            chars.append(char)
        else:
            chars.append(f"\\{byte:03o}")
    return '"' + "".join(chars) + '"'


def triton_dims(shape: Sequence[int | str]) -> list[int]:
    """Fixed dims as they are, symbolic ones (names) as -1."""
    return [dim if isinstance(dim, int) else -1 for dim in shape]


def is_batched(entry: ModelEntry) -> bool:
    """Every input and output leads with a symbolic dim and has a dim after it.

    A tensor that is only the batch dim would need ``dims: [1]`` plus a ``reshape``; no
    model here has one, so such a model is simply not batched.
    """
    tensors = (*entry.inputs, *entry.outputs)
    return bool(tensors) and all(len(t.shape) >= 2 and isinstance(t.shape[0], str) for t in tensors)


def triton_dtype(spec: TensorSpec) -> str:
    if spec.dtype not in TRITON_DTYPES:
        raise ValueError(f"{spec.name}: no Triton data type for {spec.dtype!r}")
    return TRITON_DTYPES[spec.dtype]


def dims_text(dims: Sequence[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensors(field: str, specs: Sequence[TensorSpec], batched: bool) -> str:
    blocks = [
        "  {\n"
        f"    name: {quote(spec.name)}\n"
        f"    data_type: {triton_dtype(spec)}\n"
        f"    dims: {dims_text(triton_dims(spec.shape[1:] if batched else spec.shape))}\n"
        "  }"
        for spec in specs
    ]
    return f"{field} [\n" + ",\n".join(blocks) + "\n]"


def _dynamic_batching(max_queue_delay_ms: float) -> str:
    # No preferred_batch_size: Triton's batcher guide says most models should not set it
    # (it helps TensorRT models with several profiles); our ORT graphs take any batch.
    delay_us = round(max_queue_delay_ms * 1000)
    return f"dynamic_batching {{\n  max_queue_delay_microseconds: {delay_us}\n}}"


def _parameter(key: str, value: str) -> str:
    value_block = f"  value {{\n    string_value: {quote(value)}\n  }}"
    return f"parameters {{\n  key: {quote(key)}\n{value_block}\n}}"


def _cuda_parameters(cudnn_conv_algo_search: str, arena_extend_strategy: str) -> str:
    if cudnn_conv_algo_search not in CUDNN_SEARCH_VALUES:
        raise ValueError(f"unknown cudnn_conv_algo_search {cudnn_conv_algo_search!r}")
    if arena_extend_strategy not in ARENA_STRATEGY_VALUES:
        raise ValueError(f"unknown arena_extend_strategy {arena_extend_strategy!r}")
    return "\n".join(
        [
            _parameter("cudnn_conv_algo_search", CUDNN_SEARCH_VALUES[cudnn_conv_algo_search]),
            _parameter("arena_extend_strategy", ARENA_STRATEGY_VALUES[arena_extend_strategy]),
        ]
    )


def sample_hw(entry: ModelEntry) -> tuple[int, int] | None:
    """(H, W) for a warmup image: the size preprocessing produces when it fixes one (resize
    ``size``, else ``crop``), else the smallest size the graph takes, else None."""
    preprocess = (entry.cfg or {}).get("preprocess") or {}
    for key in ("size", "crop"):
        if preprocess.get(key):
            height, width = preprocess[key]
            return int(height), int(width)
    return (entry.min_hw, entry.min_hw) if entry.min_hw else None


def warmup_dims(spec: TensorSpec, batched: bool, hw: tuple[int, int] | None) -> list[int] | None:
    """Concrete dims of one warmup sample of ``spec`` (without the batch dim when batched);
    None when a symbolic dim has no known size."""
    dims: list[int] = []
    for i, dim in enumerate(spec.shape):
        if isinstance(dim, int):
            dims.append(dim)
        elif i == 0:
            if not batched:
                dims.append(1)  # a leading dim Triton does not batch: one row
        elif hw is not None and len(spec.shape) == 4 and i >= 2:
            dims.append(hw[i - 2])  # (N, C, H, W)
        else:
            return None
    return dims


def _warmup(entry: ModelEntry, batched: bool) -> str | None:
    """One batch-1 request of zeros: the work (kernels, cuDNN's search, which is keyed by
    shape, arena growth) does not depend on the values, and zeros are reproducible."""
    hw = sample_hw(entry)
    inputs = []
    for spec in entry.inputs:
        dims = warmup_dims(spec, batched, hw)
        if dims is None:
            return None  # no size to warm up with; Triton loads the model without one
        inputs.append(
            "    inputs {\n"
            f"      key: {quote(spec.name)}\n"
            "      value {\n"
            f"        data_type: {triton_dtype(spec)}\n"
            f"        dims: {dims_text(dims)}\n"
            "        zero_data: true\n"
            "      }\n"
            "    }"
        )
    head = f"model_warmup [\n  {{\n    name: {quote(WARMUP_NAME)}\n    batch_size: 1\n"
    return head + "\n".join(inputs) + "\n  }\n]"


def config_pbtxt(
    name: str,
    entry: ModelEntry,
    *,
    max_batch_size: int = MAX_BATCH_SIZE,
    max_queue_delay_ms: float = MAX_QUEUE_DELAY_MS,
    cudnn_conv_algo_search: str = CUDNN_CONV_ALGO_SEARCH,
    arena_extend_strategy: str = ARENA_EXTEND_STRATEGY,
) -> str:
    """The ``config.pbtxt`` text of model ``name`` described by manifest ``entry``.

    Raises ValueError for a dtype Triton has no type for, an unknown CUDA setting, a
    ``max_batch_size`` below 1 or a negative delay.
    """
    if max_batch_size < 1 or max_queue_delay_ms < 0:
        raise ValueError("max_batch_size must be >= 1 and max_queue_delay_ms >= 0")
    batched = is_batched(entry)
    sections = [
        f"name: {quote(name)}",
        f'platform: "{PLATFORM}"',
        f"max_batch_size: {max_batch_size if batched else 0}",
        _tensors("input", entry.inputs, batched),
        _tensors("output", entry.outputs, batched),
    ]
    if batched:
        sections.append(_dynamic_batching(max_queue_delay_ms))
    sections += [INSTANCE_GROUP, _cuda_parameters(cudnn_conv_algo_search, arena_extend_strategy)]
    warmup = _warmup(entry, batched)
    if warmup is not None:
        sections.append(warmup)
    return "\n".join(sections) + "\n"
