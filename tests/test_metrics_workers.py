"""/metrics across uvicorn workers: a real ``python -m app`` with POOLSERVE_WORKERS=2.

Requests go over fresh connections until both workers have served some (each worker's CPU
time, read from /proc, must move), then every scrape, whichever worker answers it, shows
the total. A worker killed with SIGKILL is replaced; its requests stay in the totals, and
the per-worker process metrics follow the live workers. The private multiprocess directory
is gone once the server has stopped.
"""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from bench.server import Server, serve
from tests.app_fixtures import SMOKE_MODEL

ROUND = 8  # requests per round, 4 at a time
MAX_ROUNDS = 6
SCRAPES = 10
SERVED_TICKS = 3  # CPU ticks (10 ms) a worker spends on even one /descriptor request
RESTART_TIMEOUT_S = 120.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def _fresh(url: str, method: str, path: str, **kwargs: object) -> httpx.Response:
    """One request on its own connection, so the kernel may hand it to either worker."""
    with httpx.Client(base_url=url, timeout=60, headers={"connection": "close"}) as client:
        return client.request(method, path, **kwargs)  # type: ignore[arg-type]


def _scrape(url: str) -> Samples:
    response = _fresh(url, "GET", "/metrics")
    assert response.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _workers(supervisor: int) -> list[int]:
    """uvicorn's worker processes: the supervisor's children that multiprocessing spawned
    (not its resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # exited while we looked
            continue
        if int(fields[1]) == supervisor and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return sorted(found)


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15)


def _metrics_dir(pid: int) -> str:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    [entry] = [e for e in environ if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return entry.split(b"=", 1)[1].decode()


def _describe_round(url: str, seed: int) -> None:
    def one(i: int) -> int:
        response = _fresh(
            url,
            "POST",
            f"/descriptor?model={SMOKE_MODEL}",
            content=_png(seed + i),
            headers={"content-type": "image/png", "connection": "close"},
        )
        return response.status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, range(ROUND))) == [200] * ROUND


def _totals(samples: Samples) -> tuple[float, float, float]:
    """/descriptor 200s, the model's successes, and its decoded images."""
    return (
        _value(
            samples,
            "poolserve_requests_total",
            endpoint="/descriptor",
            method="POST",
            status="200",
        ),
        _value(
            samples,
            "poolserve_model_requests_total",
            model=SMOKE_MODEL,
            outcome="success",
            code="",
        ),
        _value(samples, "poolserve_decode_seconds_count", model=SMOKE_MODEL),
    )


def _process_pids(samples: Samples) -> set[int]:
    return {
        int(dict(labels)["pid"])
        for name, labels in samples
        if name == "process_resident_memory_bytes"
    }


@pytest.fixture(scope="module")
def two_workers(app_repository: Path) -> Iterator[Server]:
    with serve(app_repository, [SMOKE_MODEL], workers=2, batching=False) as server:
        yield server


@pytest.mark.slow
def test_every_scrape_shows_the_total_of_both_workers(two_workers: Server) -> None:
    url = two_workers.url
    workers = _workers(two_workers.pid)
    assert len(workers) == 2
    ticks = {pid: _cpu_ticks(pid) for pid in workers}
    sent = 0
    for round_ in range(MAX_ROUNDS):
        _describe_round(url, 100 * round_)
        sent += ROUND
        if all(_cpu_ticks(pid) - ticks[pid] >= SERVED_TICKS for pid in workers):
            break
    assert all(_cpu_ticks(pid) - ticks[pid] >= SERVED_TICKS for pid in workers), (
        "one worker served every request: the test proves nothing"
    )
    for _ in range(SCRAPES):
        samples = _scrape(url)
        assert _totals(samples) == (sent, sent, sent)
        assert _process_pids(samples) == set(workers)
        assert any(name == "poolserve_build_info" for name, _ in samples)
        assert _value(samples, "poolserve_queue_size", model=SMOKE_MODEL, queue="slot") == 0

    # A worker killed outright: uvicorn starts another; the dead one's counts stay.
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + RESTART_TIMEOUT_S
    while time.monotonic() < deadline:
        replaced = _workers(two_workers.pid)
        if len(replaced) == 2 and workers[0] not in replaced:
            samples = _scrape(url)  # answered by a ready worker, whichever
            if _process_pids(samples) == set(replaced):
                break
        time.sleep(0.5)
    else:
        pytest.fail("the killed worker was not replaced in time")
    for _ in range(SCRAPES):
        assert _totals(_scrape(url)) == (sent, sent, sent)


@pytest.mark.slow
def test_the_private_directory_is_removed_on_exit(app_repository: Path) -> None:
    with serve(app_repository, [SMOKE_MODEL], workers=2) as server:
        directory = _metrics_dir(_workers(server.pid)[0])
        assert Path(directory).is_dir()
        assert any(Path(directory).glob("*.db"))
    assert not Path(directory).exists()
