"""Resident memory against a real server: after the most expensive requests the budgets
admit (and a few they refuse), RSS is back within 10% of its level after start-up (the
test repository's models loaded). /pool sessions run without a memory pattern and shrink
onnxruntime's arena after each run, so no run's peak stays resident."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bench.server import serve
from tests.app_fixtures import npy_bytes

NPY = "application/x-npy"
X = np.random.default_rng(0).random((1, 16, 256, 256), dtype=np.float32)  # 4 MiB
EXPENSIVE: list[tuple[str, dict[str, Any], int]] = [
    ("softpool", {"kernel_size": 7, "stride": 1}, 200),
    ("median", {"kernel_size": 7, "stride": 1}, 200),
    ("fractional_max", {"kernel_size": 2, "output_ratio": 0.7}, 200),
    ("softpool", {"kernel_size": 9, "stride": 1}, 413),
    ("max", {"kernel_size": 129, "stride": 1}, 413),
]


@pytest.mark.slow
def test_rss_returns_after_the_most_expensive_admitted_requests(app_repository: Path) -> None:
    with (
        serve(app_repository, []) as server,
        httpx.Client(base_url=server.url, timeout=120) as client,
    ):
        headers = {"content-type": NPY, "accept": NPY}
        small = client.post("/pool", params={"op": "max", "kernel_size": "2"},
                            content=npy_bytes(X[:, :1, :8, :8]), headers=headers)  # fmt: skip
        assert small.status_code == 200
        baseline = server.rss_mib()
        for op, params, status in EXPENSIVE:
            query = {"op": op, **{k: json.dumps(v) for k, v in params.items()}}
            r = client.post("/pool", params=query, content=npy_bytes(X), headers=headers)
            assert r.status_code == status, (op, params, r.text[:300])
        for _round in range(2):  # the same graphs again: cached sessions keep no peak
            for op, params, _status in EXPENSIVE[:3]:
                query = {"op": op, **{k: json.dumps(v) for k, v in params.items()}}
                again = client.post("/pool", params=query, content=npy_bytes(X), headers=headers)
                assert again.status_code == 200
        assert server.rss_mib() <= baseline * 1.10, (baseline, server.rss_mib())
