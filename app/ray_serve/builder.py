"""The Ray Serve application: ``build_app(args)`` for ``serve run`` / ``serve deploy``
(``import_path: app.ray_serve:build_app``) and for ``python -m app.ray_serve``.

The builder runs once, where the application is built (the driver, or the head node for
``serve deploy``): it resolves poolserve's settings there (``.env``, then the environment,
then ``args.settings``), computes the repository digest from the repository it sees, and
passes both to every replica.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import ConfigDict, Field, field_validator
from ray import serve
from ray.serve import Application

from app.core.cli import as_environment, env_file
from app.core.config import Settings
from app.ray_serve.digest import repository_digest
from app.ray_serve.options import Scaling, deployment_options, replica_settings
from app.ray_serve.replica import PoolserveReplica

DEPLOYMENT = "Poolserve"
Poolserve = serve.deployment(name=DEPLOYMENT)(serve.ingress()(PoolserveReplica))


class BuildArgs(Scaling):
    """What a serve config's ``args`` may carry: the scaling, and what every replica gets."""

    model_config = ConfigDict(extra="forbid")

    metrics_interval_s: float = Field(5.0, ge=0)
    expected_digest: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    """Pin the repository digest; unset, it is computed from the builder's repository."""
    settings: dict[str, Any] = Field(default_factory=dict)
    """poolserve settings (field names of app.core.config.Settings) over the environment."""

    @field_validator("settings")
    @classmethod
    def _known_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(Settings.model_fields))
        if unknown:  # Settings ignores unknown names: a typo would pass unnoticed
            raise ValueError(f"unknown poolserve settings {unknown}")
        return value

    def scaling(self) -> Scaling:
        return Scaling(**self.model_dump(include=set(Scaling.model_fields)))


def build_app(args: dict[str, Any]) -> Application:
    """The bound deployment, ready for ``serve.run``."""
    built = BuildArgs.model_validate(args)
    scaling = built.scaling()
    driver = Settings(_env_file=env_file(os.environ), **built.settings)  # as python -m app
    settings = replica_settings(driver, scaling)
    digest = built.expected_digest or repository_digest(settings.model_repository, settings.models)
    deployment = Poolserve.options(**deployment_options(settings, scaling))
    environment, unset = as_environment(settings)
    return deployment.bind(environment, unset, digest, built.metrics_interval_s)
