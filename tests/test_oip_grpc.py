"""The Open Inference Protocol over gRPC, spoken by the real ``tritonclient.grpc`` (and by the
protocol's own stub for requests no client would build) to a real server process.

References: numpy closed forms, and REST's /pool and /descriptor on the same server (themselves
tested against torch). Every hostile request must get its own status, never INTERNAL or
UNKNOWN, and the server must answer the next request.
"""

from __future__ import annotations

import asyncio
import io
import struct
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.utils.shared_memory as shm
from PIL import Image
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from app.core.config import MiB, Settings
from app.core.errors import ErrorCode
from app.grpc_server import start_grpc
from app.inference.sessions import StartupError
from app.oip.catalogue import OipModel, TensorMeta
from app.oip.grpc_service import InferenceServicer, peer_is_local
from app.oip.shm import SharedMemoryRegistry
from bench.server import free_port, serve
from tests.app_fixtures import SMOKE_MODEL, pool_npy

NPY = "application/x-npy"
MAX_BODY = 64 * MiB
RNG = np.random.default_rng(11)
X = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
Codes = grpc.StatusCode


@pytest.fixture(scope="module")
def server(app_repository: Path) -> Iterator[tuple[str, int]]:
    """One server for the module: REST for the references, gRPC under test."""
    port = free_port()
    settings = {"grpc_port": port, "shared_memory": True, "max_body_bytes": MAX_BODY}
    with serve(app_repository, [], **settings) as running:
        yield running.url, port


@pytest.fixture(scope="module")
def client(server: tuple[str, int]) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(f"127.0.0.1:{server[1]}")
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(server: tuple[str, int]) -> Iterator[Any]:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}", options=options) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def http(server: tuple[str, int]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], timeout=60) as c:
        yield c


def _input(name: str, value: np.ndarray) -> triton.InferInput:
    datatype = {"float32": "FP32", "int64": "INT64"}.get(value.dtype.name, "BYTES")
    tensor = triton.InferInput(name, list(value.shape), datatype)
    tensor.set_data_from_numpy(value)
    return tensor


def _jpeg(seed: int, size: tuple[int, int] = (300, 240)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _max_pool_2x2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 max pool and torch's indices (flat into each input plane), in numpy."""
    n, c, h, w = x.shape
    windows = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    windows = windows.reshape(n, c, h // 2, w // 2, 4)
    k = windows.argmax(axis=-1)
    rows = 2 * np.arange(h // 2)[:, None] + k // 2
    cols = 2 * np.arange(w // 2)[None, :] + k % 2
    return windows.max(axis=-1), (rows * w + cols).astype(np.int64)


# health and metadata ------------------------------------------------------------------------


def test_health_and_model_readiness(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("pool.max")
    assert client.is_model_ready(SMOKE_MODEL, "1")
    assert not client.is_model_ready("pool.nope")  # as Triton: ready false, not an error
    assert not client.is_model_ready("pool.max", "2")


def test_server_metadata_names_the_extensions(client: triton.InferenceServerClient) -> None:
    meta = client.get_server_metadata()
    assert (meta.name, meta.version) == ("poolserve", "0.1.0")
    assert set(meta.extensions) == {"binary_tensor_data", "system_shared_memory"}


def test_model_metadata_equals_rest(client: triton.InferenceServerClient, http: httpx.Client):
    for name in ("pool.max_unpool", "pool.max", SMOKE_MODEL):
        meta = client.get_model_metadata(name, as_json=True)
        rest = http.get(f"/v2/models/{name}").json()
        for tensor in meta["inputs"] + meta["outputs"]:
            tensor["shape"] = [int(d) for d in tensor["shape"]]  # int64 travels as text in JSON
        assert meta == rest
    unpool = client.get_model_metadata("pool.max_unpool")
    assert [(t.name, t.datatype) for t in unpool.inputs] == [("x", "FP32"), ("indices", "INT64")]
    image = client.get_model_metadata(SMOKE_MODEL, "1")
    assert [(t.name, t.datatype, list(t.shape)) for t in image.outputs] == [
        ("DESCRIPTOR", "FP32", [-1, 32768])
    ]


def test_repository_index_equals_rest(client: triton.InferenceServerClient, http: httpx.Client):
    index = client.get_model_repository_index()
    names = [(m.name, m.version, m.state) for m in index.models]
    rest = [(m["name"], m["version"], m["state"]) for m in http.post("/v2/repository/index").json()]
    assert names == rest
    assert {"pool.max", "pool.bilinear2", SMOKE_MODEL, f"onnx.{SMOKE_MODEL}"} <= {
        n[0] for n in names
    }


# inference ----------------------------------------------------------------------------------


def test_max_with_indices_equals_closed_form(client: triton.InferenceServerClient) -> None:
    result = client.infer(
        "pool.max", [_input("x", X)], request_id="req-7",
        parameters={"kernel_size": 2, "return_indices": True},
        outputs=[triton.InferRequestedOutput("y"), triton.InferRequestedOutput("indices")],
    )  # fmt: skip
    y, indices = _max_pool_2x2(X)
    np.testing.assert_array_equal(result.as_numpy("y"), y)
    np.testing.assert_array_equal(result.as_numpy("indices"), indices)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("pool.max", "1", "req-7")
    assert response.parameters["provider"].string_param == "CPUExecutionProvider"
    assert response.parameters["lowering"].string_param


def test_only_the_outputs_asked_for(client: triton.InferenceServerClient) -> None:
    result = client.infer(
        "pool.max", [_input("x", X)], parameters={"kernel_size": 2, "return_indices": True},
        outputs=[triton.InferRequestedOutput("indices")],
    )  # fmt: skip
    assert [o.name for o in result.get_response().outputs] == ["indices"]
    np.testing.assert_array_equal(result.as_numpy("indices"), _max_pool_2x2(X)[1])


def test_two_inputs_bilinear2_equals_pool(
    client: triton.InferenceServerClient, http: httpx.Client
) -> None:
    other = RNG.standard_normal((2, 4, 8, 8)).astype(np.float32)
    result = client.infer("pool.bilinear2", [_input("x", X), _input("y", other)])
    body = {"op": "bilinear2", "params": {}}
    for key, value in (("tensor", X), ("y", other)):
        body[key] = {"shape": list(value.shape), "dtype": "float32", "data": value.ravel().tolist()}
    native = http.post("/pool", json=body)
    assert native.status_code == 200, native.text
    out = result.as_numpy("y")
    assert list(out.shape) == native.json()["tensor"]["shape"]
    np.testing.assert_allclose(out.ravel(), native.json()["tensor"]["data"], rtol=1e-6, atol=1e-6)


def test_list_param_as_json_string(
    client: triton.InferenceServerClient, http: httpx.Client
) -> None:
    params = {"kernel_size": "[2, 4]", "stride": "[2, 4]"}
    result = client.infer("pool.avg", [_input("x", X)], parameters=params)
    expected = X.reshape(2, 3, 4, 2, 2, 4).mean(axis=(3, 5))
    np.testing.assert_allclose(result.as_numpy("y"), expected, rtol=1e-6, atol=1e-6)
    native = pool_npy(http, "avg", X, kernel_size="[2,4]", stride="[2,4]")
    np.testing.assert_array_equal(result.as_numpy("y"), native)


def test_image_model_jpeg_equals_descriptor(
    client: triton.InferenceServerClient, http: httpx.Client
) -> None:
    blobs = [_jpeg(1), _jpeg(2, (200, 320))]
    result = client.infer(SMOKE_MODEL, [_input("IMAGE", np.array(blobs, dtype=np.object_))])
    files = [("images", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(blobs)]
    r = http.post("/descriptor", params={"model": SMOKE_MODEL}, files=files,
                  headers={"accept": NPY})  # fmt: skip
    assert r.status_code == 200, r.text
    expected = np.load(io.BytesIO(r.content), allow_pickle=False)
    np.testing.assert_allclose(result.as_numpy("DESCRIPTOR"), expected, rtol=1e-5, atol=1e-5)


def _request(model: str, *inputs: tuple[str, str, list[int]], **params: Any) -> Any:
    request = pb.ModelInferRequest(model_name=model)
    for name, datatype, shape in inputs:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    for key, value in params.items():
        if isinstance(value, str):
            request.parameters[key].string_param = value
        else:
            request.parameters[key].int64_param = value
    return request


def _outputs(response: Any) -> dict[str, np.ndarray]:
    dtypes = {"FP32": np.float32, "INT64": np.int64}
    return {
        o.name: np.frombuffer(raw, dtypes[o.datatype]).reshape(tuple(o.shape))
        for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


def test_typed_contents_equal_raw(stub: Any) -> None:
    """fp32_contents and int64_contents decode as raw bytes would (max then max_unpool)."""
    request = _request("pool.max", ("x", "FP32", list(X.shape)), kernel_size=2)
    request.inputs[0].contents.fp32_contents.extend(X.ravel().tolist())
    request.parameters["return_indices"].bool_param = True
    pooled = _outputs(stub.ModelInfer(request, timeout=60))
    y, indices = _max_pool_2x2(X)
    np.testing.assert_array_equal(pooled["y"], y)
    np.testing.assert_array_equal(pooled["indices"], indices)
    shape = list(y.shape)
    request = _request("pool.max_unpool", ("x", "FP32", shape), ("indices", "INT64", shape),
                       kernel_size=2)  # fmt: skip
    request.inputs[0].contents.fp32_contents.extend(y.ravel().tolist())
    request.inputs[1].contents.int64_contents.extend(indices.ravel().tolist())
    unpooled = _outputs(stub.ModelInfer(request, timeout=60))["y"]
    expected = np.zeros_like(X).reshape(2, 3, -1)
    np.put_along_axis(expected, indices.reshape(2, 3, -1), y.reshape(2, 3, -1), axis=-1)
    np.testing.assert_array_equal(unpooled, expected.reshape(X.shape))


def test_bytes_contents_equal_raw(client: triton.InferenceServerClient, stub: Any) -> None:
    blob = _jpeg(5)
    request = _request(SMOKE_MODEL, ("IMAGE", "BYTES", [1]))
    request.inputs[0].contents.bytes_contents.append(blob)
    typed = _outputs(stub.ModelInfer(request, timeout=60))["DESCRIPTOR"]
    raw = client.infer(SMOKE_MODEL, [_input("IMAGE", np.array([blob], dtype=np.object_))])
    np.testing.assert_array_equal(typed, raw.as_numpy("DESCRIPTOR"))


# system shared memory -----------------------------------------------------------------------


@pytest.fixture
def regions(client: triton.InferenceServerClient) -> Iterator[dict[str, Any]]:
    """Shared-memory regions made here (name -> handle); destroyed and unregistered after."""
    made: dict[str, Any] = {}
    yield made
    client.unregister_system_shared_memory()
    for handle in made.values():
        shm.destroy_shared_memory_region(handle)


def _region(regions: dict[str, Any], name: str, size: int) -> tuple[Any, str]:
    key = f"/poolserve_grpc_{uuid.uuid4().hex}"
    regions[name] = shm.create_shared_memory_region(name, key, size)
    return regions[name], key


def test_shared_memory_input_and_output_equal_pool(
    client: triton.InferenceServerClient, http: httpx.Client, regions: dict[str, Any]
) -> None:
    out_bytes = X.nbytes // 4
    region_in, key_in = _region(regions, "in", X.nbytes + 64)
    region_out, key_out = _region(regions, "out", out_bytes + 32)
    shm.set_shared_memory_region(region_in, [X], offset=64)
    client.register_system_shared_memory("in", key_in, X.nbytes + 64)
    client.register_system_shared_memory("out", key_out, out_bytes + 32)
    tensor = triton.InferInput("x", list(X.shape), "FP32")
    tensor.set_shared_memory("in", X.nbytes, offset=64)
    wanted = triton.InferRequestedOutput("y")
    wanted.set_shared_memory("out", out_bytes, offset=32)
    result = client.infer("pool.max", [tensor], outputs=[wanted], parameters={"kernel_size": 2})
    output = result.get_output("y")
    assert output.parameters["shared_memory_region"].string_param == "out"
    assert output.parameters["shared_memory_byte_size"].int64_param == out_bytes
    assert output.parameters["shared_memory_offset"].int64_param == 32
    assert result.get_response().raw_output_contents == [b""]  # one entry per output
    y = shm.get_contents_as_numpy(region_out, np.float32, [2, 3, 4, 4], offset=32)
    np.testing.assert_array_equal(y, pool_npy(http, "max", X, kernel_size="2"))
    status = client.get_system_shared_memory_status(as_json=True)["regions"]
    assert {name: r["key"] for name, r in status.items()} == {"in": key_in, "out": key_out}
    client.unregister_system_shared_memory("in")
    assert set(client.get_system_shared_memory_status(as_json=True).get("regions", {})) == {"out"}


def _fails(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


def _poolserve_code(error: grpc.RpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get("poolserve-code")


def _still_serves(stub: Any) -> None:
    request = _request("pool.max", ("x", "FP32", list(X.shape)), kernel_size=2)
    request.raw_input_contents.append(X.tobytes())
    np.testing.assert_array_equal(_outputs(stub.ModelInfer(request, timeout=60))["y"],
                                  _max_pool_2x2(X)[0])  # fmt: skip


def test_shared_memory_refusals(
    client: triton.InferenceServerClient, stub: Any, regions: dict[str, Any]
) -> None:
    _, key = _region(regions, "small", 256)
    client.register_system_shared_memory("small", key, 256)
    request = _request("pool.max", ("x", "FP32", [1, 1, 4, 4]), kernel_size=2)
    params = request.inputs[0].parameters
    params["shared_memory_region"].string_param = "small"
    params["shared_memory_byte_size"].int64_param = 64
    params["shared_memory_offset"].int64_param = 224  # 224 + 64 > 256
    refusals = [
        (stub.ModelInfer, request, Codes.INVALID_ARGUMENT, "region_bounds"),
        (stub.SystemSharedMemoryRegister, pb.SystemSharedMemoryRegisterRequest(
            name="small", key=key, byte_size=256), Codes.ALREADY_EXISTS, "region_exists"),
        (stub.SystemSharedMemoryRegister, pb.SystemSharedMemoryRegisterRequest(
            name="evil", key="/../etc/passwd", byte_size=8), Codes.INVALID_ARGUMENT, "bad_region"),
        (stub.SystemSharedMemoryUnregister, pb.SystemSharedMemoryUnregisterRequest(name="nope"),
         Codes.NOT_FOUND, "unknown_region"),
        (stub.SystemSharedMemoryStatus, pb.SystemSharedMemoryStatusRequest(name="nope"),
         Codes.NOT_FOUND, "unknown_region"),
    ]  # fmt: skip
    for call, message, code, poolserve_code in refusals:
        error = _fails(call, message, timeout=30)
        assert (error.code(), _poolserve_code(error)) == (code, poolserve_code), error.details()
        _still_serves(stub)


# hostile requests ---------------------------------------------------------------------------


def _with_raw(request: Any, *raw: bytes) -> Any:
    request.raw_input_contents.extend(raw)
    return request


def _x(datatype: str = "FP32", shape: tuple[int, ...] = (1, 1, 4, 4)) -> tuple[str, str, list]:
    return ("x", datatype, list(shape))


def _image(*elements: bytes, count: int | None = None) -> Any:
    request = _request(SMOKE_MODEL, ("IMAGE", "BYTES", [count or len(elements)]))
    return _with_raw(request, b"".join(elements))


def _typed_fp16() -> Any:
    request = _request("pool.max", _x("FP16"), kernel_size=2)
    request.inputs[0].contents.fp32_contents.extend([0.0] * 16)
    return request


def _mixed() -> Any:
    request = _request("pool.bilinear2", _x(), ("y", "FP32", [1, 1, 4, 4]))
    request.inputs[0].contents.fp32_contents.extend([0.0] * 16)
    return _with_raw(request, bytes(64))


def _empty_parameter() -> Any:
    request = _with_raw(_request("pool.max", _x(), kernel_size=2), bytes(64))
    request.parameters["stride"].CopyFrom(pb.InferParameter())
    return request


def _unknown_output() -> Any:
    request = _with_raw(_request("pool.max", _x(), kernel_size=2), bytes(64))
    request.outputs.add(name="nope")
    return request


JPEG_LIKE = b"\xff\xd8\xff" + bytes(7)
HOSTILE = {
    "unknown model": (_with_raw(_request("pool.nope", _x()), bytes(64)),
                      Codes.NOT_FOUND, "unknown_model"),
    "unknown version": (pb.ModelInferRequest(model_name="pool.max", model_version="2"),
                        Codes.NOT_FOUND, "unknown_version"),
    "INT32 input": (_with_raw(_request("pool.max", _x("INT32"), kernel_size=2), bytes(64)),
                    Codes.INVALID_ARGUMENT, "unsupported_dtype"),
    "FP64 input": (_with_raw(_request("pool.max", _x("FP64"), kernel_size=2), bytes(128)),
                   Codes.INVALID_ARGUMENT, "unsupported_dtype"),
    "shape against raw bytes": (_with_raw(_request("pool.max", _x(), kernel_size=2), bytes(60)),
                                Codes.INVALID_ARGUMENT, "binary_size_mismatch"),
    "more raw contents than inputs": (
        _with_raw(_request("pool.max", _x(), kernel_size=2), bytes(64), bytes(64)),
        Codes.INVALID_ARGUMENT, "binary_size_mismatch"),
    "fewer raw contents than inputs": (
        _with_raw(_request("pool.bilinear2", _x(), ("y", "FP32", [1, 1, 4, 4])), bytes(64)),
        Codes.INVALID_ARGUMENT, "binary_size_mismatch"),
    "no data": (_request("pool.max", _x(), kernel_size=2),
                Codes.INVALID_ARGUMENT, "missing_tensor"),
    "raw and typed contents": (_mixed(), Codes.INVALID_ARGUMENT, "binary_size_mismatch"),
    "FP16 as typed contents": (_typed_fp16(), Codes.INVALID_ARGUMENT, "unsupported_dtype"),
    "BYTES prefix past the end": (_image(struct.pack("<I", 1000) + JPEG_LIKE),
                                  Codes.INVALID_ARGUMENT, "bad_bytes"),
    "BYTES prefix short of the data": (_image(struct.pack("<I", 4) + JPEG_LIKE),
                                       Codes.INVALID_ARGUMENT, "bad_bytes"),
    "BYTES fewer elements than shape": (_image(struct.pack("<I", 10) + JPEG_LIKE, count=2),
                                        Codes.INVALID_ARGUMENT, "bad_bytes"),
    "negative dim": (_with_raw(_request("pool.max", _x(shape=(1, 1, -4, -4))), bytes(64)),
                     Codes.INVALID_ARGUMENT, "bad_shape"),
    "shape over max_tensor_elements": (
        _with_raw(_request("pool.max", _x(shape=(1, 1, 100_000, 100_000))), bytes(64)),
        Codes.RESOURCE_EXHAUSTED, "tensor_too_large"),
    "parameter without a value": (_empty_parameter(), Codes.INVALID_ARGUMENT, "validation_error"),
    "invalid op params": (_with_raw(_request("pool.max", _x(), kernel_size="big"), bytes(64)),
                          Codes.INVALID_ARGUMENT, "invalid_params"),
    "unknown input": (_with_raw(_request("pool.max", ("z", "FP32", [1, 1, 4, 4])), bytes(64)),
                      Codes.INVALID_ARGUMENT, "wrong_tensors"),
    "unknown output": (_unknown_output(), Codes.INVALID_ARGUMENT, "unknown_output"),
    "over the compute budget": (
        _with_raw(_request("pool.max", _x(shape=(1, 1, 768, 768)), kernel_size=385, stride=1),
                  bytes(768 * 768 * 4)),
        Codes.RESOURCE_EXHAUSTED, "too_expensive"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_request_gets_its_status(stub: Any, case: str) -> None:
    request, code, poolserve_code = HOSTILE[case]
    error = _fails(stub.ModelInfer, request, timeout=60)
    assert (error.code(), _poolserve_code(error)) == (code, poolserve_code), error.details()
    _still_serves(stub)


def test_message_over_max_body_bytes(stub: Any) -> None:
    side = 4160  # 1 x 1 x 4160 x 4160 FP32: just over 66 MiB
    request = _request("pool.max", _x(shape=(1, 1, side, side)), kernel_size=2)
    request.raw_input_contents.append(bytes(side * side * 4))
    assert request.ByteSize() > MAX_BODY
    error = _fails(stub.ModelInfer, request, timeout=60)
    assert error.code() == Codes.RESOURCE_EXHAUSTED
    _still_serves(stub)


def test_tritonclient_sees_the_status(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("pool.nope")
    assert caught.value.status() == str(Codes.NOT_FOUND)
    assert "repository/index" in caught.value.message()


# the servicer in-process: peers, readiness, faults ------------------------------------------


@pytest.mark.parametrize(
    ("peer", "local"),
    [
        ("ipv4:127.0.0.1:5000", True),
        ("ipv4:127.8.9.1:5000", True),
        ("ipv6:[::1]:5000", True),
        ("ipv6:%5B::1%5D:5000", True),
        ("unix:/tmp/poolserve.sock", True),
        ("ipv4:10.1.2.3:5000", False),
        ("ipv4:192.168.0.7:5000", False),
        ("ipv6:[2001:db8::1]:5000", False),
        ("ipv6:%5Bfe80::1%5D:5000", False),
        ("dns:localhost:5000", False),
        ("", False),
    ],
)
def test_peer_is_local_as_rest_judges_it(peer: str, local: bool) -> None:
    assert peer_is_local(peer) is local


class _AbortedError(Exception):
    pass


class _Context:
    """The two things the servicer asks of a grpc.aio ServicerContext."""

    def __init__(self, peer: str) -> None:
        self._peer = peer
        self.status: tuple[Any, str, dict[str, str]] | None = None

    def peer(self) -> str:
        return self._peer

    async def abort(self, code: Any, details: str, metadata: Any) -> None:
        self.status = (code, details, dict(metadata))
        raise _AbortedError


def _call(servicer: InferenceServicer, method: str, request: Any, peer: str) -> Any:
    context = _Context(peer)
    try:
        return asyncio.run(servicer.rpcs()[method](request, context))
    except _AbortedError:
        return context.status


def test_shared_memory_rpcs_refuse_remote_peers(tmp_path: Path) -> None:
    (tmp_path / "region").write_bytes(bytes(128))
    registry = SharedMemoryRegistry(4, 1 << 20, root=tmp_path)
    services = SimpleNamespace(shm=registry)
    servicer = InferenceServicer(lambda: services, Settings(shared_memory=True))  # type: ignore[arg-type,return-value]
    register = pb.SystemSharedMemoryRegisterRequest(name="r", key="region", byte_size=128)
    status = pb.SystemSharedMemoryStatusRequest()
    for method, request in (("SystemSharedMemoryRegister", register),
                            ("SystemSharedMemoryStatus", status)):  # fmt: skip
        code, _, metadata = _call(servicer, method, request, "ipv4:10.1.2.3:5000")
        assert (code, metadata["poolserve-code"]) == (Codes.PERMISSION_DENIED, "shared_memory_off")
    assert registry.status() == []
    _call(servicer, "SystemSharedMemoryRegister", register, "ipv6:[::1]:5000")
    local = _call(servicer, "SystemSharedMemoryStatus", status, "ipv4:127.0.0.1:5000")
    assert local.regions["r"].byte_size == 128
    registry.close()


def test_not_ready_and_unexpected_faults() -> None:
    settings = Settings()
    idle = InferenceServicer(lambda: None, settings)
    assert not _call(idle, "ServerReady", pb.ServerReadyRequest(), "ipv4:127.0.0.1:1").ready
    assert _call(idle, "ServerLive", pb.ServerLiveRequest(), "ipv4:127.0.0.1:1").live
    code, _, metadata = _call(idle, "ModelMetadata", pb.ModelMetadataRequest(name="pool.max"), "")
    assert (code, metadata) == (Codes.UNAVAILABLE, {"poolserve-code": "not_ready",
                                                    "retry-after": "5"})  # fmt: skip

    class Broken:
        @property
        def oip(self) -> Any:
            raise KeyError("a fault with details the client must not see")

    broken = InferenceServicer(lambda: Broken(), settings)  # type: ignore[arg-type,return-value]
    code, details, metadata = _call(broken, "RepositoryIndex", pb.RepositoryIndexRequest(), "")
    assert (code, details, metadata) == (Codes.INTERNAL, "internal server error",
                                         {"poolserve-code": "internal"})  # fmt: skip


@pytest.mark.parametrize("missing", ["grpc", "tritonclient.grpc"])
def test_start_grpc_needs_the_extra_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    import app.oip

    monkeypatch.setitem(sys.modules, missing, None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "app.oip.grpc_service")
    monkeypatch.delattr(app.oip, "grpc_service")
    assert asyncio.run(start_grpc(lambda: None, Settings())) is None
    with pytest.raises(StartupError, match="grpc extra"):
        asyncio.run(start_grpc(lambda: None, Settings(grpc_port=free_port())))


def test_cancelled_call_stops_its_runs() -> None:
    """A call the client abandons (or whose deadline passes) stops its onnxruntime runs."""
    model = OipModel("pool.slow", "pool", "max", "poolserve_pool",
                     (TensorMeta("x", "FP32", (-1, -1, -1, -1), ("FP32",)),), ())  # fmt: skip
    started = asyncio.Event()
    seen: list[Any] = []

    class SlowOip:
        def model(self, name: str, version: str) -> OipModel:
            return model

        async def infer(self, call: Any) -> None:
            seen.append(call.control)
            started.set()
            await asyncio.Event().wait()  # a run that would never end

    services = SimpleNamespace(oip=SlowOip(), shm=None)
    servicer = InferenceServicer(lambda: services, Settings())  # type: ignore[arg-type,return-value]
    request = _with_raw(_request("pool.slow", _x()), bytes(64))

    async def cancel_mid_run() -> None:
        call = asyncio.create_task(servicer.rpcs()["ModelInfer"](request, _Context("")))
        await started.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(cancel_mid_run())
    assert seen[0].reason is ErrorCode.CANCELLED
    assert seen[0].new_run().terminate  # any run it would start is stopped at once
