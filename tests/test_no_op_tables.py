"""No consumer keeps its own per-op table: every fact about an op lives on its registry
entries (``models/pooling/schemas/<family>.py`` and ``export/runtime/lowerings/<family>.py``).

A side table shows up in the code as a literal collection keyed by, or listing, op names
(``{"median": ...}``, ``frozenset({"median", "softpool"})``, ``op in ("max", "min")``); this
scans every module outside the op families' own files for one. Naming one op to use it
(``build_pool_graph("max", ...)``) is not a table.
"""

from __future__ import annotations

import ast
from pathlib import Path

from models.pooling import list_pools

ROOT = Path(__file__).resolve().parents[1]
CONSUMERS = ("app", "bench", "export", "scripts", "examples")
FAMILY_HOMES = (ROOT / "export" / "runtime" / "lowerings",)


def _op_names(values: list[ast.expr | None]) -> list[str]:
    ops = set(list_pools())
    return [v.value for v in values if isinstance(v, ast.Constant) and v.value in ops]


def side_tables(tree: ast.AST) -> list[tuple[int, list[str]]]:
    """(line, op names) of every literal collection that keys or lists op names."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            names = _op_names(list(node.keys))
            if names:
                found.append((node.lineno, names))
        elif isinstance(node, ast.Set | ast.List | ast.Tuple):
            names = _op_names(list(node.elts))
            if len(set(names)) >= 2:
                found.append((node.lineno, names))
    return found


def consumer_files() -> list[Path]:
    files = [p for d in CONSUMERS for p in (ROOT / d).rglob("*.py")]
    return [p for p in files if not any(p.is_relative_to(home) for home in FAMILY_HOMES)]


def test_no_consumer_keeps_a_per_op_table() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line} {names}"
        for path in consumer_files()
        for line, names in side_tables(ast.parse(path.read_text()))
    ]
    assert not found, "per-op side tables (move the facts to the registry):\n" + "\n".join(found)


def test_the_scan_finds_the_tables_it_forbids() -> None:
    planted = 'COLUMN_OPS = frozenset({"median", "softpool"})\nEX = {"max": {"kernel_size": 3}}\n'
    assert sorted(line for line, _ in side_tables(ast.parse(planted))) == [1, 2]
    assert side_tables(ast.parse('graph = build_pool_graph("max", params)\n')) == []
