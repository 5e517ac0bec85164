"""Add every model of one repository to another, digests checked
(``export.runtime.manifest.merge_repositories``; docs/gpu-check.md says why).

    python scripts/merge_manifest.py INTO FROM      (repository root on PYTHONPATH)
"""

from __future__ import annotations

import sys

from export.runtime.manifest import merge_repositories


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write(__doc__ or "")
        return 2
    names = sorted(merge_repositories(argv[0], argv[1]).models)
    sys.stdout.write(f"merged repository {argv[0]}: {', '.join(names)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
