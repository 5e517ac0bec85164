"""`python -m bench [--quick] [--repository DIR] [--providers P1,P2]`: every comparison in
turn, each printing its Markdown table: /pool bandwidth, per-op latency, /descriptor under
load, the server's memory over 10,000 mixed requests, normal requests beside the most
expensive admissible ones, /pool over every transport (npy, OIP binary, shared memory,
gRPC), where a /pool request's time goes, cache hits while misses stream, what a JSON
reply costs against npy, and Ray Serve's overhead (needs the `ray` extra). Missing models
are exported first.
"""

from __future__ import annotations

import argparse

from bench import (
    cache_contention,
    descriptor,
    expensive,
    json_cost,
    memory,
    oip,
    ops,
    pool_bandwidth,
    pool_breakdown,
    ray_overhead,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke sizes; not results")
    parser.add_argument("--repository", default="model_repository")
    parser.add_argument("--providers", default="CPUExecutionProvider")
    args = parser.parse_args()
    quick = ["--quick"] if args.quick else []
    served = [*quick, "--repository", args.repository, "--providers", args.providers]
    pool_bandwidth.main([*quick, "--repository", args.repository])
    ops.main(quick)
    descriptor.main(served)
    memory.main(served)
    expensive.main(served)
    oip.main([*quick, "--repository", args.repository])
    pool_breakdown.main([*quick, "--repository", args.repository])
    cache_contention.main(served)
    json_cost.main(served)
    ray_overhead.main([*quick, "--repository", args.repository])


if __name__ == "__main__":
    main()
