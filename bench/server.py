"""The real service as a child process for the HTTP benchmarks: ``python -m app`` on a free
port, configured through its ``POOLSERVE_*`` environment, ready once ``/health/ready``
answers 200. The model repository is exported first when it is missing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from export.runtime.manifest import load_manifest

READY_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_repository(root: Path, models: Sequence[str]) -> None:
    """Export ``models`` into ``root`` unless its manifest already lists them all."""
    if (root / "manifest.json").exists():
        listed = set(load_manifest(root).models)
        if set(models) <= listed:
            return
    cmd = [sys.executable, "-m", "export", "--out", str(root), "--models", *models]
    subprocess.run(cmd, check=True)


def rss_mib(pid: int) -> float:
    """Resident set size of a process (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass(frozen=True)
class Server:
    url: str
    pid: int
    startup_s: float = 0.0
    """From the process start to /health/ready answering 200 (load and warm-up)."""

    def rss_mib(self) -> float:
        return rss_mib(self.pid)


def wait_ready(
    url: str, process: subprocess.Popen[bytes], timeout_s: float = READY_TIMEOUT_S
) -> None:
    """Until ``url`` answers 200; raises when ``process`` exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before ready")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server was not ready within {timeout_s:.0f} s")


@contextmanager
def _process(cmd: list[str], env: Mapping[str, str], ready_url: str) -> Iterator[int]:
    """Run ``cmd`` until the block exits, once ``ready_url`` answers 200; yields its pid."""
    process = subprocess.Popen(cmd, env=dict(env))
    try:
        wait_ready(ready_url, process)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def serve(
    repository: Path,
    models: Sequence[str],
    env: Mapping[str, str] | None = None,
    /,
    **settings: object,
) -> Iterator[Server]:
    """Run the service with these models and extra settings (``batching=False`` ->
    ``POOLSERVE_BATCHING=False``) until the block exits. ``env`` (positional, so that no
    ``**settings`` can fill it) adds variables to this process's environment for the
    server, e.g. ``{"GLIBC_TUNABLES": ...}``."""
    port = free_port()
    full_env = {
        **os.environ,
        **(env or {}),
        "POOLSERVE_MODEL_REPOSITORY": str(repository),
        "POOLSERVE_MODELS": ",".join(models),
        "POOLSERVE_PROVIDERS": "CPUExecutionProvider",
        "POOLSERVE_PORT": str(port),
        "POOLSERVE_LOG_LEVEL": "warning",
        **{f"POOLSERVE_{k.upper()}": str(v) for k, v in settings.items()},
    }
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with _process([sys.executable, "-m", "app"], full_env, f"{url}/health/ready") as pid:
        yield Server(url, pid, time.perf_counter() - started)


@contextmanager
def serve_echo(app: str = "bench.echo_app:app") -> Iterator[Server]:
    """An app of ``bench.echo_app`` under uvicorn with the service's defaults (httptools,
    uvloop)."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", app, "--port", str(port),
           "--log-level", "warning"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with _process(cmd, os.environ, url) as pid:
        yield Server(url, pid)
