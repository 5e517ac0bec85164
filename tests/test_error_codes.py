"""The error catalogue is the only home of error codes: no code is a string literal anywhere
else in the service, and the OpenAPI document's ``code`` enum is the catalogue."""

from __future__ import annotations

import ast
from pathlib import Path

from app.core.errors import ErrorCode

APP = Path(__file__).resolve().parents[1] / "app"
CATALOGUE = APP / "core" / "errors.py"


def _string_constants(tree: ast.AST) -> list[ast.Constant]:
    """Every string literal that is not a docstring."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    ]


def test_no_error_code_literal_outside_the_catalogue() -> None:
    codes = {code.value for code in ErrorCode}
    found = []
    for path in APP.rglob("*.py"):
        if path == CATALOGUE:
            continue
        for node in _string_constants(ast.parse(path.read_text())):
            if node.value in codes:
                found.append(f"{path.relative_to(APP.parent)}:{node.lineno} {node.value!r}")
    assert not found, found


def test_openapi_code_enum_is_the_catalogue(app_client) -> None:
    schemas = app_client.get("/openapi.json").json()["components"]["schemas"]
    assert set(schemas["ErrorCode"]["enum"]) == {code.value for code in ErrorCode}
    assert schemas["ErrorBody"]["properties"]["code"] == {"$ref": "#/components/schemas/ErrorCode"}


def test_every_code_has_an_http_error_status_and_a_meaning() -> None:
    for code in ErrorCode:
        assert 400 <= code.status < 600, code
        assert code.meaning, code
