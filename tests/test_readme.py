"""The README's ops table is the registry: every op, with its registered summary."""

from pathlib import Path

from models.pooling import get_pool_spec, list_pools

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_lists_every_op_with_its_summary() -> None:
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `")]
    listed = {row.split("`")[1]: row for row in rows}
    for name in list_pools():
        assert name in listed, f"README ops table lacks {name!r}"
        assert get_pool_spec(name).summary in listed[name], f"README summary of {name!r} is stale"
