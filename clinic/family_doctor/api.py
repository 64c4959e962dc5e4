"""Family-doctor endpoints of /api/v1 (API.md "Family doctor contracts and follow-up")."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field

from clinic.core.api import ApiRouter, Principal, RequestModel, ResponseModel
from clinic.core.web import localized
from clinic.family_doctor import rules, services
from clinic.family_doctor.models import Alert, Contract, FollowUp, HomeReading, Team
from identity import services as identity

router = ApiRouter("family_doctor")

PATIENT = ["patient"]
PHYSICIAN = ["physician"]


# --- teams and the agreement ----------------------------------------------------------


class PackageOut(ResponseModel):
    id: uuid.UUID
    name: str
    conditions: list[str]
    includes: str
    fee_fen: int


class PersonOut(ResponseModel):
    id: uuid.UUID | None = None
    name: str
    role: str


class TeamOut(ResponseModel):
    id: uuid.UUID
    name: str
    lead: PersonOut
    members: list[PersonOut]
    packages: list[PackageOut]


class TeamsOut(ResponseModel):
    offers_signing: bool
    level: str
    items: list[TeamOut]


def team_out(t: Team) -> TeamOut:
    return TeamOut(
        id=t.id,
        name=t.name,
        lead=PersonOut(id=t.lead_id, name=t.lead.display_name, role="lead_physician"),
        members=[PersonOut(id=m.account_id, name=m.name, role=m.role.value) for m in t.members],
        packages=[PackageOut.model_validate(p) for p in t.packages if p.active],
    )


@router.get("/family-doctor/teams", summary="Family-doctor teams and their service packages", response=TeamsOut)
def teams() -> TeamsOut:
    return TeamsOut(
        offers_signing=services.offers_signing(),
        level=services.institution_level(),
        items=[team_out(t) for t in services.list_teams()],
    )


class AgreementOut(ResponseModel):
    version: str
    sha256: str
    text_zh: str
    text_en: str


@router.get(
    "/family-doctor/agreement",
    summary="The current family-doctor agreement (Art. 15: content, process, duties, rights, risks)",
    response=AgreementOut,
)
def agreement() -> AgreementOut:
    a = services.current_agreement()
    return AgreementOut(version=a.version, sha256=a.sha256, text_zh=a.text_zh, text_en=a.text_en)


# --- contracts ------------------------------------------------------------------------


class ContractIn(RequestModel):
    patient_id: uuid.UUID
    team_id: uuid.UUID
    package_id: uuid.UUID
    agreement_version: str = Field(min_length=1, max_length=32)


class ContractOut(ResponseModel):
    id: uuid.UUID
    status: str
    patient_id: uuid.UUID
    team_id: uuid.UUID
    package_id: uuid.UUID
    agreement_version: str
    agreement_sha256: str
    fee_fen: int
    signed_at: datetime
    signed_by: uuid.UUID
    countersigned_by: uuid.UUID | None
    countersigned_at: datetime | None
    valid_from: date | None
    valid_until: date | None
    renewals: int
    ended_at: datetime | None
    ended_side: str | None
    end_reason: str | None


def contract_out(c: Contract) -> ContractOut:
    return ContractOut(
        id=c.id,
        status=c.status.value,
        patient_id=c.patient_id,
        team_id=c.team_id,
        package_id=c.package_id,
        agreement_version=c.agreement_version,
        agreement_sha256=c.agreement_sha256,
        fee_fen=c.fee_fen,
        signed_at=c.signed_at,
        signed_by=c.account_id,
        countersigned_by=c.countersigned_by,
        countersigned_at=c.countersigned_at,
        valid_from=c.valid_from,
        valid_until=c.valid_until,
        renewals=c.renewals,
        ended_at=c.ended_at,
        ended_side=c.ended_side,
        end_reason=c.end_reason,
    )


@router.post(
    "/family-doctor/contracts",
    summary="Sign a family-doctor contract for one of the account's people (then the lead physician countersigns)",
    body=ContractIn,
    response=ContractOut,
    status=201,
    roles=PATIENT,
    errors={409: ["contract_exists"], 422: ["not_primary_care", "stale_version"]},
)
def sign(body: ContractIn, principal: Principal) -> ContractOut:
    contract = services.sign_contract(
        identity.get_account(principal.id),
        str(body.patient_id),
        str(body.team_id),
        str(body.package_id),
        body.agreement_version,
    )
    return contract_out(contract)


class ContractsOut(ResponseModel):
    items: list[ContractOut]


@router.get(
    "/family-doctor/contracts",
    summary="Patients: the contracts of the account's people. Physicians: their teams' contracts in force",
    response=ContractsOut,
    roles=["patient", "physician"],
)
def list_contracts(principal: Principal) -> ContractsOut:
    account = identity.get_account(principal.id)
    if principal.role == "patient":
        rows = services.contracts_of(account)
    else:
        rows = [r.contract for r in services.panel(account)]
    return ContractsOut(items=[contract_out(c) for c in rows])


@router.get(
    "/family-doctor/contracts/<contract_id>",
    summary="One contract",
    response=ContractOut,
    roles=["patient", "physician"],
)
def get_contract(contract_id: str, principal: Principal) -> ContractOut:
    return contract_out(services.contract_for(identity.get_account(principal.id), contract_id))


class ContractStatusOut(ResponseModel):
    id: uuid.UUID
    status: str
    valid_from: date | None = None
    valid_until: date | None = None


@router.post(
    "/family-doctor/contracts/<contract_id>/countersign",
    summary="The team's lead physician countersigns: the contract runs one year from today",
    response=ContractStatusOut,
    roles=PHYSICIAN,
    errors={403: ["not_team_lead", "not_qualified"], 409: ["contract_not_open"]},
)
def countersign(contract_id: str, principal: Principal) -> ContractStatusOut:
    c = services.countersign(identity.get_account(principal.id), contract_id)
    return ContractStatusOut(id=c.id, status=c.status.value, valid_from=c.valid_from, valid_until=c.valid_until)


class EndIn(RequestModel):
    reason: str = Field(min_length=2, max_length=1000)


@router.post(
    "/family-doctor/contracts/<contract_id>/end",
    summary="End a contract (the patient's side or the team's), with a reason",
    body=EndIn,
    response=ContractStatusOut,
    roles=["patient", "physician"],
    errors={409: ["contract_not_open"]},
)
def end(contract_id: str, body: EndIn, principal: Principal) -> ContractStatusOut:
    c = services.end_contract(identity.get_account(principal.id), contract_id, body.reason)
    return ContractStatusOut(id=c.id, status=c.status.value, valid_from=c.valid_from, valid_until=c.valid_until)


class RenewIn(RequestModel):
    agreement_version: str = Field(min_length=1, max_length=32)


@router.post(
    "/family-doctor/contracts/<contract_id>/renew",
    summary="Renew an active contract for another year (open in its last 60 days), signing the current text",
    body=RenewIn,
    response=ContractStatusOut,
    roles=PATIENT,
    errors={409: ["contract_not_open"], 422: ["renewal_not_open", "stale_version", "not_primary_care"]},
)
def renew(contract_id: str, body: RenewIn, principal: Principal) -> ContractStatusOut:
    c = services.renew_contract(identity.get_account(principal.id), contract_id, body.agreement_version)
    return ContractStatusOut(id=c.id, status=c.status.value, valid_from=c.valid_from, valid_until=c.valid_until)


# --- readings -------------------------------------------------------------------------


class ReadingIn(RequestModel):
    patient_id: uuid.UUID
    kind: Literal["bp", "glucose", "weight"]
    systolic: int | None = None
    diastolic: int | None = None
    glucose_mmol: Decimal | None = Field(default=None, allow_inf_nan=False, max_digits=8, decimal_places=2)
    fasting: bool | None = None
    weight_kg: Decimal | None = Field(default=None, allow_inf_nan=False, max_digits=8, decimal_places=2)
    at: datetime | None = Field(default=None, description="When it was measured (RFC 3339); default now")


class ReadingCreatedOut(ResponseModel):
    id: uuid.UUID
    classification: str
    advice: str
    go_in_person: bool
    team_alerted: bool


@router.post(
    "/readings",
    summary="A home reading (blood pressure, glucose, weight), classified at once; urgent ones alert the team",
    body=ReadingIn,
    response=ReadingCreatedOut,
    status=201,
    roles=PATIENT,
    errors={422: ["out_of_range"]},
)
def add_reading(body: ReadingIn, principal: Principal) -> ReadingCreatedOut:
    result = services.record_reading(
        identity.get_account(principal.id),
        str(body.patient_id),
        body.kind,
        systolic=body.systolic,
        diastolic=body.diastolic,
        glucose_mmol=body.glucose_mmol,
        fasting=body.fasting,
        weight_kg=body.weight_kg,
        at=body.at,
    )
    return ReadingCreatedOut(
        id=result.reading.id,
        classification=result.classification.value,
        advice=localized(result.advice),
        go_in_person=result.classification == rules.Classification.URGENT,
        team_alerted=result.alerted,
    )


class ReadingOut(ResponseModel):
    id: uuid.UUID
    kind: str
    systolic: int | None
    diastolic: int | None
    glucose_mmol: Decimal | None
    fasting: bool | None
    weight_kg: Decimal | None
    classification: str
    at: datetime


def reading_out(r: HomeReading) -> ReadingOut:
    return ReadingOut(
        id=r.id,
        kind=r.kind,
        systolic=r.systolic,
        diastolic=r.diastolic,
        glucose_mmol=r.glucose_mmol,
        fasting=r.fasting,
        weight_kg=r.weight_kg,
        classification=r.classification.value,
        at=r.measured_at,
    )


class FollowUpOut(ResponseModel):
    id: uuid.UUID
    due_on: date | None
    done_on: date
    method: str
    classification: str
    note: str
    done_by: uuid.UUID
    next_due: date


class AlertOut(ResponseModel):
    id: uuid.UUID
    reading_id: uuid.UUID
    summary: str
    at: datetime
    acknowledged_at: datetime | None


def alert_out(a: Alert) -> AlertOut:
    return AlertOut(
        id=a.id,
        reading_id=a.reading_id,
        summary=str(a.detail.get("summary", "")),
        at=a.created_at,
        acknowledged_at=a.acknowledged_at,
    )


class PlanOut(ResponseModel):
    patient_id: uuid.UUID
    contract: ContractOut | None
    conditions: list[str]
    next_due: date | None
    overdue: bool
    followups: list[FollowUpOut]
    readings: list[ReadingOut]
    alerts: list[AlertOut]


@router.get(
    "/family-doctor/patients/<patient_id>/plan",
    summary="A patient's follow-up plan: next due date, follow-ups done, recent readings (the patient, or the team)",
    response=PlanOut,
    roles=["patient", "physician"],
)
def plan(patient_id: str, principal: Principal) -> PlanOut:
    view = services.plan_for(identity.get_account(principal.id), patient_id)
    return PlanOut(
        patient_id=view.patient.id,
        contract=contract_out(view.contract) if view.contract else None,
        conditions=view.plan.conditions if view.plan else [],
        next_due=view.plan.next_due if view.plan else None,
        overdue=view.overdue,
        followups=[followup_out(f) for f in view.followups],
        readings=[reading_out(r) for r in view.readings],
        alerts=[alert_out(a) for a in view.alerts],
    )


def followup_out(f: FollowUp) -> FollowUpOut:
    return FollowUpOut(
        id=f.id,
        due_on=f.due_on,
        done_on=f.done_on,
        method=f.method,
        classification=f.classification.value,
        note=f.note,
        done_by=f.done_by,
        next_due=f.next_due,
    )


class FollowUpIn(RequestModel):
    method: Literal["online", "phone", "in_person"]
    classification: Literal["controlled", "uncontrolled", "urgent"]
    note: str = Field(default="", max_length=4000)


@router.post(
    "/family-doctor/patients/<patient_id>/followups",
    summary="The team records a follow-up; the next one falls due 3 months (controlled) or 2 weeks later",
    body=FollowUpIn,
    response=FollowUpOut,
    status=201,
    roles=PHYSICIAN,
    errors={422: ["no_plan"]},
)
def add_followup(patient_id: str, body: FollowUpIn, principal: Principal) -> FollowUpOut:
    f = services.record_followup(
        identity.get_account(principal.id), patient_id, body.method, body.classification, body.note
    )
    return followup_out(f)


# --- the team's panel -----------------------------------------------------------------


class PanelRowOut(ResponseModel):
    patient_id: uuid.UUID
    patient_name: str
    contract: ContractOut
    next_due: date | None
    overdue: bool
    open_alerts: list[AlertOut]
    last_reading: ReadingOut | None


class PanelOut(ResponseModel):
    items: list[PanelRowOut]


@router.get(
    "/family-doctor/panel",
    summary="The physician's teams' contracted patients: open urgent alerts first, then overdue follow-ups",
    response=PanelOut,
    roles=PHYSICIAN,
)
def panel(principal: Principal) -> PanelOut:
    rows = services.panel(identity.get_account(principal.id))
    return PanelOut(
        items=[
            PanelRowOut(
                patient_id=r.contract.patient_id,
                patient_name=r.contract.patient.name,
                contract=contract_out(r.contract),
                next_due=r.plan.next_due if r.plan else None,
                overdue=r.overdue,
                open_alerts=[alert_out(a) for a in r.open_alerts],
                last_reading=reading_out(r.last_reading) if r.last_reading else None,
            )
            for r in rows
        ]
    )


@router.post(
    "/family-doctor/alerts/<alert_id>/acknowledge",
    summary="Someone on the team has seen an urgent reading and acted on it",
    response=AlertOut,
    roles=PHYSICIAN,
)
def acknowledge(alert_id: str, principal: Principal) -> AlertOut:
    return alert_out(services.acknowledge_alert(identity.get_account(principal.id), alert_id))


# --- administration -------------------------------------------------------------------


class LevelIn(RequestModel):
    level: Literal["三级", "二级", "一级", "基层"]


class LevelOut(ResponseModel):
    level: str
    offers_signing: bool


@router.post(
    "/admin/institution/level",
    summary="Set the institution's level; only a primary-care (基层) institution offers family-doctor contracts",
    body=LevelIn,
    response=LevelOut,
    roles=["admin"],
)
def set_level(body: LevelIn, principal: Principal) -> LevelOut:
    inst = services.set_institution_level(body.level)
    return LevelOut(level=inst.level, offers_signing=rules.offers_signing(inst.level))


class MemberIn(RequestModel):
    name: str = Field(default="", max_length=100)
    role: Literal["physician", "nurse", "public_health"]
    account_id: uuid.UUID | None = None


class TeamIn(RequestModel):
    name: str = Field(min_length=1, max_length=100)
    lead_id: uuid.UUID
    members: list[MemberIn] = Field(default_factory=list, max_length=30)


@router.post(
    "/admin/family-doctor/teams",
    summary="Set up a family-doctor team: a lead physician and others",
    body=TeamIn,
    response=TeamOut,
    status=201,
    roles=["admin"],
    errors={409: ["already_member"]},
)
def create_team(body: TeamIn, principal: Principal) -> TeamOut:
    team = services.create_team(
        body.name,
        body.lead_id,
        [services.MemberSpec(m.name, m.role, str(m.account_id) if m.account_id else None) for m in body.members],
    )
    return team_out(team)


class PackageIn(RequestModel):
    name: str = Field(min_length=1, max_length=100)
    conditions: list[Literal["I10", "E11"]] = Field(default_factory=list, max_length=2)
    includes: str = Field(default="", max_length=4000)
    fee_fen: int = Field(default=0, ge=0, le=10_000_000)


@router.post(
    "/admin/family-doctor/teams/<team_id>/packages",
    summary="Add a service package to a team (basic, or for hypertension / type 2 diabetes; its fee may be 0)",
    body=PackageIn,
    response=PackageOut,
    status=201,
    roles=["admin"],
)
def create_package(team_id: str, body: PackageIn, principal: Principal) -> PackageOut:
    p = services.create_package(team_id, body.name, list(body.conditions), body.includes, body.fee_fen)
    return PackageOut.model_validate(p)


# --- long-term prescription renewal -----------------------------------------------------


class RenewalIn(RequestModel):
    visit_id: uuid.UUID


class RenewedOut(ResponseModel):
    id: uuid.UUID
    status: str
    jws: str
    long_term: bool


@router.post(
    "/family-doctor/patients/<patient_id>/long-term-renewal",
    summary="The team's physician renews the last long-term prescription (up to 12 weeks) in a visit they "
    "accepted; every prescription rule runs again",
    body=RenewalIn,
    response=RenewedOut,
    status=201,
    roles=PHYSICIAN,
    errors={
        403: ["face_verification_required"],
        422: ["no_previous_prescription", "not_long_term", "not_stable", "prescription_rejected"],
    },
)
def renew_long_term(patient_id: str, body: RenewalIn, principal: Principal) -> RenewedOut:
    rx = services.renew_long_term(principal, patient_id, str(body.visit_id))
    return RenewedOut(id=rx.id, status=rx.status.value, jws=rx.jws, long_term=rx.long_term)
