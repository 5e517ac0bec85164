"""What the container relies on, checked without a Docker engine (hadolint and
`docker-compose config` run in `make docker-check`; the scripts run in `make smoke`)."""

import importlib.metadata
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from packaging.requirements import Requirement

from app.core.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def reachable(requirements: list[str], extras: set[str]) -> set[str]:
    """Distribution names pulled in by ``requirements`` through the installed metadata."""
    seen: set[str] = set()
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        req, active = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in active | {""}):
            continue
        name = req.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            deps = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo.extend((Requirement(d), set(req.extras)) for d in deps)
    return seen


def project_requirements() -> list[str]:
    return importlib.metadata.requires("poolserve") or []


def test_base_dependencies_do_not_pull_torch() -> None:
    base = reachable(project_requirements(), set())
    assert "onnxruntime-gpu" in base
    assert "fastapi" in base
    assert "torch" not in base, "the runtime image installs the base dependencies only"


def test_the_export_extra_does_pull_torch() -> None:
    # The walk above must be able to find torch, or its silence proves nothing.
    assert "torch" in reachable(project_requirements(), {"export"})


def stage(name: str) -> str:
    match = re.search(rf"^FROM \S+ AS {name}$(.*?)(?=^FROM |\Z)", DOCKERFILE, re.M | re.S)
    assert match, f"no stage {name!r}"
    return match.group(1)


def test_base_image_is_pinned_and_named_in_the_readme() -> None:
    tag = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert tag
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", tag.group(1))
    assert tag.group(1) in (ROOT / "README.md").read_text()


def test_runtime_stage_has_no_torch_a_user_and_the_shared_scripts() -> None:
    runtime = stage("runtime")
    assert "torch" not in runtime.replace("no torch", "")
    assert "COPY export/runtime ./export/runtime" in runtime  # not the exporter beside it
    assert "COPY export ./export" not in runtime
    assert re.search(r"^USER [1-9]\d*:[1-9]\d*$", runtime, re.M), "numeric non-root user"
    assert 'CMD ["python", "scripts/healthcheck.py"]' in runtime
    assert 'ENTRYPOINT ["bash", "scripts/serve.sh"]' in runtime
    assert "POOLSERVE_HOST=0.0.0.0" in runtime
    assert "scripts/export_models.sh" in stage("export")


def test_scripts_the_image_runs_exist_and_are_executable() -> None:
    for script in ("export_models.sh", "serve.sh", "smoke.sh"):
        assert os.access(ROOT / "scripts" / script, os.X_OK), script
    for script in ("healthcheck.py", "check_runtime.py", "nvidia_libs.py"):
        assert (ROOT / "scripts" / script).is_file(), script


def test_compose_reserves_a_gpu_and_has_a_cpu_profile() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    gpu, cpu = compose["services"]["poolserve"], compose["services"]["poolserve-cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["ports"] == cpu["ports"] == ["127.0.0.1:8000:8000", "127.0.0.1:8001:8001"]
    assert gpu["environment"]["POOLSERVE_REQUIRE_CUDA"] == "1"
    assert cpu["profiles"] == ["cpu"]
    assert "deploy" not in cpu
    assert cpu["environment"]["POOLSERVE_PROVIDERS"] == "CPUExecutionProvider"
    assert gpu["healthcheck"]["test"] == ["CMD", "python", "scripts/healthcheck.py"]
    start_period = int(gpu["healthcheck"]["start_period"].rstrip("s"))
    assert start_period >= 120, "model load and warm-up need the time"


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose


def test_compose_passes_every_setting_and_pins_no_defaults() -> None:
    for service in _compose()["services"].values():
        environment = service["environment"]
        for name in Settings.model_fields:
            assert f"POOLSERVE_{name.upper()}" in environment, name
        pinned = {"POOLSERVE_HOST", "POOLSERVE_PORT", "POOLSERVE_GRPC_PORT",
                  "POOLSERVE_PROVIDERS", "POOLSERVE_REQUIRE_CUDA"}  # fmt: skip
        for variable, value in environment.items():
            if variable not in pinned:  # the service's default (e.g. per-provider tuning)
                assert value == f"${{{variable}:-}}", variable


def test_compose_stops_after_the_drain() -> None:
    drain = Settings.model_fields["drain_timeout_s"].default
    for service in _compose()["services"].values():
        grace = service["stop_grace_period"]
        assert grace.endswith("s")
        assert float(grace[:-1]) > drain
    assert re.search(
        r'^exec "\$python" -m app "\$@"$', (ROOT / "scripts/serve.sh").read_text(), re.M
    )


def test_compose_takes_settings_from_dotenv(tmp_path: Path) -> None:
    # The real docker-compose (`make docker-check`'s) reads .env beside the file.
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed (.ci/run installs it; apt-get install it)")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    (tmp_path / ".env").write_text("POOLSERVE_MAX_IMAGES=5\nPOOLSERVE_PORT=9999\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOLSERVE_")}
    result = subprocess.run(
        [binary, "--profile", "cpu", "config"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    service = yaml.safe_load(result.stdout)["services"]["poolserve-cpu"]["environment"]
    assert service["POOLSERVE_MAX_IMAGES"] == "5"
    assert service["POOLSERVE_MAX_CONCURRENT_INFERENCES"] == ""  # empty: the default
    assert service["POOLSERVE_PORT"] == "8000"  # the container's layout is not a setting
