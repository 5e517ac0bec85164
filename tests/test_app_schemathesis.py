"""schemathesis (v4) against the app's own OpenAPI document, in process (ASGI).

Every operation is generated from; nothing is excluded. Checks: no 5xx, documented
status codes, content types, headers, and the response body matches its schema.
``positive_data_acceptance`` is left out because the document cannot say the cross-field
rules (prod(shape) == len(data), kernel <= H/W, bytes that are an image), so schema-valid
bodies are legitimately refused with 4xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.app_fixtures import AppClient, app_settings, create_app

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_schema(app_repository: Path) -> Iterator[schemathesis.BaseSchema]:
    """The app with its lifespan running (models loaded), and its schema."""
    client = AppClient(create_app(app_settings(app_repository))).start()
    yield schemathesis.openapi.from_asgi("/openapi.json", client.app)
    client.close()


def _run_operation(operation: schemathesis.APIOperation) -> None:
    # schemathesis.pytest.from_fixture does not work with this pytest; drive hypothesis here
    @given(case=operation.as_strategy())
    @settings(
        max_examples=25,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call()
        case.validate_response(response, checks=CHECKS)

    run()


@pytest.mark.slow
def test_openapi_contract(api_schema: schemathesis.BaseSchema) -> None:
    labels = []
    for result in api_schema.get_all_operations():
        assert isinstance(result, Ok), result  # an invalid operation fails, not skips
        operation = result.ok()
        labels.append(operation.label)
        _run_operation(operation)
    # every route was fuzzed, none silently skipped
    expected = {"POST /pool", "POST /descriptor", "GET /models", "GET /health/ready"}
    assert expected | {"POST /v2/models/{model}/infer", "GET /v2/models/{model}"} <= set(labels)
