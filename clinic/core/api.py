"""The JSON API's plumbing: routes declared with their pydantic request/response models.

One declaration per operation gives (1) request parsing and validation, (2) the role
check from the Bearer token, (3) response serialization through the declared model and
(4) the OpenAPI 3 document at /api/v1/openapi.json — so the document is generated from
the same schemas the code enforces, never written by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.json_schema import models_json_schema
from werkzeug.datastructures import FileStorage

from clinic.core import idempotency, limits
from clinic.core.audit import Actor, set_actor
from clinic.core.errors import DomainError, Forbidden, Invalid, Unauthenticated
from clinic.core.principal import Principal
from clinic.core.text import unclean_fields

API_PREFIX = "/api/v1"


class RequestModel(BaseModel):
    """Base of every request body: unknown fields are refused, strings are trimmed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorBody(BaseModel):
    code: str
    message: str
    violations: list[dict[str, Any]] | None = None
    fields: list[dict[str, Any]] | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


TokenLoader = Callable[[str], Principal]


@dataclass
class FilePart:
    name: str
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class RawBody:
    """A request body that is not JSON (e.g. a compact JWS as application/jose): the handler
    reads it itself; this only documents it (media type and a JSON Schema of its text)."""

    media_type: str
    schema: dict[str, Any]
    description: str = ""


@dataclass
class Operation:
    method: str
    rule: str
    handler: Callable[..., Any]
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    form: type[BaseModel] | None = None
    files: list[FilePart] = field(default_factory=list)
    response: type[BaseModel] | None = None
    status: int = 200
    roles: frozenset[str] | None = None
    errors: dict[int, list[str]] = field(default_factory=dict)
    empty_status: int | None = None  # e.g. 204 when a queue is empty
    raw_response: str | None = None  # media type for non-JSON answers (PDF)
    raw_body: RawBody | None = None  # a non-JSON request body the handler reads itself
    auth: str = "bearer"  # bearer | none | custom (signature schemes)
    idempotent: bool = False  # takes an Idempotency-Key header (clinic.core.idempotency)
    body_optional: bool = False  # an empty body reads as {} (every field of `body` optional)

    @property
    def path(self) -> str:
        return re.sub(r"<(?:[a-z_]+:)?([a-zA-Z_]+)>", r"{\1}", self.rule)

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"<(?:[a-z_]+:)?([a-zA-Z_]+)>", self.rule)

    @property
    def endpoint(self) -> str:
        return f"{self.tag}_{self.handler.__name__}"


class ApiRouter:
    """A domain package's set of API operations, mounted by the app factory."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.operations: list[Operation] = []

    def route(
        self,
        method: str,
        rule: str,
        *,
        summary: str,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        form: type[BaseModel] | None = None,
        files: Iterable[FilePart] = (),
        response: type[BaseModel] | None = None,
        status: int = 200,
        roles: Iterable[str] | None = None,
        errors: dict[int, list[str]] | None = None,
        empty_status: int | None = None,
        raw_response: str | None = None,
        raw_body: RawBody | None = None,
        auth: str = "bearer",
        idempotent: bool = False,
        body_optional: bool = False,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.operations.append(
                Operation(
                    method=method.upper(),
                    rule=rule,
                    handler=fn,
                    summary=summary,
                    tag=self.tag,
                    body=body,
                    query=query,
                    form=form,
                    files=list(files),
                    response=response,
                    status=status,
                    roles=frozenset(roles) if roles is not None else None,
                    errors=dict(errors or {}),
                    empty_status=empty_status,
                    raw_response=raw_response,
                    raw_body=raw_body,
                    auth=auth if roles is None else "bearer",
                    idempotent=idempotent,
                    body_optional=body_optional,
                )
            )
            return fn

        return decorate

    def get(self, rule: str, **kw: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("GET", rule, **kw)

    def post(self, rule: str, **kw: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("POST", rule, **kw)


def _validation_fields(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ".".join(str(p) for p in err["loc"]), "message": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def refuse_control_characters(names: list[str]) -> None:
    """422 `invalid` naming each field that carries a control character (clinic.core.text)."""
    if names:
        raise Invalid(
            "The field %(field)s contains a control character (such as NUL); remove it and send it again.",
            params={"field": ", ".join(names)},
            fields=[{"loc": name, "message": "control character", "type": "control_character"} for name in names],
        )


def _parse(model: type[BaseModel], data: Any, where: str) -> BaseModel:
    refuse_control_characters(list(dict.fromkeys(unclean_fields(data))))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields_ = _validation_fields(exc)
        first = fields_[0] if fields_ else {"loc": where, "message": "invalid"}
        raise Invalid(f"Invalid {where}: {first['loc'] or where}: {first['message']}", fields=fields_) from None


def _json_body() -> Any:
    raw = request.get_data(cache=True)
    if not raw:
        raise Invalid("A JSON body is required.")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise Invalid("The body must be a JSON object.")
    return data


def _authenticate(op: Operation) -> Principal | None:
    if op.roles is None:
        return None
    try:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("A Bearer token is required.")
        loader: TokenLoader = current_app.extensions["clinic_token_loader"]
        principal = loader(token.strip())
    except Unauthenticated:
        # No (valid) token: counted per address, 429 past TOKENLESS_RATE_LIMIT, and audited
        # in aggregate (clinic.core.web), so a flood cannot grow the audit trail one row each.
        g.tokenless_refusal = True
        limits.check("TOKENLESS_RATE_LIMIT", "tokenless", request.remote_addr or "")
        raise
    set_actor(Actor(id=str(principal.account_id), role=principal.role, client_ip=request.remote_addr))
    if principal.role not in op.roles:
        raise Forbidden(f"This endpoint is for: {', '.join(sorted(op.roles))}.")
    return principal


def _answer(op: Operation, result: Any) -> tuple[int, Any]:
    """A handler's result as (status, JSON payload) through the declared response model."""
    status = op.status
    if isinstance(result, tuple):
        result, status = result
    if op.response is not None:
        model = result if isinstance(result, op.response) else op.response.model_validate(result)
        return status, model.model_dump(mode="json", exclude_none=False)
    return status, result if result is not None else {}


def _view(op: Operation) -> Callable[..., Response]:
    def view(**path: Any) -> Response:
        set_actor(Actor(id=None, role="anonymous", client_ip=request.remote_addr))
        kwargs: dict[str, Any] = dict(path)
        principal = _authenticate(op)
        if principal is not None:
            kwargs["principal"] = principal
        multipart = request.mimetype == "multipart/form-data"
        if op.body is not None and op.files and multipart:
            # JSON or multipart: the same body model, read from the form fields.
            kwargs["body"] = _parse(op.body, request.form.to_dict(), "form")
        elif op.body is not None:
            empty = op.body_optional and not request.get_data(cache=True).strip()
            kwargs["body"] = _parse(op.body, {} if empty else _json_body(), "body")
        if op.query is not None:
            kwargs["query"] = _parse(op.query, request.args.to_dict(), "query")
        if op.form is not None:
            kwargs["form"] = _parse(op.form, request.form.to_dict(), "form")
        if op.files:
            files: dict[str, FileStorage | None] = {}
            for part in op.files:
                f = request.files.get(part.name)
                if (f is None or not f.filename) and part.required:
                    raise Invalid(
                        f"The file part '{part.name}' is required.", fields=[{"loc": part.name, "message": "required"}]
                    )
                files[part.name] = f
            kwargs["files"] = files
        key = idempotency.checked_key(request.headers.get(idempotency.HEADER)) if op.idempotent else None
        if key is not None and principal is not None:
            kwargs["idempotency_key"] = key
            print_ = idempotency.fingerprint(request.method, request.path, request.get_data(cache=True))
            answer, replayed = idempotency.run_once(
                principal.account_id, op.endpoint, key, print_, lambda: _answer(op, op.handler(**kwargs))
            )
            resp = jsonify(answer.response)
            resp.status_code = answer.status
            if replayed:
                resp.headers["Idempotent-Replayed"] = "true"
            return resp
        if op.idempotent:
            kwargs["idempotency_key"] = None
        result = op.handler(**kwargs)
        if isinstance(result, Response):
            return result
        if result is None and op.empty_status:
            return Response(status=op.empty_status)
        status, payload = _answer(op, result)
        resp = jsonify(payload)
        resp.status_code = status
        return resp

    view.__name__ = op.endpoint
    return view


def build_blueprint(routers: Iterable[ApiRouter], token_loader: TokenLoader) -> tuple[Blueprint, list[Operation]]:
    bp = Blueprint("api", __name__, url_prefix=API_PREFIX)
    operations: list[Operation] = []
    for router in routers:
        for op in router.operations:
            bp.add_url_rule(op.rule, endpoint=op.endpoint, view_func=_view(op), methods=[op.method])
            operations.append(op)

    @bp.record_once
    def _register_loader(state: Any) -> None:
        state.app.extensions["clinic_token_loader"] = token_loader
        state.app.extensions["clinic_api_operations"] = operations

    @bp.get("/openapi.json")
    def openapi() -> Response:
        return jsonify(openapi_document(operations))

    return bp, operations


STANDARD_MESSAGES = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "Nothing to return",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Upload too large",
    422: "Invalid input or refused by rule",
    429: "Rate limited",
    503: "Service unavailable",
}


def _references_records(op: Operation, schemas: dict[str, Any]) -> bool:
    """Does the request name a stored record by id (a `*_id` field of its body, form or query)?"""
    for model in (op.body, op.form, op.query):
        if model is not None and any(
            name == "id" or name.endswith("_id") for name in schemas.get(model.__name__, {}).get("properties", {})
        ):
            return True
    return False


def openapi_document(operations: list[Operation]) -> dict[str, Any]:
    models: list[type[BaseModel]] = [ErrorEnvelope]
    for op in operations:
        models += [m for m in (op.body, op.query, op.form, op.response) if m is not None]
    unique = list(dict.fromkeys(models))
    _, top = models_json_schema([(m, "validation") for m in unique], ref_template="#/components/schemas/{model}")
    schemas = top.get("$defs", {})
    ref = {m: {"$ref": f"#/components/schemas/{m.__name__}"} for m in unique}
    error_ref = ref[ErrorEnvelope]

    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        doc: dict[str, Any] = {
            "operationId": op.endpoint,
            "summary": op.summary,
            "tags": [op.tag],
            "responses": {},
        }
        params: list[dict[str, Any]] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in op.path_params
        ]
        if op.query is not None:
            qs = schemas.get(op.query.__name__, {})
            required = set(qs.get("required", []))
            for name, prop in qs.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
        if op.auth == "custom":
            for h in ("X-Timestamp", "X-Signature"):
                params.append({"name": h, "in": "header", "required": False, "schema": {"type": "string"}})
        if op.idempotent:
            params.append(
                {
                    "name": idempotency.HEADER,
                    "in": "header",
                    "required": False,
                    "description": "Names this request: a repeat under the same key (24 h) answers the first answer "
                    "again (header Idempotent-Replayed: true) instead of doing it twice.",
                    "schema": {"type": "string", "pattern": idempotency.KEY_SHAPE.pattern},
                }
            )
        if params:
            doc["parameters"] = params
        if op.body is not None and op.files:
            props_mp: dict[str, Any] = dict(schemas.get(op.body.__name__, {}).get("properties", {}))
            for part in op.files:
                props_mp[part.name] = {"type": "string", "format": "binary", "description": part.description}
            doc["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": ref[op.body]},
                    "multipart/form-data": {"schema": {"type": "object", "properties": props_mp}},
                },
            }
        elif op.body is not None:
            doc["requestBody"] = {
                "required": not op.body_optional,
                "content": {"application/json": {"schema": ref[op.body]}},
            }
        elif op.form is not None or op.files:
            fs: dict[str, Any] = dict(schemas.get(op.form.__name__, {})) if op.form else {}
            props: dict[str, Any] = dict(fs.get("properties", {}))
            form_required: list[str] = list(fs.get("required", []))
            for part in op.files:
                props[part.name] = {"type": "string", "format": "binary", "description": part.description}
                if part.required:
                    form_required.append(part.name)
            schema = {"type": "object", "properties": props, "required": form_required}
            doc["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
        elif op.raw_body is not None:
            doc["requestBody"] = {
                "required": True,
                "description": op.raw_body.description,
                "content": {op.raw_body.media_type: {"schema": op.raw_body.schema}},
            }
        success: dict[str, Any] = {"description": STANDARD_MESSAGES.get(op.status, "OK")}
        if op.raw_response:
            success["content"] = {op.raw_response: {"schema": {"type": "string", "format": "binary"}}}
        elif op.response is not None:
            success["content"] = {"application/json": {"schema": ref[op.response]}}
        else:
            success["content"] = {"application/json": {"schema": {"type": "object"}}}
        doc["responses"][str(op.status)] = success
        if op.empty_status:
            doc["responses"][str(op.empty_status)] = {"description": STANDARD_MESSAGES.get(op.empty_status, "Empty")}
        errors: dict[int, list[str]] = {k: list(v) for k, v in op.errors.items()}
        if op.roles is not None:
            errors.setdefault(401, []).append("unauthenticated")
            errors.setdefault(403, []).append("forbidden")
        if op.body or op.query or op.form or op.files:
            errors.setdefault(422, []).append("invalid")
        if op.idempotent:
            errors.setdefault(422, []).append("idempotency_key_reused")
        if op.files:
            errors.setdefault(413, []).append("too_large")
        if op.path_params or (op.roles is not None and _references_records(op, schemas)):
            # API.md: a record the caller may not see (another patient's, or none) is 404
            # not_found, whether it is named in the path or in the body (`patient_id`, …).
            errors.setdefault(404, []).append("not_found")
        if op.method != "GET":
            # A write can lose a race with someone changing the same record at that moment
            # (clinic.core.db.Versioned): 409 conflict, nothing saved.
            errors.setdefault(409, []).append("conflict")
        errors.setdefault(429, []).append("rate_limited")
        for status, codes in sorted(errors.items()):
            doc["responses"][str(status)] = {
                "description": f"{STANDARD_MESSAGES.get(status, 'Error')}: {', '.join(dict.fromkeys(codes))}",
                "content": {"application/json": {"schema": error_ref}},
            }
        if op.roles is not None:
            doc["security"] = [{"bearer": []}]
            doc["description"] = f"Roles: {', '.join(sorted(op.roles))}."
        paths.setdefault(op.path, {})[op.method.lower()] = doc

    paths.setdefault("/openapi.json", {})["get"] = {
        "operationId": "openapi",
        "summary": "This document",
        "tags": ["meta"],
        "responses": {
            "200": {
                "description": "OpenAPI 3 document",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Internet hospital follow-up clinic API",
            "version": "1",
            "description": "Return visits and e-prescribing under the 2018 internet diagnosis measures.",
        },
        "servers": [{"url": API_PREFIX}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def error_response(
    err: DomainError, message: str | None = None, translate: Callable[[str], str] | None = None
) -> Response:
    body = err.envelope()
    if message is not None:
        body["error"]["message"] = message
    if translate is not None:
        for violation in body["error"].get("violations", []):
            violation["message"] = translate(violation["message"])
    resp = jsonify(body)
    resp.status_code = err.status
    retry_after = err.extra.get("retry_after")
    if isinstance(retry_after, int):
        resp.headers["Retry-After"] = str(retry_after)
    return resp
