"""Family-doctor contract endpoints of /api/v1 (API.md "Family doctor contracts and
follow-up"): a person signs, the team lead countersigns, either side ends, the patient
renews. Registered with the tag "family_doctor" as the other family-doctor routers."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import Field

from clinic.core.api import ApiRouter, Principal, RequestModel, ResponseModel
from clinic.core.db import record_id
from clinic.family_doctor import contracts, followups
from clinic.family_doctor.models import Contract

router = ApiRouter("family_doctor")

PATIENT = ["patient"]
PHYSICIAN = ["physician"]

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
    contract = contracts.sign_contract(
        principal, body.patient_id, body.team_id, body.package_id, body.agreement_version
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
    if principal.role == "patient":
        rows = contracts.contracts_of(principal)
    else:
        rows = [r.contract for r in followups.panel(principal)]
    return ContractsOut(items=[contract_out(c) for c in rows])


@router.get(
    "/family-doctor/contracts/<contract_id>",
    summary="One contract",
    response=ContractOut,
    roles=["patient", "physician"],
)
def get_contract(contract_id: str, principal: Principal) -> ContractOut:
    return contract_out(contracts.contract_for(principal, record_id(contract_id)))


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
    c = contracts.countersign(principal, record_id(contract_id))
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
    c = contracts.end_contract(principal, record_id(contract_id), body.reason)
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
    c = contracts.renew_contract(principal, record_id(contract_id), body.agreement_version)
    return ContractStatusOut(id=c.id, status=c.status.value, valid_from=c.valid_from, valid_until=c.valid_until)
