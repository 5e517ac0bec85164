"""The run's output: a folder with one ``<image name>.npy`` (a D-vector, float32) per image.

Each file is written to a temporary name and renamed into place, so a file that exists is
complete: a run that is stopped leaves only finished descriptors, and the next run skips
them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


class DescriptorStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npy"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def save(self, key: str, descriptor: Vector) -> None:
        final = self.path(key)
        temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        with temporary.open("wb") as out:
            np.save(out, descriptor, allow_pickle=False)
        os.replace(temporary, final)  # atomic on one file system

    def load(self, key: str) -> Vector:
        vector: Vector = np.load(self.path(key), allow_pickle=False).astype(np.float32)
        return vector
