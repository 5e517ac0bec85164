"""Describe a folder of images with poolserve and list each image's nearest neighbours.

    python examples/client.py photos/ --out descriptors.npy [--url http://127.0.0.1:8000]
                              [--model netvlad_poolformer_s12] [--batch-size 4] [--top 5]

Posts the images to ``/descriptor`` a few per request (multipart field ``images``, answer as
npy), saves the N x D descriptors in file order (``<out>.txt`` lists the files), and prints
the ``--top`` most similar other images of each by cosine similarity.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt

IMAGE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}
NPY = "application/x-npy"

Matrix = npt.NDArray[np.float32]


def find_images(folder: Path) -> list[Path]:
    """The folder's images (by suffix), sorted by name so runs are repeatable."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_TYPES)


def batches(paths: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def describe_batch(client: httpx.Client, paths: Sequence[Path], model: str | None) -> Matrix:
    """One ``/descriptor`` request for ``paths``; rows come back in the order sent."""
    files = [("images", (p.name, p.read_bytes(), IMAGE_TYPES[p.suffix.lower()])) for p in paths]
    params = {"model": model} if model else {}
    response = client.post("/descriptor", params=params, files=files, headers={"Accept": NPY})
    if response.is_error:
        raise RuntimeError(f"/descriptor answered {response.status_code}: {error_text(response)}")
    rows = np.load(io.BytesIO(response.content), allow_pickle=False)
    if rows.ndim != 2 or rows.shape[0] != len(paths):
        raise RuntimeError(f"expected {len(paths)} descriptors, got an array of {rows.shape}")
    descriptors: Matrix = rows.astype(np.float32, copy=False)
    return descriptors


def error_text(response: httpx.Response) -> str:
    """The envelope's message and code when there is one, else the start of the body."""
    try:
        body = response.json()
        return f"{body['error']} ({body['code']})"
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def describe(
    client: httpx.Client, paths: Sequence[Path], model: str | None, batch_size: int
) -> Matrix:
    """Descriptors of all ``paths`` (N x D), ``batch_size`` images per request."""
    parts = [describe_batch(client, batch, model) for batch in batches(paths, batch_size)]
    return np.concatenate(parts, axis=0)


def nearest_neighbours(descriptors: Matrix, top: int) -> tuple[npt.NDArray[np.intp], Matrix]:
    """For each row, the indices and cosine similarities of its ``top`` most similar others.

    Ties keep the lower index first. An image is never its own neighbour.
    """
    norms = np.linalg.norm(descriptors, axis=1, keepdims=True)
    unit = descriptors / np.maximum(norms, np.float32(1e-12))
    similarity = (unit @ unit.T).astype(np.float32)
    np.fill_diagonal(similarity, -np.inf)
    k = min(top, len(descriptors) - 1)
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(similarity, order, axis=1)


def report(paths: Sequence[Path], order: npt.NDArray[np.intp], scores: Matrix) -> str:
    lines = []
    for i, path in enumerate(paths):
        pairs = ", ".join(
            f"{paths[j].name} {s:.3f}" for j, s in zip(order[i], scores[i], strict=True)
        )
        lines.append(f"{path.name}: {pairs}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Describe a folder of images with poolserve.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, default=Path("descriptors.npy"))
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default=None, help="default: the service's default model")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120.0)
    return parser.parse_args(argv)


def run(args: argparse.Namespace, client: httpx.Client) -> str:
    paths = find_images(args.folder)
    if len(paths) < 2:
        raise RuntimeError(f"{args.folder} holds {len(paths)} images; neighbours need two")
    descriptors = describe(client, paths, args.model, args.batch_size)
    np.save(args.out, descriptors, allow_pickle=False)
    args.out.with_suffix(".txt").write_text("".join(f"{p}\n" for p in paths))
    order, scores = nearest_neighbours(descriptors, args.top)
    return report(paths, order, scores)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with httpx.Client(base_url=args.url, timeout=args.timeout) as client:
            sys.stdout.write(run(args, client) + "\n")
    except (RuntimeError, ValueError, OSError, httpx.HTTPError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
