"""``python -m app``: serve with uvicorn, host/port/workers/log level and the HTTP limits
(header size, timeouts, connection cap) from the settings; see app/server.py. Settings come
from flags, the environment and .env (app/core/cli.py); ``--help`` lists them."""

from __future__ import annotations

import logging
import os
import sys

from uvicorn.config import STARTUP_FAILURE

from app.core.auth import load_api_keys
from app.core.cli import export, parse_command_line, printable
from app.core.logs import configure_logging
from app.inference.sessions import StartupError
from app.server import run, uvicorn_config


def main() -> None:
    command = parse_command_line(sys.argv[1:], os.environ)  # exits 2 on a bad flag or value
    settings = command.settings
    if command.print_settings:
        sys.stdout.write(printable(settings) + "\n")
        return
    export(settings)  # uvicorn's app factory and its workers read settings from the environment
    configure_logging(settings)
    try:
        load_api_keys(settings)  # a bad key file stops here, once, before any worker starts
    except StartupError as exc:
        logging.getLogger("poolserve").critical("%s", exc)  # a log line, in the log format
        sys.exit(STARTUP_FAILURE)
    run(uvicorn_config(settings))


if __name__ == "__main__":
    main()
