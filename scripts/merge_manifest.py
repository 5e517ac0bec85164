"""Add every model of one repository to another: copy their folders, merge the manifests,
then verify every file's digest. For a GPU host whose torch cannot export some models, which
are exported elsewhere and carried over (docs/gpu-check.md).

    python scripts/merge_manifest.py INTO FROM      (repository root on PYTHONPATH)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from export.runtime.manifest import MANIFEST_NAME, load_manifest, verify_repository


def merge(into: Path, source: Path) -> list[str]:
    """The merged repository's model names; ``source``'s entries win on a clash."""
    target, extra = load_manifest(into), load_manifest(source)
    for entry in extra.models.values():
        folder = Path(entry.path).parts[0]
        shutil.copytree(source / folder, into / folder, dirs_exist_ok=True)
    merged = target.model_copy(update={"models": {**target.models, **extra.models}})
    (into / MANIFEST_NAME).write_text(merged.model_dump_json(indent=2) + "\n")
    return sorted(verify_repository(into).models)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write(__doc__ or "")
        return 2
    names = merge(Path(argv[0]), Path(argv[1]))
    sys.stdout.write(f"merged repository {argv[0]}: {', '.join(names)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
