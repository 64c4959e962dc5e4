"""Identity use cases: one function each. They flush, audit, and never commit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from clinic.core import audit
from clinic.core.crypto import lookup_hash
from clinic.core.db import db, utcnow
from clinic.core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, RuleRefusal
from identity import rules
from identity.models import Account, Department, Institution, Patient, Relation, Role, StaffProfile
from identity.otp import verifier

_hasher = PasswordHasher()
# A hash to verify against when the username is unknown, so timing does not tell.
_DUMMY_HASH = _hasher.hash("not-a-real-password-0")


class BadCredentials(DomainError):
    status = 401
    code = "bad_credentials"
    default_message = "The username or password is wrong."


class InvalidIdNumber(Invalid):
    code = "invalid_id_number"


class AlreadyRegistered(Conflict):
    code = "already_registered"


class BadCode(Invalid):
    code = "bad_code"
    default_message = "The code is wrong or has expired."


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _check_password_policy(password: str) -> None:
    problems = rules.password_problems(password)
    if problems:
        raise Invalid("The password needs " + ", ".join(problems) + ".", code="weak_password")


def _parse_id(id_number: str) -> rules.IdNumber:
    try:
        return rules.parse_id_number(id_number)
    except rules.IdNumberError as exc:
        raise InvalidIdNumber(exc.reason) from None


def authenticate(username: str, password: str) -> Account:
    session = db.session()
    account = session.scalars(select(Account).where(Account.username == username.strip())).first()
    ok = False
    try:
        ok = _hasher.verify(account.password_hash if account else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        ok = False
    if account is None or not ok or not account.active:
        audit.record(
            session,
            "auth.login_failed",
            subject_type="account",
            subject_id=account.id if account else None,
            detail={"username": username[:64], "reason": "inactive" if account and ok else "bad_credentials"},
        )
        raise BadCredentials(persist=True)
    if _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = _hasher.hash(password)
    audit.record(
        session,
        "auth.login",
        subject_type="account",
        subject_id=account.id,
        actor=audit.Actor(str(account.id), account.role.value, audit.current_actor().client_ip),
    )
    return account


@dataclass(frozen=True)
class Registration:
    account: Account
    patient: Patient


def register_patient(name: str, id_number: str, phone: str, password: str) -> Registration:
    session = db.session()
    person = _parse_id(id_number)
    try:
        phone_e164 = rules.normalize_phone(phone)
    except ValueError as exc:
        raise Invalid(str(exc), code="invalid_phone") from None
    _check_password_policy(password)
    id_hash = lookup_hash(person.number)
    taken = session.scalars(
        select(Patient.id).where(Patient.id_number_hash == id_hash, Patient.relation == Relation.SELF)
    ).first()
    if taken is not None:
        raise AlreadyRegistered("A patient with this ID number is already registered.")
    phone_hash = lookup_hash(phone_e164)
    if session.scalars(select(Account.id).where(Account.phone_hash == phone_hash)).first() is not None:
        raise AlreadyRegistered("This phone number is already registered.")
    if session.scalars(select(Account.id).where(Account.username == phone_e164)).first() is not None:
        raise AlreadyRegistered("This phone number is already registered.")
    account = Account(
        username=phone_e164,
        password_hash=hash_password(password),
        role=Role.PATIENT,
        display_name=name,
        phone=phone_e164,
        phone_hash=phone_hash,
    )
    session.add(account)
    session.flush()
    patient = Patient(
        account_id=account.id,
        name=name,
        id_number=person.number,
        id_number_hash=id_hash,
        birth_date=person.birth_date,
        sex=person.sex,
        relation=Relation.SELF,
    )
    session.add(patient)
    session.flush()
    who = audit.Actor(str(account.id), "patient", audit.current_actor().client_ip)
    audit.record(session, "patient.registered", subject_type="account", subject_id=account.id, actor=who)
    verifier().start(phone_e164)
    audit.record(session, "phone.code_sent", subject_type="account", subject_id=account.id, actor=who)
    return Registration(account, patient)


def get_account(account_id: str | uuid.UUID) -> Account:
    try:
        key = account_id if isinstance(account_id, uuid.UUID) else uuid.UUID(str(account_id))
    except ValueError:
        raise NotFound() from None
    account = db.session.get(Account, key)
    if account is None:
        raise NotFound()
    return account


def send_phone_code(account: Account) -> None:
    if account.phone is None:
        raise Invalid("This account has no phone number.", code="no_phone")
    if account.phone_verified_at is not None:
        raise Conflict("The phone number is already confirmed.", code="already_verified")
    verifier().start(account.phone)
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
    session.flush()
    account.patients.append(patient)
    audit.record(
        session, "patient.family_added", subject_type="patient", subject_id=patient.id, detail={"relation": rel.value}
    )
    return patient


def patient_of_account(account: Account, patient_id: str | uuid.UUID) -> Patient:
    """A person on this account, or 404 (another account's people are never revealed)."""
    try:
        key = patient_id if isinstance(patient_id, uuid.UUID) else uuid.UUID(str(patient_id))
    except ValueError:
        raise NotFound() from None
    for p in account.patients:
        if p.id == key:
            return p
    raise NotFound()


# --- face freshness ----------------------------------------------------------------


class FaceVerificationRequired(Forbidden):
    code = "face_verification_required"
    default_message = "A face check is needed within the last minutes before this act."


def face_is_fresh(face_verified_at: int | float | None, now: float, window_seconds: int) -> bool:
    """Pure: was the last successful face check within the freshness window?"""
    return face_verified_at is not None and 0 <= now - float(face_verified_at) <= window_seconds


def require_fresh_face(claims: dict[str, object]) -> None:
    """Confirming a diagnosis, accepting a visit, signing a prescription: the token (or
    page session) must carry a successful face check (`face_at`, Unix seconds) within
    FACE_FRESH_SECONDS; else 403 face_verification_required."""
    from flask import current_app

    face_at = claims.get("face_at")
    window = int(current_app.config["FACE_FRESH_SECONDS"])
    if not isinstance(face_at, int | float) or not face_is_fresh(face_at, utcnow().timestamp(), window):
        raise FaceVerificationRequired(
            f"Verify your face first: these acts need a face check within the last {window // 60} minutes."
        )


# --- staff and institution -------------------------------------------------------


def institution() -> Institution:
    inst = db.session.get(Institution, 1)
    if inst is None:
        raise NotFound("The institution profile has not been set up.")
    return inst


def institution_status() -> rules.InstitutionStatus:
    inst = db.session.get(Institution, 1)
    approved = frozenset(db.session.scalars(select(Department.code).where(Department.approved)))
    return rules.InstitutionStatus(inst.approval_valid_until if inst else None, approved)


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
        raise RuleRefusal(
            "not_qualified",
            violations,
            message="The physician may not practise online: " + "; ".join(v.message for v in violations),
        ).with_status(403)


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
    _check_password_policy(spec.password)
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
