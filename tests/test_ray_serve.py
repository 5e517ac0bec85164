"""poolserve on Ray Serve (issue 16): a local Ray cluster with two CPU replicas, reached
through Ray's HTTP proxy on 127.0.0.1, checked against an in-process app with the same
settings (the reference: one poolserve, no Ray).

One module-scoped cluster serves every test; it is started and torn down by the fixture,
every wait is bounded, and Ray is always shut down. About a minute on 2 cores.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import ray
import yaml  # type: ignore[import-untyped]
from PIL import Image
from ray import serve
from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

from app.ray_serve import build_app
from app.ray_serve.builder import DEPLOYMENT, BuildArgs
from app.ray_serve.digest import repository_digest
from app.ray_serve.gate import REPLICA_HEADER
from app.ray_serve.options import Scaling, deployment_options
from app.ray_serve.replica import PoolserveReplica
from tests.app_fixtures import CPU, SMOKE_MODEL, AppClient, app_settings, create_app, npy_bytes

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NPY = "application/x-npy"
MAX_BODY = 1024 * 1024
SETTINGS: dict[str, Any] = {
    # The same on both sides, so results can be compared bit for bit: one intra-op thread
    # is what a 0.5-CPU replica gets by default (app/ray_serve/options.py).
    "max_concurrent_inferences": 1,
    "intra_op_threads": 1,
    "batching": False,
    "max_waiting": 8,
    "max_body_bytes": MAX_BODY,
    "max_images": 2,
    "default_model": SMOKE_MODEL,
}
APP = "poolserve"
STARTUP_S = 240.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait(
    condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.5
) -> None:
    """Poll ``condition`` until it holds, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"{what}: not within {timeout_s} s")


def _app_status(name: str) -> Any:
    return serve.status().applications.get(name)


def _deploy(args: dict[str, Any], name: str, prefix: str) -> None:
    """Deploy without Ray's unbounded wait; the caller waits with a deadline."""
    serve._run(build_app(args), _blocking=False, name=name, route_prefix=prefix)


def _running(name: str) -> bool:
    status = _app_status(name)
    if status is not None and status.status == "DEPLOY_FAILED":
        raise RuntimeError(f"{name} failed to deploy: {status.message}")
    return status is not None and status.status == "RUNNING"


def _cluster_args(repository: Path, **extra: Any) -> dict[str, Any]:
    settings = {"model_repository": str(repository), "providers": CPU, **SETTINGS}
    return {
        "replicas": 2,
        "num_cpus": 0.5,
        "health_check_period_s": 1.0,
        "health_check_timeout_s": 20.0,
        "metrics_interval_s": 1.0,
        "settings": settings,
        **extra,
    }


class Cluster:
    """The running cluster: its proxy's base URL and a client on it."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=60.0)

    def replicas(self) -> int:
        status = _app_status(APP)
        counts: dict[str, int] = status.deployments[DEPLOYMENT].replica_states
        return counts.get("RUNNING", 0)


@pytest.fixture(scope="module")
def cluster(app_repository: Path) -> Iterator[Cluster]:
    """Two replicas of poolserve behind Ray's proxy on 127.0.0.1 (a free port)."""
    ray.init(
        num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False
    )
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        _deploy(_cluster_args(app_repository), APP, "/")
        _wait(lambda: _running(APP), STARTUP_S, "two poolserve replicas running")
        cluster = Cluster(port)
        yield cluster
        cluster.http.close()
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def reference(app_repository: Path) -> Iterator[AppClient]:
    """One poolserve, in process, with the settings every replica has."""
    client = AppClient(create_app(app_settings(app_repository, **SETTINGS))).start()
    yield client
    client.close()


def _png(seed: int, size: tuple[int, int]) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 30, 200)).save(buf, "JPEG")
    return buf.getvalue()


def _png_bomb() -> bytes:
    """A PNG whose header declares 100000 x 100000 pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- the same results as one poolserve -------------------------------------------------

POOL_CASES = [
    ("max", {"kernel_size": 2, "stride": 2}),
    ("avg", {"kernel_size": 3, "stride": 2}),
    ("gem", {"p": 3}),
]


@pytest.mark.parametrize(("op", "params"), POOL_CASES, ids=[op for op, _ in POOL_CASES])
def test_pool_equals_one_poolserve(cluster: Cluster, reference: AppClient, op, params) -> None:
    x = np.random.default_rng(7).random((1, 8, 32, 32), dtype=np.float32)
    query = {"op": op, **{k: json.dumps(v) for k, v in params.items()}}
    headers = {"content-type": NPY, "accept": NPY}
    via_ray = cluster.http.post("/pool", params=query, content=npy_bytes(x), headers=headers)
    alone = reference.post("/pool", params=query, content=npy_bytes(x), headers=headers)
    assert via_ray.status_code == alone.status_code == 200, via_ray.text[:300]
    ours = np.load(io.BytesIO(via_ray.content))
    theirs = np.load(io.BytesIO(alone.content))
    assert ours.shape == theirs.shape
    assert ours.dtype == theirs.dtype
    assert np.array_equal(ours, theirs)
    body = {"op": op, "params": params, "tensor": {"shape": [1, 1, 4, 4], "data": list(range(16))}}
    assert cluster.http.post("/pool", json=body).json() == reference.post("/pool", json=body).json()


def test_descriptor_equals_one_poolserve(cluster: Cluster, reference: AppClient) -> None:
    images = [_png(1, (96, 128)), _png(2, (120, 80))]
    files = [("images", (f"{i}.png", img, "image/png")) for i, img in enumerate(images)]
    via_ray = cluster.http.post("/descriptor", files=files, headers={"accept": NPY})
    alone = reference.post("/descriptor", files=files, headers={"accept": NPY})
    assert via_ray.status_code == alone.status_code == 200, via_ray.text[:300]
    ours = np.load(io.BytesIO(via_ray.content))
    assert ours.shape[0] == 2
    assert np.array_equal(ours, np.load(io.BytesIO(alone.content)))
    raw: dict[str, Any] = {"content": images[0], "headers": {"content-type": "image/png"}}
    assert (
        cluster.http.post("/descriptor", **raw).json()
        == reference.post("/descriptor", **raw).json()
    )


# --- replicas, readiness, metrics -----------------------------------------------------


def _replica_answers(cluster: Cluster, count: int) -> dict[str, int]:
    """Which replica answered each of ``count`` readiness probes: {replica: status}."""
    seen: dict[str, int] = {}
    for _ in range(count):
        r = cluster.http.get("/health/ready")
        seen[r.headers.get(REPLICA_HEADER, "no replica")] = r.status_code
    return seen


def test_requests_land_on_both_replicas_and_each_is_ready(cluster: Cluster) -> None:
    answers = _replica_answers(cluster, 30)
    assert cluster.replicas() == 2
    assert len(answers) == 2, answers
    assert set(answers.values()) == {200}


def test_metrics_of_every_replica_on_the_node_endpoint(cluster: Cluster) -> None:
    """Ray's metrics export on the node carries each replica's poolserve counters, tagged
    with the replica (app/ray_serve/metrics_bridge.py)."""
    replicas = set(_replica_answers(cluster, 20))
    port = ray.nodes()[0]["MetricsExportPort"]

    def tagged() -> set[str]:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        lines = [ln for ln in text.splitlines() if ln.startswith("ray_poolserve_requests_total{")]
        return {ln.split('replica="')[1].split('"')[0] for ln in lines if 'replica="' in ln}

    _wait(lambda: replicas <= tagged(), 60.0, "both replicas' counters exported", 2.0)


def test_killed_replica_is_replaced(cluster: Cluster) -> None:
    before = _replica_answers(cluster, 20)
    victim = sorted(before)[0]
    actor = ray.get_actor(f"SERVE_REPLICA::{APP}#{DEPLOYMENT}#{victim}", namespace="serve")
    ray.kill(actor, no_restart=True)

    def replaced() -> bool:  # answers meanwhile may fail: only the outcome is asserted
        answering = set(_replica_answers(cluster, 10)) - {victim, "no replica"}
        return cluster.replicas() == 2 and len(answering) == 2

    _wait(replaced, 120.0, "a new replica in place of the killed one", 1.0)
    after = _replica_answers(cluster, 20)
    assert victim not in after
    assert len(after) == 2, after
    assert set(after.values()) == {200}
    body = {
        "op": "max",
        "params": {"kernel_size": 2},
        "tensor": {"shape": [1, 1, 2, 2], "data": [1, 2, 3, 4]},
    }
    for _ in range(10):
        r = cluster.http.post("/pool", json=body)
        assert r.status_code == 200
        assert r.json()["tensor"]["data"] == [4.0]


# --- hostile requests: the same 4xx through Ray's proxy ---------------------------------

PICKLE = io.BytesIO()
np.save(PICKLE, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
NAN = np.ones((1, 1, 2, 2), np.float32)
NAN[0, 0, 1, 1] = np.nan
GOOD = {
    "op": "max",
    "params": {"kernel_size": 2},
    "tensor": {"shape": [1, 1, 2, 2], "data": [1, 2, 3, 4]},
}


def _images(*blobs: bytes) -> dict[str, Any]:
    return {
        "files": [
            ("images", (f"{i}.bin", b, "application/octet-stream")) for i, b in enumerate(blobs)
        ]
    }


def _raw(content: bytes, media: str) -> dict[str, Any]:
    return {"content": content, "headers": {"content-type": media}}


JSON = "application/json"
BOMB = _png_bomb()
EXPENSIVE = {**GOOD, "op": "adaptive_avg", "params": {"output_size": 1000}}
HOSTILE: dict[str, tuple[str, str, dict[str, Any]]] = {
    "oversized_body": ("POST", "/pool", _raw(b"x" * (MAX_BODY + 1), NPY)),
    "oversized_chunked": ("POST", "/pool", _raw(b"", NPY)),  # body: see the test
    "empty_json": ("POST", "/pool", _raw(b"", JSON)),
    "malformed_json": ("POST", "/pool", _raw(b'{"op": "max", ', JSON)),
    "unknown_op": ("POST", "/pool", {"json": {**GOOD, "op": "nope"}}),
    "pickled_npy": ("POST", "/pool?op=max&kernel_size=2", _raw(PICKLE.getvalue(), NPY)),
    "non_finite_npy": ("POST", "/pool?op=max&kernel_size=2", _raw(npy_bytes(NAN), NPY)),
    "unsupported_media_type": ("POST", "/pool", _raw(json.dumps(GOOD).encode(), "text/plain")),
    "too_expensive": ("POST", "/pool", {"json": EXPENSIVE}),
    "corrupt_image": ("POST", "/descriptor", _images(b"ZZ" * 40)),
    "truncated_image": ("POST", "/descriptor", _images(_jpeg()[:300])),
    "decompression_bomb": ("POST", "/descriptor", _images(BOMB)),
    "too_many_images": ("POST", "/descriptor", _images(_jpeg(), _jpeg(), _jpeg())),
    "unknown_model": ("POST", "/descriptor?model=nope", _images(_jpeg())),
    "not_found": ("GET", "/nothing-here", {}),
    "method_not_allowed": ("DELETE", "/pool", {}),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_requests_get_the_same_4xx(
    cluster: Cluster, reference: AppClient, case: str
) -> None:
    method, url, kwargs = HOSTILE[case]
    if case == "oversized_chunked":  # chunked to Ray's proxy (no Content-Length)
        kwargs = {**kwargs, "content": iter([b"y" * (MAX_BODY // 4)] * 8)}
    via_ray = cluster.http.request(method, url, **kwargs)
    if case == "oversized_chunked":  # the reference is told the length instead
        kwargs = {**kwargs, "content": b"y" * (MAX_BODY * 2)}
    alone = reference.request(method, url, **kwargs)
    assert 400 <= alone.status_code < 500, alone.text
    assert via_ray.status_code == alone.status_code, via_ray.text[:300]
    assert set(via_ray.json()) == {"error", "code"}
    assert via_ray.json()["code"] == alone.json()["code"]
    assert cluster.http.post("/pool", json=GOOD).status_code == 200


# --- the repository digest ---------------------------------------------------------------


@pytest.fixture
def other_repository(app_repository: Path, tmp_path: Path) -> Path:
    """A node's repository that lacks one of the driver's models."""
    copy = tmp_path / "repo"
    shutil.copytree(app_repository, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["models"]["netvlad_head"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(copy / "netvlad_head")
    return copy


@pytest.fixture
def clean_environment() -> Iterator[None]:
    """PoolserveReplica exports its settings into os.environ and configures logging, as in
    a replica process: both are put back afterwards."""
    saved = dict(os.environ)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    os.environ.clear()
    os.environ.update(saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def _replica(repository: Path, digest: str, models: list[str]) -> PoolserveReplica:
    """A replica built in this process, as Ray builds one (no metrics export: no Ray here)."""
    environment = {
        "POOLSERVE_MODEL_REPOSITORY": str(repository),
        "POOLSERVE_PROVIDERS": json.dumps(CPU),
        "POOLSERVE_MODELS": json.dumps(models),
    }
    return PoolserveReplica(environment, [], digest, metrics_interval_s=0)


def test_mismatched_repository_is_never_ready(
    app_repository: Path, other_repository: Path, clean_environment: None
) -> None:
    """In process: check_health raises and /health/ready answers 503 with the reason."""
    expected = repository_digest(app_repository)
    replica = _replica(other_repository, expected, [])
    client = AppClient(replica.__serve_build_asgi_app__()).start()  # type: ignore[arg-type]
    try:
        with pytest.raises(RuntimeError, match="digest"):
            replica.check_health()
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["code"] == "not_ready"
        assert expected in ready.json()["error"]
        assert client.post("/pool", json=GOOD).status_code == 503  # it serves nothing
        assert client.get("/health/live").status_code == 200
    finally:
        client.close()


def test_matching_repository_is_ready(app_repository: Path, clean_environment: None) -> None:
    models = ["nonlocal_pool"]
    replica = _replica(app_repository, repository_digest(app_repository, models), models)
    app = replica.__serve_build_asgi_app__()
    with pytest.raises(RuntimeError, match="not loaded"):
        replica.check_health()  # before start-up, as /health/ready
    client = AppClient(app).start()  # type: ignore[arg-type]
    try:
        replica.check_health()
        ready = client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.headers[REPLICA_HEADER] == "local"
    finally:
        client.close()


def test_mismatched_replica_fails_the_deployment(
    cluster: Cluster, app_repository: Path, other_repository: Path
) -> None:
    """Through Ray: the replica's first health check fails, so it never takes traffic, Ray
    gives up after its retries, and the status says why."""
    args = _cluster_args(
        other_repository,
        replicas=1,
        num_cpus=0.25,
        expected_digest=repository_digest(app_repository),
    )
    _deploy(args, "mismatch", "/mismatch")
    try:
        _wait(lambda: _app_status("mismatch").status == "DEPLOY_FAILED", 180.0, "deploy failed")
        status = _app_status("mismatch")
        assert "digest" in status.deployments[DEPLOYMENT].message, status
        assert cluster.replicas() == 2  # the healthy application is untouched
    finally:
        serve.delete("mismatch")


# --- configuration files -----------------------------------------------------------------


def test_serve_config_is_valid_for_ray() -> None:
    config = yaml.safe_load((ROOT / "deploy/ray/serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)  # Ray's own schema of `serve deploy`
    (application,) = schema.applications
    assert application.import_path == "app.ray_serve:build_app"
    BuildArgs.model_validate(application.args)  # and ours of its args


def test_kuberay_service_carries_what_a_gpu_cluster_needs() -> None:
    service = yaml.safe_load((ROOT / "deploy/kuberay/rayservice.yaml").read_text())
    assert service["apiVersion"] == "ray.io/v1"
    assert service["kind"] == "RayService"
    spec = service["spec"]
    serve_config = yaml.safe_load(spec["serveConfigV2"])
    schema = ServeDeploySchema.model_validate(serve_config)
    for application in schema.applications:
        ServeApplicationSchema.model_validate(application.model_dump(exclude_unset=True))
        args = BuildArgs.model_validate(application.args)
        assert args.num_gpus > 0
        assert args.settings.get("require_cuda") is True
    cluster = spec["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    (gpu_group,) = cluster["workerGroupSpecs"]
    worker = gpu_group["template"]["spec"]
    for pod in (head, worker):
        (container,) = pod["containers"]
        assert container["image"].startswith("poolserve-ray:")
        assert any(m["mountPath"] == "/models" and m["readOnly"] for m in container["volumeMounts"])
        volume = next(v for v in pod["volumes"] if v["name"] == "model-repository")
        assert volume["persistentVolumeClaim"]["readOnly"] is True
    worker_container = worker["containers"][0]
    assert int(worker_container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert gpu_group["minReplicas"] >= 1
    assert "readinessProbe" in worker_container or "readinessProbe" in head["containers"][0]


def test_deployment_options_follow_poolserve_limits(app_repository: Path) -> None:
    """Ray admits into a replica exactly what poolserve admits without a 503."""
    cpu = app_settings(app_repository, max_waiting=10)
    options = deployment_options(cpu, Scaling(num_cpus=2))
    assert options["max_ongoing_requests"] == 2 + 10  # one slot per core, plus the waiting
    assert options["graceful_shutdown_timeout_s"] == cpu.drain_timeout_s
    batched = app_settings(app_repository, batching=True, max_batch_size=4, max_queue_size=16)
    gpu = deployment_options(batched, Scaling(num_gpus=0.5, min_replicas=1, max_replicas=3))
    assert gpu["max_ongoing_requests"] == 4 * 4 + 16  # CUDA: 4 slots of 4-image batches
    assert gpu["ray_actor_options"]["num_gpus"] == 0.5
    assert gpu["autoscaling_config"]["max_replicas"] == 3
    assert "num_replicas" not in gpu


def test_the_service_never_imports_ray() -> None:
    """Ray is an optional extra: `python -m app`'s modules load without it."""
    import subprocess
    import sys

    code = "import sys, app.main, app.server, app.__main__; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_command_line_flags_are_build_args() -> None:
    """`python -m app.ray_serve`'s flags become the same args a serve config carries."""
    from app.ray_serve.__main__ import build_args, parse

    flags = ["--min-replicas", "1", "--max-replicas", "3", "--num-gpus", "0.5", "--port", "9000"]
    args = BuildArgs.model_validate(build_args(parse(flags)))
    assert (args.min_replicas, args.max_replicas, args.num_gpus) == (1, 3, 0.5)
    assert args.scaling().autoscaling
    assert BuildArgs.model_validate(build_args(parse([]))) == BuildArgs()
    with pytest.raises(ValueError, match="max_wating"):
        BuildArgs.model_validate({"settings": {"max_wating": 3}})  # a typo is refused


def test_ray_stays_out_of_the_base_install_and_the_runtime_image() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("ray") for dep in project["dependencies"])
    assert project["optional-dependencies"]["ray"][0] == "ray[serve]==2.60.0"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ray" not in dockerfile.lower()  # it installs `.[grpc]`, never the ray extra
    assert "'.[export,dev,ray]'" in (ROOT / "Makefile").read_text()  # so CI runs these tests
