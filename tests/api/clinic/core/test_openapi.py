"""The OpenAPI document tells the truth about the API.

schemathesis generates requests from /api/v1/openapi.json (valid and invalid ones) and
checks every answer: never a server error, only documented status codes, bodies that
conform to the documented schemas, the documented content type. Protected operations
are exercised with a valid patient token. The document itself must be valid OpenAPI 3.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from clinic.app import create_app
from tests.conftest import make_config
from tests.support import factories as f

# Examples per operation and mode: enough to reach every documented branch of the ~50
# operations while keeping the run short. It runs on both databases: what a database
# refuses (a NUL in text is a 500 on PostgreSQL, accepted by SQLite) differs between them.
EXAMPLES = {GenerationMode.POSITIVE: 5, GenerationMode.NEGATIVE: 3}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# The signed federation inbox takes the text of a compact JWS as application/jose: text on
# the wire, as text/plain (schemathesis has no serializer of its own for that media type).
schemathesis.serializer.alias("application/jose", "text/plain")


@pytest.fixture(scope="module")
def api_app(app: Flask, backend: dict[str, Any]) -> Flask:
    """The app on the harness's migrated database, with rate limits out of the fuzzer's way."""
    return create_app(make_config(backend, LOGIN_RATE_LIMIT="10000 per minute", CODE_RATE_LIMIT="10000 per minute"))


@pytest.fixture
def api_schema(api_app: Flask, ctx: Flask) -> Any:
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", api_app)


@pytest.fixture
def patient_headers(api_app: Flask, ctx: Flask) -> dict[str, str]:
    with api_app.app_context():
        reg = f.patient()
        client = api_app.test_client()
        return f.auth(f.token(client, reg.account.username))


def _operations(api_schema: Any) -> list[Any]:
    ops = []
    for result in api_schema.get_all_operations():
        ops.append(result.ok())  # an operation the loader could not read fails the test here
    return ops


# schemathesis' own pytest plugin (`from_fixture`) does not run on pytest 9.2 (it reads a
# removed private attribute), so each operation's strategy is driven by hypothesis here.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_document(api_schema: Any, patient_headers: dict[str, str], mode: GenerationMode) -> None:
    operations = _operations(api_schema)
    assert len(operations) >= 6
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES[mode],
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        def run(case: Any) -> None:
            case.call_and_validate(headers=patient_headers, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            # nothing to negate (no parameters, no body): only the positive run applies
            assert mode == GenerationMode.NEGATIVE, f"{operation.method.upper()} {operation.path}: no valid request"
        except (AssertionError, FailureGroup) as exc:  # collect them all: one report names every broken operation
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_document_is_valid_openapi_3(api_app: Flask) -> None:
    from openapi_spec_validator import validate

    doc = api_app.test_client().get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    validate(doc)
    paths = doc["paths"]
    # the contract's identity section is all there, generated from the code
    for path in ("/auth/token", "/patients", "/patients/verify-phone", "/accounts/me/patients", "/me"):
        assert path in paths, path


def test_writes_document_the_conflict_of_a_lost_race(api_app: Flask) -> None:
    """Any write may meet someone changing the same record at that moment (409 conflict)."""
    paths = api_app.test_client().get("/api/v1/openapi.json").get_json()["paths"]
    accept = paths["/visits/{visit_id}/accept"]["post"]["responses"]
    assert "409" in accept and "conflict" in accept["409"]["description"]
    visits = paths["/visits"]
    assert "conflict" in visits["post"]["responses"]["409"]["description"]
    assert "409" not in visits["get"]["responses"]  # a read never conflicts
