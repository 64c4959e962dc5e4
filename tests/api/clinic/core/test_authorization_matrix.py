"""The authorization matrix (issue 21 item 3): every operation of the OpenAPI document ×
every role × another person's ids.

A patient (A) has a confirmed diagnosis, a visit in progress with her cardiologist, a
message with an image and a signed prescription. Then every operation is called by every
kind of caller with A's ids in the path and in the body (`patient_id`, `diagnosis_id`, …):
- never a server error (5xx), for anyone;
- the outsiders — another patient, a cardiologist who does not treat A, an
  endocrinologist — never get a 2xx for anything that names A's records.
The bodies are built from the document's own schemas, so a new operation joins the matrix
by being declared.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from identity.models import Role
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.rx_factories import item, visit_in_progress

RECORD_PARAMS = ("diagnosis_id", "visit_id", "prescription_id", "message_id", "patient_id")


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    if "anyOf" in schema:  # Optional[...]: the first non-null branch
        branches = [s for s in schema["anyOf"] if s.get("type") != "null"]
        schema = _resolve(doc, branches[0]) if branches else {"type": "null"}
    if "allOf" in schema and len(schema["allOf"]) == 1:
        schema = _resolve(doc, schema["allOf"][0])
    return schema


def _value(doc: dict[str, Any], name: str, schema: dict[str, Any], ids: dict[str, str]) -> Any:
    schema = _resolve(doc, schema)
    if name in ids:
        return ids[name]
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _value(doc, k, v, ids) for k, v in props.items() if k in schema.get("required", [])}
    if kind == "array":
        inner = _value(doc, name, schema.get("items", {}), ids)
        return [inner] * max(1, int(schema.get("minItems", 1)))
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return 1
    if kind == "boolean":
        return False
    fmt = schema.get("format")
    if fmt == "uuid":
        return str(uuid.uuid4())
    if fmt == "date":
        return "2024-01-02"
    if fmt == "date-time":
        return "2024-01-02T03:04:05Z"
    n = max(2, int(schema.get("minLength", 2)))
    return ("测试" * n)[: min(n, int(schema.get("maxLength", n)))]


@pytest.fixture
def world(ctx: Flask, client: FlaskClient) -> dict[str, Any]:
    v = visit_in_progress(client)  # A, her cardiologist, a visit in progress
    msg = client.post(
        f"/api/v1/visits/{v['visit_id']}/messages",
        data={"image": (io.BytesIO(cf.png()), "bp.png"), "text": "血压记录"},
        headers=f.auth(v["token"]),
        content_type="multipart/form-data",
    )
    assert msg.status_code == 201, msg.get_json()
    rx = client.post(
        f"/api/v1/visits/{v['visit_id']}/prescriptions",
        json={"items": [item(v["drugs"]["amlodipine"])]},
        headers=f.auth(v["face"]),
    )
    assert rx.status_code == 201, rx.get_json()
    ids = {
        "diagnosis_id": str(v["diag"].id),
        "visit_id": v["visit_id"],
        "prescription_id": rx.get_json()["id"],
        "message_id": msg.get_json()["id"],
        "patient_id": str(v["reg"].patient.id),
        "account_id": str(v["doc"].id),
        "resource": "MedicationRequest",
        "seq": "1",
    }
    outsiders = {
        "another patient": f.token(client, f.patient(name="李四").account.username),
        "a cardiologist who does not treat her": cf.face_token(f.staff(Role.PHYSICIAN, department="cardiology")),
        "an endocrinologist": cf.face_token(f.staff(Role.PHYSICIAN, department="endocrinology")),
    }
    others = {
        "pharmacist": f.token(client, f.staff(Role.PHARMACIST).username),
        "admin": f.token(client, f.staff(Role.ADMIN).username),
        "regulator": f.token(client, f.staff(Role.REGULATOR).username),
        "anonymous": None,
    }
    return {"ids": ids, "outsiders": outsiders, "others": others}


def _call(client: FlaskClient, doc: dict[str, Any], method: str, path: str, op: dict[str, Any], ids: dict[str, str], tok: str | None) -> Any:  # fmt: skip
    url = "/api/v1" + path
    for name in [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]:
        url = url.replace("{" + name + "}", ids.get(name, str(uuid.uuid4())))
    query = {
        p["name"]: _value(doc, p["name"], p.get("schema", {}), ids)
        for p in op.get("parameters", [])
        if p["in"] == "query" and p.get("required")
    }
    headers = f.auth(tok) if tok else {}
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        body = _value(doc, "", content["application/json"]["schema"], ids)
        return client.open(url, method=method, json=body, headers=headers, query_string=query)
    if "multipart/form-data" in content:
        schema = _resolve(doc, content["multipart/form-data"]["schema"])
        form: dict[str, Any] = {}
        for name, prop in schema.get("properties", {}).items():
            if prop.get("format") == "binary":
                form[name] = (io.BytesIO(cf.png()), f"{name}.png")
            else:
                form[name] = str(_value(doc, name, prop, ids))
        return client.open(
            url, method=method, data=form, headers=headers, query_string=query, content_type="multipart/form-data"
        )
    return client.open(url, method=method, headers=headers, query_string=query)


def test_every_operation_every_role_with_another_persons_ids(client: FlaskClient, world: dict[str, Any]) -> None:
    doc = client.get("/api/v1/openapi.json").get_json()
    ids = world["ids"]
    operations = [(m.upper(), p, op) for p, ops in doc["paths"].items() for m, op in ops.items()]
    assert len(operations) >= 60
    server_errors: list[str] = []
    leaks: list[str] = []
    calls = 0
    for who, tok in world["outsiders"].items():  # first, before anyone legitimately changes A's records
        for method, path, op in operations:
            resp = _call(client, doc, method, path, op, ids, tok)
            calls += 1
            if resp.status_code >= 500:
                server_errors.append(f"{who}: {method} {path} → {resp.status_code}")
            names_hers = any("{" + p + "}" in path for p in RECORD_PARAMS) or (
                method != "GET" and '"patient_id"' in str(op.get("requestBody", {}))
            )
            if names_hers and 200 <= resp.status_code < 300:
                leaks.append(f"{who}: {method} {path} → {resp.status_code} {resp.get_data(as_text=True)[:200]}")
    for who, tok in world["others"].items():
        for method, path, op in operations:
            resp = _call(client, doc, method, path, op, ids, tok)
            calls += 1
            if resp.status_code >= 500:
                server_errors.append(f"{who}: {method} {path} → {resp.status_code}")
            if who == "anonymous" and "401" in op["responses"]:
                # refused: 401 for a missing token (a signed-message endpoint may refuse the
                # request's form first, e.g. 415), never served
                assert 400 <= resp.status_code < 500, f"anonymous: {method} {path} → {resp.status_code}"
    assert calls >= 7 * 60
    assert not server_errors, "\n".join(server_errors)
    assert not leaks, "\n".join(leaks)
