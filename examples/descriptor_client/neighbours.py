"""Each image's most similar others by cosine similarity, for ``--top``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]


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


def report(names: Sequence[str], order: npt.NDArray[np.intp], scores: Matrix) -> str:
    lines = []
    for i, name in enumerate(names):
        pairs = ", ".join(f"{names[j]} {s:.3f}" for j, s in zip(order[i], scores[i], strict=True))
        lines.append(f"{name}: {pairs}")
    return "\n".join(lines)
