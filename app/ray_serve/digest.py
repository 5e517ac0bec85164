"""The repository digest every replica must match before it may become ready.

It is the sha256 of the served models' names and file sha256s (from manifest.json), in a
canonical JSON form. Each file's sha256 is verified against the manifest when the replica
loads it (export.runtime.manifest), so equal digests mean byte-identical model files. The
manifest's other fields are left out on purpose: ``created_utc`` and the parity figures
differ between two exports of the same files on two nodes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from export.runtime.manifest import ManifestError, load_manifest


def repository_digest(root: str | Path, names: Sequence[str] = ()) -> str:
    """The digest of ``names`` (every model of the manifest when empty) in ``root``.

    Raises:
        ManifestError: no readable manifest, or a name it does not list.
    """
    models = load_manifest(root).models
    missing = sorted(set(names) - set(models))
    if missing:
        raise ManifestError(f"{missing}: not in the manifest of {root} ({sorted(models)})")
    files = {name: models[name].sha256 for name in sorted(names or models)}
    canonical = json.dumps(files, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
