"""The regulators' data interface (API.md: Webhooks, audit, regulators) and incidents.

- POST /regulator/token (regulator, login token) → a short-lived token carrying `scope`
- GET  /regulator/fhir/{type}?since=&until=&page= (regulator, scoped token) → FHIR R4 searchset Bundle
- POST /admin/incidents, GET /admin/incidents, GET /admin/incidents/{id} (admin): each with the SMS to
  the regulator (its text, the masked number, when, its state)
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Literal

from flask import Response, request
from pydantic import Field

from clinic.core.api import ApiRouter, Principal, RequestModel, ResponseModel
from clinic.core.db import record_id
from clinic.regulator import access, incidents, rules, services
from clinic.regulator.models import Incident, IncidentKind, Severity

router = ApiRouter("regulator")

Scope = Literal["read:deidentified", "read:identified"]


class ScopedTokenIn(RequestModel):
    scope: list[Scope] = Field(min_length=1, max_length=2)


class ScopedTokenOut(ResponseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    scope: list[str]


@router.post(
    "/regulator/token",
    summary="Exchange a regulator's login token for a short-lived token carrying read scopes",
    body=ScopedTokenIn,
    response=ScopedTokenOut,
    roles=["regulator"],
    errors={403: ["scope_not_allowed", "scope_exchange_refused"]},
)
def scoped_token(body: ScopedTokenIn, principal: Principal) -> ScopedTokenOut:
    issued = access.issue_scoped_token(principal, list(body.scope))
    return ScopedTokenOut(access_token=issued.token, expires_in=issued.expires_in, scope=issued.scopes)


class FhirQuery(RequestModel):
    since: str | None = Field(
        default=None, max_length=40, description="RFC 3339 start (inclusive); default: `until` minus 31 days"
    )
    until: str | None = Field(default=None, max_length=40, description="RFC 3339 end (exclusive); default: now")
    page: int = Field(default=1, ge=1, le=1_000_000, description=f"1-based; {rules.PAGE_SIZE} resources a page")


@router.get(
    "/regulator/fhir/<resource>",
    summary=(
        "Read-only FHIR R4 searchset Bundle of Organization, Practitioner, Patient, Condition, Encounter, "
        "MedicationRequest, AuditEvent, CarePlan, Observation, ServiceRequest, Task or DiagnosticReport in a "
        "time window (at most 31 days), paged; every read is audited"
    ),
    query=FhirQuery,
    roles=["regulator"],
    raw_response="application/fhir+json",
    errors={403: ["scope_required"], 404: ["not_found"], 422: ["invalid"]},
)
def fhir_search(resource: str, query: FhirQuery, principal: Principal) -> Response:
    base = request.url_root.rstrip("/") + "/api/v1/regulator/fhir"
    body = services.read_resources(
        resource, principal, query.since, query.until, query.page, base_url=base, self_url=request.url
    )
    return Response(body, status=200, mimetype="application/fhir+json")


# --- incidents --------------------------------------------------------------------------------


class IncidentIn(RequestModel):
    kind: Literal["data_security", "adverse_event"]
    severity: Literal["low", "medium", "high", "critical"]
    what: str = Field(min_length=1, max_length=4000, description="What happened")
    scope: str = Field(min_length=1, max_length=4000, description="Whose data / which services are affected")
    found_at: datetime = Field(description="RFC 3339, when it was found")
    suspend: bool = Field(default=False, description="Adverse events only: stop all online services now")


class RegulatorSmsOut(ResponseModel):
    state: Literal["queued", "retrying", "sent", "logged", "failed", "not_configured", "not_kept"] = Field(
        description="queued: in the outbox, not tried yet; retrying: a try failed, the outbox tries again; "
        "sent: accepted by the SMS provider (reference = its message id; delivery to the handset is not "
        "reported back); logged: written to the application log (SMS_BACKEND=log, nothing sent); failed: the "
        "outbox gave up; not_configured: no regulator contact (REGULATOR_CONTACT_PHONE), nothing sent; "
        "not_kept: sent before the text was kept"
    )
    text: str | None = Field(description="The SMS exactly as sent (or as it will be sent)")
    to: str | None = Field(description="The number it goes to, masked (+86 139****9000)")
    queued_at: datetime | None
    sent_at: datetime | None
    reference: str | None = Field(description="The SMS provider's message id")
    failed_tries: int = Field(description="Tries that failed so far")
    last_failure_at: datetime | None


class IncidentOut(ResponseModel):
    id: str
    kind: str
    severity: str
    what: str
    scope: str
    found_at: datetime
    reported_at: datetime
    regulator_notified: bool = Field(
        description="False while the SMS is queued or retried; notification_error says why"
    )
    regulator_notified_at: datetime | None
    notification_error: str | None
    suspension_triggered: bool
    regulator_sms: RegulatorSmsOut = Field(description="The SMS to the regulator contact: text, number, state")


class IncidentList(ResponseModel):
    items: list[IncidentOut]


def _out(i: Incident) -> IncidentOut:
    return IncidentOut(
        id=str(i.id),
        kind=i.kind.value,
        severity=i.severity.value,
        what=i.what,
        scope=i.scope,
        found_at=i.found_at,
        reported_at=i.reported_at,
        regulator_notified=i.regulator_notified_at is not None,
        regulator_notified_at=i.regulator_notified_at,
        notification_error=i.notification_error,
        suspension_triggered=i.suspension_triggered,
        regulator_sms=RegulatorSmsOut(**asdict(incidents.regulator_notice(i))),
    )


@router.post(
    "/admin/incidents",
    summary="Record a data-security incident or clinical adverse event; the regulator is told by SMS right after "
    "it is recorded (outbox, retried until it goes through)",
    body=IncidentIn,
    response=IncidentOut,
    status=201,
    roles=["admin"],
    errors={422: ["suspension_not_applicable"]},
)
def record_incident(body: IncidentIn, principal: Principal) -> IncidentOut:
    incident = incidents.record_incident(
        principal,
        incidents.IncidentReport(
            kind=IncidentKind(body.kind),
            severity=Severity(body.severity),
            what=body.what,
            scope=body.scope,
            found_at=body.found_at,
            suspend=body.suspend,
        ),
    )
    return _out(incident)


@router.get("/admin/incidents", summary="Recorded incidents, newest first", response=IncidentList, roles=["admin"])
def list_incidents(principal: Principal) -> IncidentList:
    return IncidentList(items=[_out(i) for i in incidents.list_incidents()])


@router.get(
    "/admin/incidents/<incident_id>",
    summary="One incident, with the SMS to the regulator: its text, the masked number, when, and how far it got",
    response=IncidentOut,
    roles=["admin"],
    errors={404: ["not_found"]},
)
def get_incident(incident_id: str, principal: Principal) -> IncidentOut:
    return _out(incidents.get_incident(record_id(incident_id)))
