"""``python examples/client.py``: arguments, the HTTP client, the run, the report."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np

from examples.descriptor_client.inputs import ImageFile, collect, listed_paths
from examples.descriptor_client.neighbours import nearest_neighbours, report
from examples.descriptor_client.retry import RetryPolicy
from examples.descriptor_client.runner import Runner, RunOptions
from examples.descriptor_client.store import DescriptorStore
from examples.descriptor_client.summary import Summary
from examples.descriptor_client.transport import FORMATS


def at_least(low: int) -> type[int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    return parse  # type: ignore[return-value]  # argparse only calls it


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description="Describe images with poolserve's /descriptor, one <name>.npy per image; "
        "a rerun skips images already described."
    )
    parser.add_argument("inputs", nargs="*", type=Path, help="folders (their images) or files")
    parser.add_argument("--files-from", type=Path, help="a file listing images, one a line")
    parser.add_argument("--out", type=Path, default=Path("descriptors"), help="output folder")
    parser.add_argument("--url", default=env("POOLSERVE_URL", "http://127.0.0.1:8000"))
    parser.add_argument(
        "--api-key", default=env("POOLSERVE_API_KEY"), help="default: $POOLSERVE_API_KEY"
    )
    parser.add_argument("--model", default=None, help="default: the service's default model")
    parser.add_argument("--batch", type=at_least(1), default=8, help="images per request")
    parser.add_argument("--concurrency", type=at_least(1), default=4, help="requests in flight")
    parser.add_argument("--format", choices=sorted(FORMATS), default="npy", help="reply format")
    parser.add_argument("--retries", type=at_least(0), default=5, help="per request")
    parser.add_argument("--backoff", type=float, default=0.5, help="first retry wait, seconds")
    parser.add_argument("--max-wait", type=float, default=30.0, help="longest retry wait, s")
    parser.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    parser.add_argument("--top", type=at_least(0), default=0, help="print N nearest neighbours")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not args.inputs and args.files_from is None:
        parser.error("name folders or files, or --files-from")
    return args


def images_of(args: argparse.Namespace) -> list[ImageFile]:
    paths = list(args.inputs)
    if args.files_from is not None:
        paths += listed_paths(args.files_from)
    return collect(paths)


def http_client(
    args: argparse.Namespace, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The client for ``args.url`` (``transport``: another way to reach it, e.g. in tests)."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=args.concurrency)
    return httpx.AsyncClient(
        base_url=args.url,
        headers=headers,
        timeout=args.timeout,
        limits=limits,
        transport=transport,
    )


async def run(args: argparse.Namespace, client: httpx.AsyncClient) -> Summary:
    """Describe the images ``args`` names with ``client``; the summary says how it went."""
    policy = RetryPolicy(args.retries, args.backoff, args.max_wait)
    options = RunOptions(
        model=args.model,
        batch=args.batch,
        concurrency=args.concurrency,
        reply=FORMATS[args.format],
        progress=not args.no_progress,
    )
    runner = Runner(client, DescriptorStore(args.out), policy, options)
    return await runner.run(images_of(args))


def neighbours_text(args: argparse.Namespace, top: int) -> str:
    """The ``top`` nearest neighbours of every described image, by cosine similarity."""
    store = DescriptorStore(args.out)
    keys = [image.key for image in images_of(args) if store.has(image.key)]
    if len(keys) < 2:
        return "neighbours need two described images"
    order, scores = nearest_neighbours(np.stack([store.load(k) for k in keys]), top)
    return report(keys, order, scores)


async def _main(args: argparse.Namespace) -> Summary:
    async with http_client(args) as client:
        return await run(args, client)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = asyncio.run(_main(args))
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(summary.render() + "\n")
    if args.top:
        sys.stdout.write(neighbours_text(args, args.top) + "\n")
    return summary.exit_code
