"""The README's generated tables are the code: the configuration table is the settings model
(every field, default, description), the error table is the ErrorCode catalogue."""

import subprocess
import sys
from pathlib import Path

from app.core.config import Settings
from app.core.errors import ErrorCode

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_are_in_step_with_the_code() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/readme_tables.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_every_setting_is_a_row_with_its_default() -> None:
    rows = {
        line.split("`")[3]: line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("| `--")
    }
    defaults = Settings()  # no POOLSERVE_* in the test environment: the model's defaults
    for name, field in Settings.model_fields.items():
        row = rows[f"POOLSERVE_{name.upper()}"]
        assert row.startswith(f"| `--{name.replace('_', '-')}` |"), "the flag python -m app takes"
        assert str(field.description) in row
        value = getattr(defaults, name)
        if isinstance(value, int) and not isinstance(value, bool):
            assert f"`{value}`" in row


def test_a_stale_table_is_caught(tmp_path: Path) -> None:
    # The checker must fail on a README whose table lost a row, not only pass on this one.
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import readme_tables
    finally:
        sys.path.pop(0)
    readme = (ROOT / "README.md").read_text()
    for lost in ("`POOLSERVE_MAX_IMAGES`", "`non_finite`"):
        stale = "\n".join(line for line in readme.splitlines() if lost not in line)
        assert readme_tables.with_tables(stale) != stale


def test_every_error_code_is_a_row_with_its_status() -> None:
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if "| `" in line]
    for code in ErrorCode:
        assert any(f"| {code.status} | `{code.value}` |" in row for row in rows), code


def test_env_example_and_compose_are_generated_too(tmp_path: Path) -> None:
    # --check must also catch a stale .env.example or compose block, not only the README.
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import readme_tables
    finally:
        sys.path.pop(0)
    example = (ROOT / ".env.example").read_text()
    assert readme_tables.GENERATED[ROOT / ".env.example"](example) == example
    stale = example.replace("# POOLSERVE_MAX_IMAGES=32\n", "")
    assert readme_tables.GENERATED[ROOT / ".env.example"](stale) != stale
    compose = (ROOT / "docker-compose.yml").read_text()
    stale = compose.replace("  POOLSERVE_MAX_IMAGES: ${POOLSERVE_MAX_IMAGES:-}\n", "")
    assert readme_tables.GENERATED[ROOT / "docker-compose.yml"](stale) == compose
