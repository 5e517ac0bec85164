"""``python -m app.ray_serve``: start or join a Ray cluster, deploy poolserve, block until
SIGINT or SIGTERM, then remove the application.

poolserve's settings come from the environment (``POOLSERVE_*``) as for ``python -m app``;
the flags say how Ray runs it. ``--address auto`` joins a running cluster (``ray start``);
without it a local cluster starts in this process.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

import ray
from ray import serve

from app.ray_serve.builder import BuildArgs, build_app

log = logging.getLogger("poolserve")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = BuildArgs()
    p = argparse.ArgumentParser(prog="python -m app.ray_serve", description=__doc__)
    p.add_argument("--address", default=None, help="Ray cluster to join (auto, ray://...)")
    p.add_argument("--host", default="127.0.0.1", help="address Ray's HTTP proxy binds")
    p.add_argument("--port", type=int, default=8000, help="port of Ray's HTTP proxy")
    p.add_argument("--name", default="poolserve", help="Serve application name")
    p.add_argument("--route-prefix", default="/")
    p.add_argument("--replicas", type=int, default=defaults.replicas)
    p.add_argument("--min-replicas", type=int, help="autoscale from this many replicas")
    p.add_argument("--max-replicas", type=int, help="autoscale up to this many replicas")
    p.add_argument("--target-ongoing-requests", type=float, default=2.0)
    p.add_argument("--num-cpus", type=float, default=defaults.num_cpus, help="per replica")
    p.add_argument("--num-gpus", type=float, default=defaults.num_gpus, help="per replica")
    p.add_argument("--max-queued-requests", type=int, default=defaults.max_queued_requests)
    p.add_argument("--metrics-interval-s", type=float, default=defaults.metrics_interval_s)
    p.add_argument("--expected-digest", help="pin the model repository's digest")
    return p.parse_args(argv)


def build_args(args: argparse.Namespace) -> dict[str, Any]:
    """The serve config's ``args`` these flags stand for."""
    fields = set(BuildArgs.model_fields) - {"settings"}
    return {k: v for k, v in vars(args).items() if k in fields and v is not None}


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO)
    args = parse(argv)
    application = build_app(build_args(args))  # fails here, before Ray, on bad settings
    ray.init(address=args.address)
    serve.start(http_options={"host": args.host, "port": args.port})
    # poolserve logs each request itself (with its request id): Ray's access log would repeat it.
    quiet = {"enable_access_log": False}
    serve.run(application, name=args.name, route_prefix=args.route_prefix, logging_config=quiet)
    log.info("poolserve on Ray Serve at http://%s:%d%s", args.host, args.port, args.route_prefix)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    log.info("removing the application (replicas drain for up to drain_timeout_s)")
    serve.delete(args.name)
    ray.shutdown()


if __name__ == "__main__":
    main()
