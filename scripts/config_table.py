"""The README's configuration table, generated from the settings model (app/core/config.py).

    python scripts/config_table.py            # print the table
    python scripts/config_table.py --write    # replace the table in README.md
    python scripts/config_table.py --check    # exit 1 when README.md is out of step

The table sits between the START and END marker lines in README.md.
"""

from __future__ import annotations

import argparse
import sys
from enum import Enum
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: import the checkout's app

from app.core.config import Settings  # noqa: E402

README = ROOT / "README.md"
START = "<!-- config-table:start (python scripts/config_table.py --write) -->"
END = "<!-- config-table:end -->"


def render_default(value: Any) -> str:
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    text = str(value)
    return f"`{text}`" if text else "(empty)"


def table() -> str:
    env_prefix = str(Settings.model_config.get("env_prefix", ""))
    rows = ["| variable | default | what |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{env_prefix}{name.upper()}` | {render_default(default)} | {description} |")
    return "\n".join(rows)


def replace_table(text: str, new_table: str) -> str:
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"README.md lacks the marker lines {START!r} and {END!r}")
    return f"{head}{START}\n{new_table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="README configuration table from Settings.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="update README.md in place")
    mode.add_argument("--check", action="store_true", help="fail when README.md is stale")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        sys.stdout.write(table() + "\n")
        return 0
    current = README.read_text()
    wanted = replace_table(current, table())
    if args.write:
        README.write_text(wanted)
    elif wanted != current:
        sys.stderr.write("README.md configuration table is stale: run with --write\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
