"""What the deployment asks Ray for, derived from poolserve's own settings.

Ray admits up to ``max_ongoing_requests`` into one replica and queues the rest in the
caller's router (up to ``max_queued_requests``, then it answers 503 itself). That cap is
set to what one poolserve replica admits without refusing: its inference slots plus the
requests allowed to wait for one (``max_waiting``), or with dynamic batching its slots'
batches plus the batch queue (``max_queue_size``). Ray never queues more into a replica
than poolserve would take, so a full replica sends the overflow to another replica or to
Ray's queue instead of turning it away (docs/ray.md, "Two queues").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.core.config import Settings
from app.inference.tuning import CPU, TUNED, tune
from export.runtime.sessions import CUDA


class Scaling(BaseModel):
    """Replica count or autoscaling bounds, and each replica's resources."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: int = Field(1, ge=1)
    min_replicas: int | None = Field(None, ge=0)
    """Set: autoscale between min_replicas and max_replicas instead of a fixed count."""
    max_replicas: int | None = Field(None, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    """Fractional GPUs let several replicas share one device."""
    max_queued_requests: int = Field(-1, ge=-1)
    """Ray's queue per caller in front of the replicas; -1 = unbounded, Ray's default."""
    health_check_period_s: float = Field(10.0, gt=0)
    health_check_timeout_s: float = Field(30.0, gt=0)

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None


def replica_cores(scaling: Scaling) -> int:
    """The cores a CPU replica is given: its num_cpus, rounded up, at least one."""
    return max(1, math.ceil(scaling.num_cpus))


def replica_settings(settings: Settings, scaling: Scaling) -> Settings:
    """The settings every replica serves with: the driver's, with the repository as an
    absolute path (replicas run in other folders), one worker, and on CPU the
    core-dependent defaults sized to the replica's num_cpus, not to the whole node's cores
    (replicas on one node would otherwise each take every core). gRPC and shared memory
    stay off: Ray's proxy is the only way in."""
    update: dict[str, Any] = {
        "model_repository": Path(settings.model_repository).resolve(),
        "workers": 1,
        "grpc_port": None,
        "shared_memory": False,
    }
    if scaling.num_gpus == 0:
        tuned, _ = tune(settings, CPU, replica_cores(scaling))
        update |= {name: getattr(tuned, name) for name in TUNED}
    return settings.model_copy(update=update)


def admitted_per_replica(settings: Settings, scaling: Scaling) -> int:
    """Requests one replica takes before its own queues answer 503."""
    provider = CUDA if scaling.num_gpus > 0 else CPU
    tuned, _ = tune(settings, provider, replica_cores(scaling))
    slots = tuned.max_concurrent_inferences or 1
    if tuned.batching:
        return slots * tuned.max_batch_size + tuned.max_queue_size
    return slots + tuned.max_waiting


def deployment_options(settings: Settings, scaling: Scaling) -> dict[str, Any]:
    """Keyword arguments of ``Deployment.options``."""
    actor: dict[str, Any] = {"num_cpus": scaling.num_cpus}
    if scaling.num_gpus > 0:
        actor["num_gpus"] = scaling.num_gpus
    options: dict[str, Any] = {
        "ray_actor_options": actor,
        "max_ongoing_requests": admitted_per_replica(settings, scaling),
        "max_queued_requests": scaling.max_queued_requests,
        "health_check_period_s": scaling.health_check_period_s,
        "health_check_timeout_s": scaling.health_check_timeout_s,
        # Ray waits this long for in-flight requests before it stops a replica: the
        # drain timeout `python -m app` gives them on SIGTERM.
        "graceful_shutdown_timeout_s": settings.drain_timeout_s,
        "graceful_shutdown_wait_loop_s": min(2.0, settings.drain_timeout_s),
    }
    if scaling.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": scaling.min_replicas if scaling.min_replicas is not None else 1,
            "max_replicas": scaling.max_replicas or max(1, scaling.min_replicas or 1),
            "target_ongoing_requests": scaling.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = scaling.replicas
    return options
