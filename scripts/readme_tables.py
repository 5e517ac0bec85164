"""The files generated from the code: the README's configuration table (from
``app.core.config.Settings``) and error table (from ``app.core.errors.ErrorCode``),
``.env.example`` (every setting, commented out) and the settings block of
``docker-compose.yml`` (every setting compose passes from your shell or ``.env``).

    python scripts/readme_tables.py            # print the README tables
    python scripts/readme_tables.py --write    # rewrite them, .env.example and the block
    python scripts/readme_tables.py --check    # exit 1 when any of them is out of step

Each table or block sits between its START and END marker lines.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: import the checkout's app

from app.core.config import Settings  # noqa: E402
from app.core.errors import ErrorCode  # noqa: E402

README = ROOT / "README.md"
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE = ROOT / "docker-compose.yml"
WRITE_HINT = "(python scripts/readme_tables.py --write)"
COMPOSE_PINNED = ("host", "port", "grpc_port", "providers", "require_cuda")
"""Set by each compose service itself: the container's layout and its provider."""


def render_default(value: Any) -> str:
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    text = str(value)
    return f"`{text}`" if text else "(empty)"


def variable(name: str) -> str:
    return f"{Settings.model_config.get('env_prefix', '')}{name.upper()}"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_table() -> str:
    rows = ["| flag | variable | default | what |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        description = (field.description or "").replace("|", "\\|")
        rows.append(
            f"| `{flag(name)}` | `{variable(name)}` | {render_default(default)} | {description} |"
        )
    return "\n".join(rows)


def env_value(value: Any) -> str:
    """A default as a .env line takes it (no value for None: the line stays commented)."""
    if value is None:
        return ""
    text = render_default(value)
    return "" if text == "(empty)" else text.strip("`")


def env_example() -> str:
    """Every setting, commented out at its default: copy to .env and uncomment to change."""
    lines = [
        "# poolserve settings (generated: python scripts/readme_tables.py --write).",
        "# Copy to .env and uncomment what you change. python -m app reads ./.env (or the file",
        "# that $POOLSERVE_ENV_FILE names); docker compose reads the .env beside its file.",
        "# Precedence: flag, then environment, then .env, then the default. Empty = the default.",
    ]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        lines += [
            "",
            *wrap_comment(field.description or ""),
            f"# {variable(name)}={env_value(default)}",
        ]
    return "\n".join(lines) + "\n"


def wrap_comment(text: str, width: int = 98) -> list[str]:
    return ["# " + line for line in textwrap.wrap(" ".join(text.split()), width - 2)]


def compose_settings() -> str:
    """The compose anchor's entries: each setting from the shell or .env, empty if unset."""
    indent = "  "
    return "\n".join(
        f"{indent}{variable(name)}: ${{{variable(name)}:-}}"
        for name in Settings.model_fields
        if name not in COMPOSE_PINNED
    )


def error_table() -> str:
    rows = ["| status | code | meaning |", "|---|---|---|"]
    for code in sorted(ErrorCode, key=lambda c: (c.status, c.value)):
        rows.append(f"| {code.status} | `{code.value}` | {code.meaning} |")
    return "\n".join(rows)


TABLES: dict[str, Callable[[], str]] = {"config-table": config_table, "error-table": error_table}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start {WRITE_HINT} -->", f"<!-- {name}:end -->"


def compose_markers() -> tuple[str, str]:
    return f"  # settings:start {WRITE_HINT}", "  # settings:end"


def replace_table(
    text: str, name: str, new_table: str, lines: tuple[str, str] | None = None
) -> str:
    start_line, end_line = lines or markers(name)
    head, start, rest = text.partition(start_line)
    _, end, tail = rest.partition(end_line)
    if not start or not end:
        raise ValueError(f"{name} lacks the marker lines {start_line!r} and {end_line!r}")
    return f"{head}{start}\n{new_table}\n{end}{tail}"


def with_tables(text: str) -> str:
    for name, table in TABLES.items():
        text = replace_table(text, name, table())
    return text


def with_compose_settings(text: str) -> str:
    return replace_table(text, COMPOSE.name, compose_settings(), compose_markers())


GENERATED: dict[Path, Callable[[str], str]] = {
    README: with_tables,
    ENV_EXAMPLE: lambda _: env_example(),
    COMPOSE: with_compose_settings,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="README tables and config files from the code.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="update the files in place")
    mode.add_argument("--check", action="store_true", help="fail when a file is stale")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        sys.stdout.write("\n\n".join(table() for table in TABLES.values()) + "\n")
        return 0
    stale = []
    for path, generate in GENERATED.items():
        current = path.read_text() if path.exists() else ""
        wanted = generate(current)
        if args.write and wanted != current:
            path.write_text(wanted)
        elif wanted != current:
            stale.append(path.name)
    if stale:
        sys.stderr.write(f"stale generated text in {', '.join(stale)}: run with --write\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
