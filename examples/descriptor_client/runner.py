"""The run: batches of images sent by a bounded number of workers, each answer written to
the store as it arrives, with retries, and the culprit of a refused batch found by sending
its images one by one.

- Already stored images are skipped before anything is sent.
- A file that cannot be read fails at once; the rest of its batch is still sent.
- A refusal that would hit every request (401, 403, 404, 406), or a server that stays
  unreachable through every retry, stops the run: no new batches start.
- A batch that stays overloaded through every retry fails without being split: overload is
  no image's fault.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Never

import httpx
from tqdm import tqdm

from examples.descriptor_client.inputs import ImageFile
from examples.descriptor_client.retry import RetryPolicy
from examples.descriptor_client.store import DescriptorStore
from examples.descriptor_client.summary import Summary
from examples.descriptor_client.transport import (
    NPY,
    Matrix,
    Refusal,
    RefusedError,
    Upload,
    Verdict,
    describe,
)


@dataclass(frozen=True)
class RunOptions:
    model: str | None = None
    batch: int = 8
    concurrency: int = 4
    reply: str = NPY
    progress: bool = True


class Runner:
    def __init__(
        self,
        client: httpx.AsyncClient,
        store: DescriptorStore,
        policy: RetryPolicy,
        options: RunOptions,
    ) -> None:
        self.client = client
        self.store = store
        self.policy = policy
        self.options = options
        self.summary = Summary()
        self._bar: tqdm[Never] | None = None

    async def run(self, images: Sequence[ImageFile]) -> Summary:
        loop = asyncio.get_running_loop()
        started = loop.time()
        todo = [image for image in images if not self.store.has(image.key)]
        self.summary.total, self.summary.skipped = len(images), len(images) - len(todo)
        size = self.options.batch
        batches = iter([todo[start : start + size] for start in range(0, len(todo), size)])
        progress = None if self.options.progress else True  # None: only on a terminal
        with tqdm(total=len(todo), unit="img", disable=progress) as bar:
            self._bar = bar
            workers = [self._work(batches) for _ in range(self.options.concurrency)]
            await asyncio.gather(*workers)
        self.summary.elapsed_s = loop.time() - started
        return self.summary

    async def _work(self, batches: Iterator[Sequence[ImageFile]]) -> None:
        for batch in batches:  # one iterator for all workers: each batch is taken once
            if self.summary.aborted is not None:
                return
            await self._send_batch(batch)

    async def _send_batch(self, batch: Sequence[ImageFile]) -> None:
        uploads = [upload for image in batch if (upload := self._read(image)) is not None]
        if uploads:
            await self._send(uploads)

    def _read(self, image: ImageFile) -> Upload | None:
        try:
            return Upload(image, image.path.read_bytes())
        except OSError as exc:
            self._fail(image, f"unreadable: {exc.strerror or exc}")
            return None

    async def _send(self, uploads: Sequence[Upload]) -> None:
        try:
            rows = await self._with_retries(uploads)
        except RefusedError as exc:
            await self._refused(uploads, exc.refusal)
            return
        for upload, row in zip(uploads, rows, strict=True):
            self.store.save(upload.image.key, row)
            self._advance()
        self.summary.described += len(uploads)

    async def _refused(self, uploads: Sequence[Upload], refusal: Refusal) -> None:
        verdict = refusal.verdict
        reason = str(refusal)
        if verdict is Verdict.RETRY:
            reason += f" (gave up after {self.policy.retries} retries)"
        if verdict is Verdict.ABORT or (verdict is Verdict.RETRY and refusal.status == 0):
            self._abort(reason)
        elif verdict is Verdict.REJECT and len(uploads) > 1:
            for upload in uploads:  # find the culprit; the others still get descriptors
                if self.summary.aborted is None:
                    await self._send([upload])
        else:
            for upload in uploads:
                self._fail(upload.image, reason)

    async def _with_retries(self, uploads: Sequence[Upload]) -> Matrix:
        attempt = 0
        while True:
            self.summary.requests += 1
            try:
                return await describe(self.client, uploads, self.options.model, self.options.reply)
            except RefusedError as exc:
                if exc.refusal.verdict is not Verdict.RETRY or attempt == self.policy.retries:
                    raise
                wait = self.policy.delay_s(attempt, exc.refusal.retry_after)
            attempt += 1
            self.summary.retries += 1
            await asyncio.sleep(wait)

    def _fail(self, image: ImageFile, reason: str) -> None:
        self.summary.failed[image.path] = reason
        tqdm.write(f"failed: {image.path}: {reason}", file=sys.stderr)
        self._advance()

    def _abort(self, reason: str) -> None:
        if self.summary.aborted is None:
            self.summary.aborted = reason
            tqdm.write(f"stopping: {reason}", file=sys.stderr)

    def _advance(self) -> None:
        if self._bar is not None:
            self._bar.update(1)
