"""The dynamic batcher: batched results equal unbatched ones, Triton's full-batch and delay
rules, a bounded queue, errors confined to their batch, and a clean close."""

import asyncio
import threading
import time

import numpy as np
import pytest

from app.inference.batcher import (
    BatcherClosedError,
    BatchStats,
    DynamicBatcher,
    QueueFullError,
)
from export.runtime.graph import build_pool_graph
from export.runtime.sessions import create_session, run
from models.pooling import parse_params

CPU = ["CPUExecutionProvider"]


def gem_reference(x: np.ndarray, p: float = 3.0, eps: float = 1e-6) -> np.ndarray:
    """cirtorch GeM in closed form: (mean over H, W of clamp(x, eps)^p)^(1/p)."""
    clamped = np.maximum(x.astype(np.float64), eps)
    mean: np.ndarray = np.mean(clamped**p, axis=(2, 3), keepdims=True)
    return (mean ** (1 / p)).astype(np.float32)


class Recorder:
    """Wraps a batch function; remembers each batch's row count."""

    def __init__(self, fn=None, delay_s: float = 0.0):
        self.fn = fn or (lambda x: x * 2.0)
        self.delay_s = delay_s
        self.sizes: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.sizes.append(int(x.shape[0]))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        out: np.ndarray = self.fn(x)
        return out


def test_batched_gem_on_onnxruntime_equals_unbatched_and_closed_form() -> None:
    session = create_session(build_pool_graph("gem", parse_params("gem", p=3.0)), CPU)
    recorder = Recorder(lambda x: run(session, x)[0])
    rng = np.random.default_rng(0)
    requests = [rng.random((n, 4, 6, 5), dtype=np.float32) for n in (1, 3, 2, 1, 4, 1)]
    stats: list[BatchStats] = []

    async def main() -> list[np.ndarray]:
        batcher = DynamicBatcher(recorder, 8, 0.2, 32, observer=stats.append)
        results = await asyncio.gather(*(batcher.submit(x) for x in requests))
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert max(recorder.sizes) > 1, "concurrent requests were not batched"
    assert sum(recorder.sizes) == sum(len(x) for x in requests)
    for x, got in zip(requests, results, strict=True):
        assert got.shape == (len(x), 4, 1, 1)
        (alone,) = run(session, x)
        np.testing.assert_allclose(got, alone, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got, gem_reference(x), rtol=1e-5, atol=1e-6)
    assert [s.rows for s in stats] == recorder.sizes
    assert sum(s.requests for s in stats) == len(requests)
    assert recorder.threads.isdisjoint({threading.main_thread().name})


def test_request_order_and_rows_are_preserved() -> None:
    recorder = Recorder(lambda x: x[:, :1] * 10.0)

    async def main() -> list[np.ndarray]:
        batcher = DynamicBatcher(recorder, 16, 0.1, 64)
        tasks = [batcher.submit(np.full((1 + i % 3, 2), float(i), np.float32)) for i in range(20)]
        results = await asyncio.gather(*tasks)
        await batcher.close()
        return results

    for i, got in enumerate(asyncio.run(main())):
        np.testing.assert_array_equal(got, np.full((1 + i % 3, 1), 10.0 * i, np.float32))


def test_full_batch_goes_without_waiting_for_the_delay() -> None:
    recorder = Recorder()

    async def main() -> float:
        batcher = DynamicBatcher(recorder, 4, 30.0, 16)  # a 30 s delay would time the test out
        start = time.perf_counter()
        await asyncio.gather(*(batcher.submit(np.ones((1, 3), np.float32)) for _ in range(4)))
        elapsed = time.perf_counter() - start
        await batcher.close()
        return elapsed

    assert asyncio.run(main()) < 10.0
    assert recorder.sizes == [4]


def test_partial_batch_goes_once_the_delay_expires() -> None:
    recorder = Recorder()

    async def main() -> float:
        batcher = DynamicBatcher(recorder, 64, 0.05, 16)
        start = time.perf_counter()
        await asyncio.gather(*(batcher.submit(np.ones((2, 3), np.float32)) for _ in range(3)))
        elapsed = time.perf_counter() - start
        await batcher.close()
        return elapsed

    elapsed = asyncio.run(main())
    assert recorder.sizes == [6]  # all three waited for each other...
    assert 0.04 <= elapsed < 5.0  # ...for about the delay, not forever


def test_zero_delay_does_not_wait_for_companions() -> None:
    recorder = Recorder()

    async def main() -> None:
        batcher = DynamicBatcher(recorder, 64, 0.0, 16)
        await batcher.submit(np.ones((1, 3), np.float32))
        await batcher.submit(np.ones((1, 3), np.float32))
        await batcher.close()

    asyncio.run(main())
    assert recorder.sizes == [1, 1]


def test_queue_full_raises_with_retry_after() -> None:
    release = threading.Event()
    recorder = Recorder(lambda x: (release.wait(10), x)[1])

    async def main() -> None:
        batcher = DynamicBatcher(recorder, 1, 0.0, 2)
        first = asyncio.create_task(batcher.submit(np.ones((1, 1))))
        while not recorder.sizes:  # the first request is running, the queue is empty
            await asyncio.sleep(0.005)
        queued = [asyncio.create_task(batcher.submit(np.ones((1, 1)))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError) as info:
            await batcher.submit(np.ones((1, 1)))
        assert info.value.retry_after_s >= 1
        release.set()
        await asyncio.gather(first, *queued)
        await batcher.close()

    asyncio.run(main())
    assert recorder.sizes == [1, 1, 1]


def test_an_error_reaches_its_batch_only_and_the_batcher_keeps_working() -> None:
    def fn(x: np.ndarray) -> np.ndarray:
        if np.any(x < 0):
            raise RuntimeError("negative input")
        return x + 1

    async def main() -> None:
        batcher = DynamicBatcher(Recorder(fn), 2, 0.5, 16)
        bad = await asyncio.gather(
            batcher.submit(np.array([[-1.0]])), batcher.submit(np.array([[1.0]])),
            return_exceptions=True,
        )  # fmt: skip
        assert all(isinstance(r, RuntimeError) for r in bad)
        good = await batcher.submit(np.array([[2.0], [3.0]]))
        np.testing.assert_array_equal(good, [[3.0], [4.0]])
        await batcher.close()

    asyncio.run(main())


def test_a_wrong_row_count_from_run_batch_is_an_error_not_a_wrong_answer() -> None:
    async def main() -> None:
        batcher = DynamicBatcher(lambda x: x[:1], 4, 0.0, 4)
        with pytest.raises(ValueError, match="returned 1 rows for 2 inputs"):
            await batcher.submit(np.ones((2, 1)))
        await batcher.close()

    asyncio.run(main())


def test_requests_of_other_row_shapes_are_batched_apart() -> None:
    recorder = Recorder()

    async def main() -> list[np.ndarray]:
        batcher = DynamicBatcher(recorder, 8, 0.05, 16)
        shapes = [(1, 3), (1, 5), (2, 3), (1, 5)]
        results = await asyncio.gather(*(batcher.submit(np.ones(s)) for s in shapes))
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert [r.shape for r in results] == [(1, 3), (1, 5), (2, 3), (1, 5)]
    assert sorted(recorder.sizes) == [2, 3]


def test_outputs_that_alias_the_reused_buffer_are_copied() -> None:
    async def main() -> list[np.ndarray]:
        batcher = DynamicBatcher(lambda x: x, 4, 0.05, 16)
        first = await asyncio.gather(*(batcher.submit(np.full((1, 2), i)) for i in range(2)))
        await asyncio.gather(*(batcher.submit(np.full((1, 2), 9)) for _ in range(2)))
        await batcher.close()
        return first

    np.testing.assert_array_equal(np.concatenate(asyncio.run(main())), [[0, 0], [1, 1]])


def test_oversized_request_and_closed_batcher_are_refused() -> None:
    async def main() -> None:
        batcher = DynamicBatcher(lambda x: x, 2, 0.0, 4)
        with pytest.raises(ValueError, match="1..2 rows"):
            await batcher.submit(np.ones((3, 1)))
        await batcher.close()
        with pytest.raises(BatcherClosedError):
            await batcher.submit(np.ones((1, 1)))

    asyncio.run(main())


def test_close_drains_queued_requests_or_fails_them() -> None:
    async def main(drain: bool) -> list[object]:
        batcher = DynamicBatcher(Recorder(delay_s=0.05), 1, 0.0, 8)
        tasks = [asyncio.create_task(batcher.submit(np.ones((1, 1)))) for _ in range(3)]
        await asyncio.sleep(0.01)
        await batcher.close(drain=drain)
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    assert all(isinstance(r, np.ndarray) for r in asyncio.run(main(True)))
    failed = asyncio.run(main(False))
    assert any(isinstance(r, BatcherClosedError) for r in failed)


def test_a_failing_observer_does_not_stop_serving() -> None:
    def observer(stats: BatchStats) -> None:
        raise RuntimeError("metrics down")

    async def main() -> np.ndarray:
        batcher = DynamicBatcher(lambda x: x + 1, 2, 0.0, 4, observer=observer)
        await batcher.submit(np.zeros((1, 1)))
        out = await batcher.submit(np.zeros((1, 1)))
        await batcher.close()
        return out

    np.testing.assert_array_equal(asyncio.run(main()), [[1.0]])
