"""The README's configuration table is the settings model: every field, default, description."""

import subprocess
import sys
from pathlib import Path

from app.core.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_readme_table_is_in_step_with_the_settings() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/config_table.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_every_setting_is_a_row_with_its_default() -> None:
    rows = {
        line.split("`")[1]: line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("| `POOLSERVE_")
    }
    defaults = Settings()  # no POOLSERVE_* in the test environment: the model's defaults
    for name, field in Settings.model_fields.items():
        row = rows[f"POOLSERVE_{name.upper()}"]
        assert str(field.description) in row
        value = getattr(defaults, name)
        if isinstance(value, int) and not isinstance(value, bool):
            assert f"`{value}`" in row


def test_a_stale_table_is_caught(tmp_path: Path) -> None:
    # The checker must fail on a README whose table lost a row, not only pass on this one.
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import config_table
    finally:
        sys.path.pop(0)
    readme = (ROOT / "README.md").read_text()
    stale = "\n".join(line for line in readme.splitlines() if "POOLSERVE_MAX_IMAGES`" not in line)
    assert config_table.replace_table(stale, config_table.table()) != stale
