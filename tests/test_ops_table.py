"""docs/ops.md is the registries' table: regenerated here and compared with the file.

The measured errors may differ in the last digits on another CPU, so they are masked before
the comparison; every fresh measurement must still be within its lowering's tolerance
(``export.ops_table.measure`` raises otherwise), and so must every committed one.
"""

import re

from export import ops_table
from export.runtime.lowering import lowered_ops, lowerings_for
from models.pooling import list_pools

MEASURED = re.compile(r"\| (\d\.\de[-+]\d\d) \| ([0-9.e-]+) \|")


def masked(text: str) -> str:
    return MEASURED.sub(lambda m: f"| # | {m.group(2)} |", text)


def test_committed_ops_table_is_in_step_with_the_registries() -> None:
    committed = ops_table.OPS_MD.read_text(encoding="utf-8")
    fresh = ops_table.generate()
    assert masked(committed) == masked(fresh), "docs/ops.md is stale: python -m export.ops_table"


def test_every_op_and_lowering_has_a_row_with_a_measurement() -> None:
    rows = [r for r in ops_table.OPS_MD.read_text().splitlines() if r.startswith("| `")]
    listed = [(r.split("`")[1], r.split("|")[2].strip()) for r in rows]
    expected = [
        (op, low.kind) for op in list_pools() if op in lowered_ops() for low in lowerings_for(op)
    ]
    assert listed == expected
    for row in rows:
        match = MEASURED.search(row)
        assert match is not None, row
        assert float(match.group(1)) <= float(match.group(2)), row
