"""The benchmark load driver: closed loop, exactly ``total`` requests, ``c`` in flight."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from bench.load import drive_async, drive_threads


@pytest.mark.parametrize("concurrency", [1, 3, 8])
def test_threads_run_every_request_at_the_given_concurrency(concurrency: int) -> None:
    lock, seen, active, peak = threading.Lock(), [], [0], [0]

    def call(i: int) -> None:
        with lock:
            seen.append(i)
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.01)
        with lock:
            active[0] -= 1

    result = drive_threads(call, concurrency, 20)
    assert sorted(seen) == list(range(20))
    assert peak[0] == concurrency
    assert result.requests == 20
    assert len(result.latencies_s) == 20
    assert min(result.latencies_s) >= 0.01
    # closed loop: 20 sleeps of 10 ms on c workers take at least ceil(20 / c) rounds
    assert result.wall_s >= 0.01 * -(-20 // concurrency)


def test_async_workers_keep_concurrency_requests_in_flight() -> None:
    active, peak, seen = [0], [0], []

    async def send(i: int) -> None:
        seen.append(i)
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        await asyncio.sleep(0.01)
        active[0] -= 1

    result = asyncio.run(drive_async(send, 4, 10))
    assert sorted(seen) == list(range(10))
    assert peak[0] == 4
    assert result.per_second == pytest.approx(10 / result.wall_s)
    assert 10 <= result.percentile_ms(50) <= result.percentile_ms(99)
