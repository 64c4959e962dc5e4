"""Identity use cases: patient registration, phone codes, accounts and family members, staff
and their credentials. One function each; they flush, audit and never commit. Logging in,
passwords and sessions are `identity.login`; physicians' faces are `identity.face_services`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from clinic.core import audit, limits
from clinic.core.crypto import lookup_hash
from clinic.core.db import db, get_or_404, utcnow
from clinic.core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, RuleRefusal
from clinic.core.principal import Principal
from identity import rules
from identity.login import check_password_policy, end_backoff, end_sessions, hash_password
from identity.models import (
    STAFF_ROLES,
    Account,
    Department,
    Institution,
    Patient,
    Relation,
    Role,
    StaffProfile,
)
from identity.otp import verifier


class InvalidIdNumber(Invalid):
    code = "invalid_id_number"


class AlreadyRegistered(Conflict):
    code = "already_registered"


class PhoneNotVerified(Forbidden):
    code = "phone_not_verified"
    default_message = "Confirm your phone number with the code we sent by SMS before requesting a visit."


class BadCode(Invalid):
    code = "bad_code"
    default_message = "The code is wrong or has expired."


def _parse_id(id_number: str) -> rules.IdNumber:
    try:
        return rules.parse_id_number(id_number)
    except rules.IdNumberError as exc:
        raise InvalidIdNumber(exc.reason) from None


@dataclass(frozen=True)
class Registration:
    account: Account
    patient: Patient


def _flush_or(refusal: DomainError) -> None:
    """Flush; a unique index refusing the rows (someone was quicker) becomes `refusal`."""
    try:
        db.session.flush()
    except IntegrityError:
        raise refusal from None


TAKEN = "This ID number or phone number is already registered; log in, or recover the account."


def register_patient(name: str, id_number: str, phone: str, password: str, address: str | None = None) -> Registration:
    """A new patient account. One answer whether the ID number or the phone is taken (no
    telling which: that would reveal who is a patient here). With `address` (requests),
    REGISTER_ADDRESS_RATE_LIMIT counts registrations from it; only successful ones count."""
    session = db.session()
    if address is not None:
        limits.test("REGISTER_ADDRESS_RATE_LIMIT", "register-address", address)
    person = _parse_id(id_number)
    try:
        phone_e164 = rules.normalize_phone(phone)
    except ValueError as exc:
        raise Invalid(str(exc), code="invalid_phone") from None
    check_password_policy(password)
    id_hash = lookup_hash(person.number)
    taken = session.scalars(
        select(Patient.id).where(Patient.id_number_hash == id_hash, Patient.relation == Relation.SELF)
    ).first()
    phone_hash = lookup_hash(phone_e164)
    phone_taken = session.scalars(
        select(Account.id).where((Account.phone_hash == phone_hash) | (Account.username == phone_e164))
    ).first()
    if taken is not None or phone_taken is not None:
        raise AlreadyRegistered(TAKEN)
    account = Account(
        username=phone_e164,
        password_hash=hash_password(password),
        role=Role.PATIENT,
        display_name=name,
        phone=phone_e164,
        phone_hash=phone_hash,
    )
    patient = Patient(
        name=name,
        id_number=person.number,
        id_number_hash=id_hash,
        birth_date=person.birth_date,
        sex=person.sex,
        relation=Relation.SELF,
    )
    account.patients.append(patient)
    session.add(account)
    # The checks above read; a registration of the same phone or ID number committed since
    # then is caught by the unique indexes instead, with the same answer.
    _flush_or(AlreadyRegistered(TAKEN))
    who = audit.Actor(str(account.id), "patient", audit.current_actor().client_ip)
    audit.record(session, "patient.registered", subject_type="account", subject_id=account.id, actor=who)
    send_code(phone_e164)
    audit.record(session, "phone.code_sent", subject_type="account", subject_id=account.id, actor=who)
    if address is not None:
        limits.hit("REGISTER_ADDRESS_RATE_LIMIT", "register-address", address)
    return Registration(account, patient)


def send_code(phone_e164: str) -> None:
    """Send a one-time code, within SMS_PHONE_RATE_LIMIT for this number (whoever asks, from
    wherever): only codes actually sent count."""
    limits.test("SMS_PHONE_RATE_LIMIT", "sms-phone", phone_e164)
    verifier().start(phone_e164)
    limits.hit("SMS_PHONE_RATE_LIMIT", "sms-phone", phone_e164)


def set_active(account: Account, active: bool) -> None:
    """An administrator deactivates (or reactivates) an account; deactivation ends its sessions."""
    was_active = account.active
    account.active = active
    if was_active == active:
        return
    audit.record(
        db.session(),
        "account.activated" if active else "account.deactivated",
        subject_type="account",
        subject_id=account.id,
    )
    if not active:
        end_sessions(account, "deactivated")


def get_account(account_id: uuid.UUID) -> Account:
    return get_or_404(Account, account_id)


def send_phone_code(account: Account) -> None:
    if account.phone is None:
        raise Invalid("This account has no phone number.", code="no_phone")
    if account.phone_verified_at is not None:
        raise Conflict("The phone number is already confirmed.", code="already_verified")
    send_code(account.phone)
    audit.record(db.session(), "phone.code_sent", subject_type="account", subject_id=account.id)


def verify_phone(account: Account, code: str) -> None:
    session = db.session()
    if account.phone is None:
        raise Invalid("This account has no phone number.", code="no_phone")
    if account.phone_verified_at is not None:
        return
    if not verifier().check(account.phone, code.strip()):
        audit.record(session, "phone.code_rejected", subject_type="account", subject_id=account.id)
        raise BadCode(persist=True)
    account.phone_verified_at = utcnow()
    end_backoff(account)
    audit.record(session, "phone.verified", subject_type="account", subject_id=account.id)


def add_family_member(account: Account, name: str, id_number: str, relation: str) -> Patient:
    session = db.session()
    if account.role != Role.PATIENT:
        raise Forbidden("Only patient accounts hold family members.")
    person = _parse_id(id_number)
    try:
        rel = Relation(relation)
    except ValueError:
        raise Invalid("The relation is not one of: child, parent, spouse, other.", code="invalid") from None
    if rel == Relation.SELF:
        raise Invalid("The account holder is already on the account.", code="invalid")
    id_hash = lookup_hash(person.number)
    if any(p.id_number_hash == id_hash for p in account.patients):
        raise Conflict("This person is already on the account.", code="already_on_account")
    patient = Patient(
        account_id=account.id,
        name=name,
        id_number=person.number,
        id_number_hash=id_hash,
        birth_date=person.birth_date,
        sex=person.sex,
        relation=rel,
    )
    session.add(patient)
    _flush_or(Conflict("This person is already on the account.", code="already_on_account"))  # added meanwhile
    account.patients.append(patient)
    audit.record(
        session, "patient.family_added", subject_type="patient", subject_id=patient.id, detail={"relation": rel.value}
    )
    return patient


def patient_of_account(account: Account, patient_id: uuid.UUID) -> Patient:
    """A person on this account, or 404 (another account's people are never revealed)."""
    patient = db.session.scalars(
        select(Patient).where(Patient.id == patient_id, Patient.account_id == account.id)
    ).first()
    if patient is None:
        raise NotFound()
    return patient


# --- staff and institution -------------------------------------------------------


def institution() -> Institution:
    inst = db.session.get(Institution, 1)
    if inst is None:
        raise NotFound("The institution profile has not been set up.")
    return inst


def institution_status() -> rules.InstitutionStatus:
    """The institution's approval and its approved departments, in one statement."""
    rows = db.session.execute(
        select(Institution.approval_valid_until, Department.code)
        .select_from(Institution)
        .outerjoin(Department, Department.approved.is_(True))
        .where(Institution.id == 1)
    ).all()
    if not rows:
        return rules.InstitutionStatus(None, frozenset())
    return rules.InstitutionStatus(rows[0][0], frozenset(code for _, code in rows if code is not None))


def physician_credentials(account: Account) -> rules.PhysicianCredentials:
    s = account.staff
    return rules.PhysicianCredentials(
        license_no=s.license_no if s else None,
        registered_here=bool(s and s.registered_here),
        independent_practice_since=s.independent_practice_since if s else None,
        license_valid_until=s.license_valid_until if s else None,
        department=s.department_code if s else None,
        institution_consent=bool(s and s.institution_consent),
        active=account.active,
    )


def require_qualified_physician(account: Account, department: str | None = None, today: date | None = None) -> None:
    if account.role != Role.PHYSICIAN:
        raise Forbidden("Only physicians may do this.")
    violations = rules.physician_violations(
        physician_credentials(account), institution_status(), today or date.today(), department
    )
    if violations:
        raise RuleRefusal("not_qualified", violations, lead="The physician may not practise online:").with_status(403)


def require_qualified_pharmacist(account: Account, today: date | None = None) -> None:
    if account.role != Role.PHARMACIST:
        raise Forbidden("Only pharmacists may do this.")
    s = account.staff
    cred = rules.PharmacistCredentials(
        s.qualification_no if s else None, s.qualification_valid_until if s else None, account.active
    )
    violations = rules.pharmacist_violations(cred, today or date.today())
    if violations:
        raise RuleRefusal("not_qualified", violations).with_status(403)


@dataclass(frozen=True)
class StaffSpec:
    username: str
    password: str
    role: Role
    name: str
    department: str | None = None
    title: str = ""
    license_no: str | None = None
    practice_registration_no: str | None = None
    registered_here: bool = True
    independent_practice_since: date | None = None
    license_valid_until: date | None = None
    institution_consent: bool = True
    qualification_no: str | None = None
    qualification_valid_until: date | None = None


def create_staff(spec: StaffSpec) -> Account:
    session = db.session()
    if spec.role == Role.PATIENT:
        raise Invalid("Patients register themselves.")
    check_password_policy(spec.password)
    if session.scalars(select(Account.id).where(Account.username == spec.username)).first() is not None:
        raise Conflict(f"The username {spec.username!r} is taken.", code="username_taken")
    if spec.department is not None and session.get(Department, spec.department) is None:
        raise Invalid(f"Unknown department {spec.department!r}.")
    account = Account(
        username=spec.username, password_hash=hash_password(spec.password), role=spec.role, display_name=spec.name
    )
    session.add(account)
    session.flush()
    if spec.role in (Role.PHYSICIAN, Role.PHARMACIST):
        session.add(
            StaffProfile(
                account_id=account.id,
                name=spec.name,
                title=spec.title,
                department_code=spec.department,
                license_no=spec.license_no,
                practice_registration_no=spec.practice_registration_no,
                registered_here=spec.registered_here,
                independent_practice_since=spec.independent_practice_since,
                license_valid_until=spec.license_valid_until,
                institution_consent=spec.institution_consent,
                qualification_no=spec.qualification_no,
                qualification_valid_until=spec.qualification_valid_until,
            )
        )
        session.flush()
        session.refresh(account)
    audit.record(
        session, "staff.created", subject_type="account", subject_id=account.id, detail={"role": spec.role.value}
    )
    return account


def staff_accounts() -> list[Account]:
    """Physicians and pharmacists, active first, by name (the administrators' staff page)."""
    return list(
        db.session.scalars(
            select(Account)
            .where(Account.role.in_((Role.PHYSICIAN, Role.PHARMACIST)))
            .order_by(Account.active.desc(), Account.display_name)
        )
    )


def credential_expiry(account: Account) -> date | None:
    """The date the staff member's practice licence or pharmacist qualification runs out."""
    staff = account.staff
    if staff is None:
        return None
    return staff.license_valid_until if account.role == Role.PHYSICIAN else staff.qualification_valid_until


def deactivate_staff(account_id: uuid.UUID, reason: str) -> Account:
    """An administrator deactivates a physician's or pharmacist's account: no more log-ins."""
    account = get_account(account_id)
    if account.role not in STAFF_ROLES:
        raise NotFound("No such staff account.")
    reason = reason.strip()
    if len(reason) < 2:
        raise Invalid("Say why the account is deactivated.", field="reason")
    account.active = False
    db.session.flush()
    audit.record(
        db.session(), "staff.deactivated", subject_type="account", subject_id=account.id, detail={"reason": reason}
    )
    return account


def set_on_duty(who: Principal, on_duty: bool) -> StaffProfile:
    """A physician starts or ends taking online visits (the directory shows it; routing respects it)."""
    account = get_account(who.account_id)
    if account.role != Role.PHYSICIAN or account.staff is None:
        raise Forbidden("Only physicians go on or off duty.")
    staff = account.staff
    if staff.on_duty != on_duty:
        staff.on_duty = on_duty
        audit.record(
            db.session(),
            "physician.on_duty" if on_duty else "physician.off_duty",
            subject_type="account",
            subject_id=account.id,
        )
    db.session.flush()
    return staff
