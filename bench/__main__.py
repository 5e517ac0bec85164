"""`python -m bench [--quick]`: every bench script in turn, each printing its table."""

from __future__ import annotations

import sys

from bench import ops, pool_bandwidth


def main() -> None:
    args = sys.argv[1:]
    pool_bandwidth.main(args)
    ops.main(args)


if __name__ == "__main__":
    main()
