"""``python -m app``'s settings: flags over environment over ``.env`` over defaults.

pydantic-settings parses one flag per setting (kebab-case, its description as help, its
``POOLSERVE_*`` variable named); an unknown flag or a bad value exits 2 with a message.
``Settings()`` alone never reads ``sys.argv`` or ``.env``: only this entry does, so tests
that build settings in-process see the environment alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import CliSettingsSource

from app.core.config import Settings
from models.pooling.errors import describe_validation_errors

ENV_FILE_VARIABLE = "POOLSERVE_ENV_FILE"
DEFAULT_ENV_FILE = Path(".env")
SECRET_SETTINGS = ("api_keys",)
_FACTORY_DEFAULT = re.compile(r"\(default factory: [^)]*\)")


def typed_value(value: Any) -> str:
    """A default as one would type it: lists as a comma list, ``None`` as ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return str(value)


class SettingsCli(CliSettingsSource[Settings]):
    """pydantic-settings' CLI, showing a factory's default by value, not as its function."""

    def _help_format(
        self,
        field_name: str,
        field_info: FieldInfo,
        model_default: Any,
        is_model_suppressed: bool,
        env_var_names: tuple[str, ...] = (),
    ) -> str:
        text = super()._help_format(
            field_name, field_info, model_default, is_model_suppressed, env_var_names
        )
        if field_info.default_factory is None:
            return text
        shown = typed_value(field_info.get_default(call_default_factory=True)) or "empty"
        return _FACTORY_DEFAULT.sub(lambda _: f"(default: {shown})", text)


@dataclass(frozen=True)
class CommandLine:
    settings: Settings
    print_settings: bool


def parser() -> argparse.ArgumentParser:
    """The root parser; pydantic-settings adds one flag per setting to it."""
    root = argparse.ArgumentParser(
        prog="python -m app",
        description="Serve poolserve. Every setting is a flag here and a POOLSERVE_* "
        "environment variable; precedence: flag, then environment, then the .env file "
        f"(./.env, or the file ${ENV_FILE_VARIABLE} names), then the default.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument(
        "--print-settings",
        action="store_true",
        help="Print the resolved settings as JSON (API keys hidden) and exit without serving.",
    )
    return root


def env_file(environ: Mapping[str, str]) -> Path | None:
    """The .env file to read: the named one (which must exist), else ./.env when present."""
    named = environ.get(ENV_FILE_VARIABLE)
    if named:
        path = Path(named)
        if not path.is_file():
            _fail(f"{ENV_FILE_VARIABLE}={named} is not a file")
        return path
    return DEFAULT_ENV_FILE if DEFAULT_ENV_FILE.is_file() else None


def parse_command_line(argv: Sequence[str], environ: Mapping[str, str]) -> CommandLine:
    """The settings from ``argv``, the environment and the .env file; exits 2 on a bad one."""
    root = parser()
    dotenv = env_file(environ)
    try:  # argparse exits 2 itself on an unknown flag or a malformed list
        cli = SettingsCli(Settings, cli_parse_args=list(argv), root_parser=root)
        settings = Settings(_cli_settings_source=cli, _env_file=dotenv)
    except ValidationError as exc:
        _fail(describe_validation_errors(exc.errors(include_input=False), whole="settings"))
    known, _ = root.parse_known_args(list(argv))
    return CommandLine(settings, bool(known.print_settings))


def as_environment(settings: Settings) -> tuple[dict[str, str], list[str]]:
    """Every setting as its ``POOLSERVE_*`` variable, and the unset ones (``None``) to remove.

    uvicorn's app factory and its worker processes build ``Settings()`` from the
    environment, so the resolved values must be there before it starts.
    """
    prefix = str(Settings.model_config.get("env_prefix", ""))
    present: dict[str, str] = {}
    absent: list[str] = []
    for name, value in settings.model_dump(mode="json").items():
        variable = f"{prefix}{name.upper()}"
        if value is None:
            absent.append(variable)
        else:
            present[variable] = value if isinstance(value, str) else json.dumps(value)
    return present, absent


def export(settings: Settings) -> None:
    """Put the resolved settings into this process's environment (inherited by workers)."""
    present, absent = as_environment(settings)
    os.environ.update(present)
    for variable in absent:
        os.environ.pop(variable, None)


def printable(settings: Settings) -> str:
    values = settings.model_dump(mode="json")
    for name in SECRET_SETTINGS:
        values[name] = ["***"] * len(values[name])
    return json.dumps(values, indent=2)


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"python -m app: error: {message}\n")
    raise SystemExit(2)
