"""``python -m app``: serve with uvicorn, host/port/workers/log level and the HTTP limits
(header size, timeouts, connection cap) from the settings; see app/server.py."""

from __future__ import annotations

import logging

from app.core.config import Settings
from app.server import run, uvicorn_config


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper() if settings.log_level != "trace" else "DEBUG"
    )
    run(uvicorn_config(settings))


if __name__ == "__main__":
    main()
