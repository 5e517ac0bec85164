"""poolserve on Ray Serve: the unchanged app in every replica (docs/ray.md).

Optional: it needs the ``ray`` extra, and nothing else in ``app`` imports it.
``python -m app.ray_serve`` deploys and blocks; ``serve run`` / ``serve deploy`` take
``import_path: app.ray_serve:build_app`` (deploy/ray/serve_config.yaml).
"""

from app.ray_serve.builder import build_app

__all__ = ["build_app"]
