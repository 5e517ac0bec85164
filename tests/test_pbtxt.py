"""``export.pbtxt.config_pbtxt`` on synthetic manifest entries, read back with Triton's own
``ModelConfig`` proto (tritonclient's copy) by protobuf's strict text parser."""

import inspect
from typing import Any, get_args

import pytest
from google.protobuf import text_format  # type: ignore[import-untyped]
from tritonclient.grpc import model_config_pb2 as mc

from app.core.config import Settings
from export import pbtxt
from export.pbtxt import config_pbtxt
from export.runtime.manifest import ModelEntry, ParityRecord, TensorSpec

PREPROCESS_EXACT = {"resize": "exact", "size": [480, 640], "crop": None}
PREPROCESS_CROP = {"resize": "shorter_side", "size": None, "shorter_side": 248, "crop": [224, 200]}


def spec(name: str, *shape: int | str, dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name=name, dtype=dtype, shape=shape)


def entry(
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    min_hw: int | None = 64,
    preprocess: dict[str, Any] | None = None,
) -> ModelEntry:
    return ModelEntry(
        kind="descriptor",
        path="m/1/model.onnx",
        sha256="0" * 64,
        bytes=1,
        opset=20,
        ir_version=10,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        min_hw=min_hw,
        weights="seeded-init(seed=0)",
        cfg=None if preprocess is None else {"preprocess": preprocess},
        parity=ParityRecord(shapes=((1, 3, 64, 64),), max_abs_error=0.0, tolerance=1e-5,
                            providers=("CPUExecutionProvider",)),
    )  # fmt: skip


DESCRIPTOR = entry([spec("x", "N", 3, "H", "W")], [spec("y", "N", 32768)], 64, PREPROCESS_EXACT)


def full_dims(tensor: TensorSpec) -> list[int]:
    return [-1 if isinstance(d, str) else d for d in tensor.shape]


def parse(text: str) -> Any:
    """Strict: a field ModelConfig does not have fails the parse."""
    return text_format.Parse(text, mc.ModelConfig())


def warmup_inputs(config: Any) -> dict[str, tuple[int, list[int], str]]:
    (warmup,) = config.model_warmup
    assert warmup.batch_size == 1
    return {
        key: (value.data_type, list(value.dims), value.WhichOneof("input_data_type"))
        for key, value in warmup.inputs.items()
    }


def test_a_batch_first_model_is_batched_by_triton_with_the_service_settings() -> None:
    config = parse(config_pbtxt("m", DESCRIPTOR))
    assert (config.name, config.platform, config.max_batch_size) == ("m", "onnxruntime_onnx", 8)
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("x", mc.TYPE_FP32, [3, -1, -1])
    ]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("y", mc.TYPE_FP32, [32768])
    ]
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert list(config.dynamic_batching.preferred_batch_size) == []
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (1, mc.ModelInstanceGroup.KIND_GPU)
    ]
    assert {k: v.string_value for k, v in config.parameters.items()} == {
        "cudnn_conv_algo_search": "0",
        "arena_extend_strategy": "0",
    }
    assert warmup_inputs(config) == {"x": (mc.TYPE_FP32, [3, 480, 640], "zero_data")}


def test_the_defaults_are_the_services_settings() -> None:
    """Field defaults, not ``Settings()``: a POOLSERVE_* variable in the shell must not count."""
    fields = Settings.model_fields
    signature = inspect.signature(config_pbtxt).parameters.values()
    defaults = {p.name: p.default for p in signature if p.kind is p.KEYWORD_ONLY}
    assert defaults == {
        "max_batch_size": fields["max_batch_size"].default,
        "max_queue_delay_ms": fields["max_queue_delay_ms"].default,
        "cudnn_conv_algo_search": fields["cudnn_conv_algo_search"].default,
        "arena_extend_strategy": fields["cuda_arena_extend_strategy"].default,
    }
    # Every value the service accepts has a Triton value.
    for field, values in [
        ("cudnn_conv_algo_search", pbtxt.CUDNN_SEARCH_VALUES),
        ("cuda_arena_extend_strategy", pbtxt.ARENA_STRATEGY_VALUES),
    ]:
        assert set(get_args(fields[field].annotation)) == set(values)


def test_batch_and_cuda_settings_are_written_as_given() -> None:
    text = config_pbtxt(
        "m",
        DESCRIPTOR,
        max_batch_size=3,
        max_queue_delay_ms=0.25,
        cudnn_conv_algo_search="HEURISTIC",
        arena_extend_strategy="kSameAsRequested",
    )
    config = parse(text)
    assert config.max_batch_size == 3
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert config.parameters["cudnn_conv_algo_search"].string_value == "1"
    assert config.parameters["arena_extend_strategy"].string_value == "1"
    default = parse(config_pbtxt("m", DESCRIPTOR, cudnn_conv_algo_search="DEFAULT"))
    assert default.parameters["cudnn_conv_algo_search"].string_value == "2"


@pytest.mark.parametrize(
    ("inputs", "outputs"),
    [
        ([spec("x", 1, 3, "H", "W")], [spec("y", 1, 10)]),  # fixed batch
        ([spec("x", "N", 3, "H", "W")], [spec("y", 1, 10)]),  # an output with a fixed lead
        ([spec("x", "N", 3, "H", "W")], [spec("y", "N")]),  # an output that is only N
    ],
)
def test_a_model_without_a_batch_dim_everywhere_keeps_full_shapes(
    inputs: list[TensorSpec], outputs: list[TensorSpec]
) -> None:
    config = parse(config_pbtxt("m", entry(inputs, outputs, 32)))
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert [list(t.dims) for t in config.input] == [full_dims(inputs[0])]
    assert [list(t.dims) for t in config.output] == [full_dims(outputs[0])]
    # Without batching the warmup sample carries its full shape, a leading N as one row.
    assert warmup_inputs(config) == {"x": (mc.TYPE_FP32, [1, 3, 32, 32], "zero_data")}
    assert len(config.instance_group) == 1


def test_warmup_size_comes_from_the_preprocessing_then_min_hw() -> None:
    io = ([spec("x", "N", 3, "H", "W"), spec("k", "N", 4, dtype="int64")], [spec("y", "N", 8)])
    cropped = parse(config_pbtxt("m", entry(*io, 64, PREPROCESS_CROP)))
    assert warmup_inputs(cropped) == {
        "x": (mc.TYPE_FP32, [3, 224, 200], "zero_data"),
        "k": (mc.TYPE_INT64, [4], "zero_data"),
    }
    kept = parse(config_pbtxt("m", entry(*io, 32, {"resize": "keep", "size": None})))
    assert warmup_inputs(kept)["x"][1] == [3, 32, 32]
    fixed = parse(
        config_pbtxt("m", entry([spec("x", "N", 256, 14, 14)], [spec("y", "N", 9)], None))
    )
    assert warmup_inputs(fixed) == {"x": (mc.TYPE_FP32, [256, 14, 14], "zero_data")}


def test_no_warmup_when_a_symbolic_dim_has_no_size() -> None:
    for shape in (("N", 3, "H", "W"), ("N", "T", 8)):
        config = parse(config_pbtxt("m", entry([spec("x", *shape)], [spec("y", "N", 8)], None)))
        assert list(config.model_warmup) == []
        assert config.max_batch_size == 8  # the rest of the config is still written


def test_names_with_quotes_backslashes_and_odd_bytes_round_trip() -> None:
    odd = 'in "put"\\0\n\tλ'
    model = entry([spec(odd, "N", 3, "H", "W")], [spec('out"', "N", 8)], 64)
    config = parse(config_pbtxt('model "a"', model))
    assert config.name == 'model "a"'
    assert [t.name for t in config.input] == [odd]
    assert [t.name for t in config.output] == ['out"']
    assert list(warmup_inputs(config)) == [odd]


@pytest.mark.parametrize("dtype", ["complex64", "string", "bfloat16"])
def test_a_dtype_triton_has_no_type_for_is_refused(dtype: str) -> None:
    model = entry([spec("x", "N", 3, "H", "W", dtype=dtype)], [spec("y", "N", 8)])
    with pytest.raises(ValueError, match=f"x: no Triton data type for '{dtype}'"):
        config_pbtxt("m", model)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be >= 1"),
        ({"max_queue_delay_ms": -1.0}, "max_queue_delay_ms >= 0"),
        ({"cudnn_conv_algo_search": "exhaustive"}, "unknown cudnn_conv_algo_search"),
        ({"arena_extend_strategy": "grow"}, "unknown arena_extend_strategy"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_pbtxt("m", DESCRIPTOR, **kwargs)
