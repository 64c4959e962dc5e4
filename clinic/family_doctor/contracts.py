"""Family-doctor contracts (家庭医生签约): the agreement text a person signs, the contract's
lifecycle (signed, countersigned by the team lead, ended, renewed, expired; every move
through `rules.transition`), and the follow-up plan a contract opens and closes. Use cases
flush and audit; none commits."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from clinic.core import audit
from clinic.core.db import db, utcnow
from clinic.core.errors import Conflict, Forbidden, Invalid, NotFound
from clinic.core.principal import Principal
from clinic.core.versioned_text import TextShelf, VersionedText
from clinic.family_doctor import rules
from clinic.family_doctor.models import (
    Contract,
    FollowUpPlan,
)
from clinic.family_doctor.rules import N_, ContractEvent, ContractStatus
from clinic.family_doctor.services import (
    get_team,
    is_team_physician,
    offers_signing,
    today,
)
from clinic.visits.models import Diagnosis, DiagnosisStatus
from identity import services as identity
from identity.models import Patient, Role

# --- refusals -------------------------------------------------------------------------


class NotPrimaryCare(Invalid):
    code = "not_primary_care"
    default_message = N_(
        "This institution is not a primary-care institution (基层医疗卫生机构) and does not offer "
        "family-doctor contracts."
    )


class StaleAgreement(Invalid):
    code = "stale_version"


class ContractExists(Conflict):
    code = "contract_exists"
    default_message = N_("This person already has a family-doctor contract in force (one team at a time).")


class ContractNotOpen(Conflict):
    code = "contract_not_open"


class NotTeamLead(Forbidden):
    code = "not_team_lead"
    default_message = N_("Only the team's lead physician countersigns its contracts.")


class RenewalNotOpen(Invalid):
    code = "renewal_not_open"


# --- the agreement --------------------------------------------------------------------

AGREEMENT_DIR = Path(__file__).resolve().parent / "agreement"


_agreements = TextShelf(AGREEMENT_DIR)


def current_agreement() -> VersionedText:
    """The newest version shipped with the code (a new version is a new file and a deploy)."""
    return _agreements.current()


def _require_current(version: str) -> VersionedText:
    current = current_agreement()
    if version != current.version:
        raise StaleAgreement(
            N_("The agreement text has changed; read and sign the current version %(version)s."),
            params={"version": current.version},
            current_version=current.version,
        )
    return current


# --- contracts ------------------------------------------------------------------------


def _contract_in_force(patient_id: uuid.UUID) -> Contract | None:
    """The person's pending or active contract (a lapsed one is closed first)."""
    return db.session.scalars(
        select(Contract).where(Contract.patient_id == patient_id, Contract.status.in_(rules.IN_FORCE))
    ).first()


def _expire_if_lapsed(contract: Contract | None, day: date) -> Contract | None:
    if contract is None or rules.in_force_on(contract.status, contract.valid_until, day):
        return contract
    contract.status = rules.transition(contract.status, ContractEvent.EXPIRE)
    _deactivate_plan(contract.id)
    audit.record(db.session(), "fd.contract_expired", subject_type="fd_contract", subject_id=contract.id)
    db.session.flush()
    return None


def contract_in_force(patient_id: uuid.UUID) -> Contract | None:
    return _expire_if_lapsed(_contract_in_force(patient_id), today())


def sign_contract(
    who: Principal, patient_id: uuid.UUID, team_id: uuid.UUID, package_id: uuid.UUID, agreement_version: str
) -> Contract:
    session = db.session()
    patient = identity.patient_of_account(identity.get_account(who.account_id), patient_id)
    if not offers_signing():
        raise NotPrimaryCare()
    agreement = _require_current(agreement_version)
    team = get_team(team_id)
    package = next((p for p in team.packages if p.id == package_id and p.active), None)
    if package is None:
        raise Invalid(
            "The service package is not one of this team's.", fields=[{"loc": "package_id", "message": "unknown"}]
        )
    existing = contract_in_force(patient.id)
    if existing is not None:
        raise ContractExists(contract_id=str(existing.id))
    contract = Contract(
        patient_id=patient.id,
        account_id=who.account_id,
        team_id=team.id,
        package_id=package.id,
        status=ContractStatus.PENDING,
        agreement_version=agreement.version,
        agreement_sha256=agreement.sha256,
        fee_fen=package.fee_fen,
        signed_at=utcnow(),
        client_ip=audit.current_actor().client_ip,
    )
    session.add(contract)
    try:
        session.flush()
    except IntegrityError:
        # Another signing for this person committed between our check and our insert: the
        # partial unique index (one contract in force per person) refused this one.
        raise ContractExists() from None
    audit.record(
        session,
        "fd.contract_signed",
        subject_type="fd_contract",
        subject_id=contract.id,
        detail={
            "patient": str(patient.id),
            "team": str(team.id),
            "package": str(package.id),
            "agreement_version": agreement.version,
            "agreement_sha256": agreement.sha256,
        },
    )
    return contract


def contract_for(who: Principal, contract_id: uuid.UUID) -> Contract:
    """A contract the caller may see: the account's people's, or their team's; else 404."""
    contract = db.session.get(Contract, contract_id)
    if contract is None:
        raise NotFound()
    if who.role == Role.PATIENT and contract.patient.account_id == who.account_id:
        return contract
    if is_team_physician(who, contract.team):
        return contract
    raise NotFound()


def contracts_of(who: Principal) -> list[Contract]:
    """The contracts of the people on the caller's account, newest first."""
    ids = [p.id for p in identity.get_account(who.account_id).patients]
    return list(
        db.session.scalars(select(Contract).where(Contract.patient_id.in_(ids)).order_by(Contract.signed_at.desc()))
    )


def _move(contract: Contract, event: ContractEvent) -> None:
    try:
        contract.status = rules.transition(contract.status, event)
    except rules.IllegalContractMove:
        raise ContractNotOpen(
            N_("This contract is %(status)s; it cannot be changed that way."), params={"status": contract.status.value}
        ) from None


def countersign(who: Principal, contract_id: uuid.UUID) -> Contract:
    session = db.session()
    contract = contract_for(who, contract_id)
    if contract.team.lead_id != who.account_id:
        raise NotTeamLead()
    identity.require_qualified_physician(identity.get_account(who.account_id))
    _move(contract, ContractEvent.COUNTERSIGN)
    contract.countersigned_by, contract.countersigned_at = who.account_id, utcnow()
    contract.valid_from, contract.valid_until = rules.contract_term(today())
    session.flush()
    plan = _open_plan(contract)
    audit.record(
        session,
        "fd.contract_countersigned",
        subject_type="fd_contract",
        subject_id=contract.id,
        detail={
            "valid_from": contract.valid_from.isoformat(),
            "valid_until": contract.valid_until.isoformat(),
            "plan": str(plan.id) if plan else None,
        },
    )
    return contract


def end_contract(who: Principal, contract_id: uuid.UUID, reason: str) -> Contract:
    session = db.session()
    contract = contract_for(who, contract_id)
    reason = reason.strip()
    if not reason:
        raise Invalid("Say why the contract ends.", fields=[{"loc": "reason", "message": "required"}])
    _move(contract, ContractEvent.END)
    contract.ended_at, contract.ended_by, contract.end_reason = utcnow(), who.account_id, reason
    contract.ended_side = "patient" if who.role == Role.PATIENT else "team"
    _deactivate_plan(contract.id)
    audit.record(
        session,
        "fd.contract_ended",
        subject_type="fd_contract",
        subject_id=contract.id,
        detail={"side": contract.ended_side, "reason": reason},
    )
    return contract


def renew_contract(who: Principal, contract_id: uuid.UUID, agreement_version: str) -> Contract:
    """The patient renews for another year, signing the current agreement text again."""
    session = db.session()
    contract = contract_for(who, contract_id)
    if who.role != Role.PATIENT:
        raise Forbidden("The patient renews the contract (the team may end it instead).")
    if not offers_signing():
        raise NotPrimaryCare()
    agreement = _require_current(agreement_version)
    if contract.status != ContractStatus.ACTIVE or contract.valid_until is None:
        raise ContractNotOpen(
            N_("This contract is %(status)s; only an active contract is renewed."),
            params={"status": contract.status.value},
        )
    term = rules.renewal_term(contract.valid_until, today())
    if term is None:
        raise RenewalNotOpen(
            N_("Renewal opens %(days)s days before the contract ends."), params={"days": rules.RENEW_WINDOW_DAYS}
        )
    before = contract.valid_until
    _move(contract, ContractEvent.RENEW)
    contract.valid_until = term[1]
    contract.agreement_version, contract.agreement_sha256 = agreement.version, agreement.sha256
    contract.renewed_at, contract.renewals = utcnow(), contract.renewals + 1
    plan = _plan_of(contract.id)
    if plan is not None:
        plan.active = True
    else:
        _open_plan(contract)
    audit.record(
        session,
        "fd.contract_renewed",
        subject_type="fd_contract",
        subject_id=contract.id,
        detail={
            "from": before.isoformat(),
            "valid_until": term[1].isoformat(),
            "agreement_version": agreement.version,
            "agreement_sha256": agreement.sha256,
        },
    )
    return contract


def expire_lapsed(day: date) -> int:
    """Close every active contract whose year has run out (the daily job)."""
    rows = db.session.scalars(
        select(Contract).where(Contract.status == ContractStatus.ACTIVE, Contract.valid_until < day)
    ).all()
    for contract in rows:
        _expire_if_lapsed(contract, day)
    return len(rows)


# --- follow-up plans ------------------------------------------------------------------


def _confirmed_codes(patient_id: uuid.UUID) -> list[str]:
    rows = db.session.scalars(
        select(Diagnosis.condition_code).where(
            Diagnosis.patient_id == patient_id, Diagnosis.status == DiagnosisStatus.CONFIRMED
        )
    )
    return [code for code in rows if code]


def _plan_of(contract_id: uuid.UUID) -> FollowUpPlan | None:
    return db.session.scalars(select(FollowUpPlan).where(FollowUpPlan.contract_id == contract_id)).first()


def _open_plan(contract: Contract) -> FollowUpPlan | None:
    """A plan for a contracted patient with confirmed hypertension and/or type 2 diabetes."""
    conditions = rules.followed_conditions(_confirmed_codes(contract.patient_id))
    if not conditions:
        return None
    start = contract.valid_from or today()
    plan = FollowUpPlan(
        contract_id=contract.id,
        patient_id=contract.patient_id,
        team_id=contract.team_id,
        conditions=conditions,
        next_due=rules.first_due(start),
    )
    db.session.add(plan)
    db.session.flush()
    return plan


def _deactivate_plan(contract_id: uuid.UUID) -> None:
    db.session.execute(update(FollowUpPlan).where(FollowUpPlan.contract_id == contract_id).values(active=False))


def active_plan(patient_id: uuid.UUID) -> FollowUpPlan | None:
    return db.session.scalars(
        select(FollowUpPlan).where(FollowUpPlan.patient_id == patient_id, FollowUpPlan.active)
    ).first()


def person_for(who: Principal, patient_id: uuid.UUID) -> tuple[Patient, Contract | None]:
    """A person the caller may see: on the patient's account, or contracted with the physician's team."""
    if who.role == Role.PATIENT:
        patient = identity.patient_of_account(identity.get_account(who.account_id), patient_id)
        return patient, contract_in_force(patient.id)
    person = db.session.get(Patient, patient_id)
    if person is not None and who.role == Role.PHYSICIAN:
        contract = contract_in_force(person.id)
        if contract is not None and is_team_physician(who, contract.team):
            return person, contract
    raise NotFound()
