"""The sha256 of a file, read in chunks (checkpoints and models can be hundreds of MB).

Torch-free: the checkpoint loader and the service's manifest check both use it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
