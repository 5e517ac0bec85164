"""The README's generated tables: configuration (from ``app.core.config.Settings``) and error
codes (from ``app.core.errors.ErrorCode``).

    python scripts/readme_tables.py            # print both tables
    python scripts/readme_tables.py --write    # replace them in README.md
    python scripts/readme_tables.py --check    # exit 1 when README.md is out of step

Each table sits between its START and END marker lines in README.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: import the checkout's app

from app.core.config import Settings  # noqa: E402
from app.core.errors import ErrorCode  # noqa: E402

README = ROOT / "README.md"
WRITE_HINT = "(python scripts/readme_tables.py --write)"


def render_default(value: Any) -> str:
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    text = str(value)
    return f"`{text}`" if text else "(empty)"


def config_table() -> str:
    env_prefix = str(Settings.model_config.get("env_prefix", ""))
    rows = ["| variable | default | what |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{env_prefix}{name.upper()}` | {render_default(default)} | {description} |")
    return "\n".join(rows)


def error_table() -> str:
    rows = ["| status | code | meaning |", "|---|---|---|"]
    for code in sorted(ErrorCode, key=lambda c: (c.status, c.value)):
        rows.append(f"| {code.status} | `{code.value}` | {code.meaning} |")
    return "\n".join(rows)


TABLES: dict[str, Callable[[], str]] = {"config-table": config_table, "error-table": error_table}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start {WRITE_HINT} -->", f"<!-- {name}:end -->"


def replace_table(text: str, name: str, new_table: str) -> str:
    start_line, end_line = markers(name)
    head, start, rest = text.partition(start_line)
    _, end, tail = rest.partition(end_line)
    if not start or not end:
        raise ValueError(f"README.md lacks the marker lines {start_line!r} and {end_line!r}")
    return f"{head}{start}\n{new_table}\n{end}{tail}"


def with_tables(text: str) -> str:
    for name, table in TABLES.items():
        text = replace_table(text, name, table())
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="README tables from the code.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="update README.md in place")
    mode.add_argument("--check", action="store_true", help="fail when README.md is stale")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        sys.stdout.write("\n\n".join(table() for table in TABLES.values()) + "\n")
        return 0
    current = README.read_text()
    wanted = with_tables(current)
    if args.write:
        README.write_text(wanted)
    elif wanted != current:
        sys.stderr.write("README.md's generated tables are stale: run with --write\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
