"""``python -m app``: serve with uvicorn, host/port/workers/log level from the settings."""

from __future__ import annotations

import logging

import uvicorn

from app.core.config import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper() if settings.log_level != "trace" else "DEBUG"
    )
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
