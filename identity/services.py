"""Identity use cases: accounts, login and its limits, phone codes, patients and family
members, staff and their credentials. One function each; they flush, audit and never
commit. Physicians' faces are `identity.face_services`."""

from __future__ import annotations

import hashlib
import time
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import date

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from clinic.core import audit, limits
from clinic.core.config import settings
from clinic.core.crypto import lookup_hash
from clinic.core.db import as_uuid, db, get_or_404, utcnow
from clinic.core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, RateLimited, RuleRefusal
from clinic.core.principal import Principal
from identity import rules
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


class PhoneNotVerified(Forbidden):
    code = "phone_not_verified"
    default_message = "Confirm your phone number with the code we sent by SMS before requesting a visit."


class BadCode(Invalid):
    code = "bad_code"
    default_message = "The code is wrong or has expired."


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _check_password_policy(password: str) -> None:
    problems = rules.password_problems(password)
    if problems:
        raise Invalid("A password needs 8 to 128 characters, with both letters and digits.", code="weak_password")


def _parse_id(id_number: str) -> rules.IdNumber:
    try:
        return rules.parse_id_number(id_number)
    except rules.IdNumberError as exc:
        raise InvalidIdNumber(exc.reason) from None


def login_name(typed: str) -> str:
    """The username as stored: a patient's is their phone in E.164 (+86…), typed as they
    know it (spaces, dashes, +86, 0086, full-width digits); any other name is taken in
    Unicode NFKC form without surrounding whitespace."""
    typed = unicodedata.normalize("NFKC", typed).strip()
    if not any(ch.isalpha() for ch in typed):
        try:
            return rules.normalize_phone(typed)
        except ValueError:
            pass
    return typed


def _account_named(username: str) -> Account | None:
    return db.session.scalars(select(Account).where(Account.username == login_name(username))).first()


def login_identity(username: str) -> str:
    """The key that every spelling of one login shares: the account it resolves to, or
    (no such account) the name folded (case, every whitespace removed)."""
    account = _account_named(username)
    if account is not None:
        return f"account:{account.id}"
    return "name:" + "".join(login_name(username).casefold().split())


# --- login limits (OWASP ASVS 2.2.1) --------------------------------------------------
# 1. per address and identity (LOGIN_RATE_LIMIT): every attempt counts;
# 2. per address (LOGIN_ADDRESS_RATE_LIMIT): failed attempts, whatever the username;
# 3. per identity, from any address the account has not logged in from before: after
#    LOGIN_BACKOFF_FREE_FAILURES failures, each further attempt waits twice as long as the
#    last (LOGIN_BACKOFF_BASE_SECONDS, capped at LOGIN_BACKOFF_MAX_SECONDS). The owner at an
#    address they logged in from (within LOGIN_KNOWN_ADDRESS_DAYS) is not held back by
#    someone else's guesses, and a successful login or phone code ends the back-off.


def _address_key(address: str) -> str:
    return hashlib.sha256(address.encode()).hexdigest()[:32]


def _known_address(account: Account, address: str) -> bool:
    return limits.guard().get(f"login-known/{account.id}/{_address_key(address)}") > 0


def backoff_seconds(failures: int, free: int, base: int, cap: int) -> int:
    """Pure: how long an identity with `failures` recent failures waits before the next try."""
    if failures < free:
        return 0
    return int(min(cap, base * 2 ** min(failures - free, 32)))


def _check_backoff(identity: str) -> None:
    guard = limits.guard()
    failures = guard.get(f"login-fail/{identity}")
    lock = f"login-lock/{identity}/{failures}"
    if failures >= settings().LOGIN_BACKOFF_FREE_FAILURES and guard.get(lock) > 0:
        wait = max(1, int(guard.expiry(lock) - time.time() + 0.999))
        raise RateLimited(
            "Too many failed logins for this account; try again in %(seconds)s seconds.",
            params={"seconds": wait},
            retry_after=wait,
        )


def _count_failure(identity: str) -> None:
    guard = limits.guard()
    cfg = settings()
    failures = guard.incr(f"login-fail/{identity}", cfg.LOGIN_BACKOFF_WINDOW_SECONDS)
    wait = backoff_seconds(
        failures, cfg.LOGIN_BACKOFF_FREE_FAILURES, cfg.LOGIN_BACKOFF_BASE_SECONDS, cfg.LOGIN_BACKOFF_MAX_SECONDS
    )
    if wait:
        guard.incr(f"login-lock/{identity}/{failures}", wait)


def end_backoff(account: Account) -> None:
    """The owner proved who they are (password or phone code): the account's back-off ends."""
    limits.guard().clear(f"login-fail/account:{account.id}")


def log_in(username: str, password: str, address: str | None) -> Account:
    """Pages' and the API's login, with every limit above; the account, or a refusal."""
    address = address or "-"
    account = _account_named(username)
    identity = f"account:{account.id}" if account is not None else login_identity(username)
    limits.check("LOGIN_RATE_LIMIT", "login", address, identity)
    limits.test("LOGIN_ADDRESS_RATE_LIMIT", "login-address", address)
    if account is None or not _known_address(account, address):
        _check_backoff(identity)
    try:
        account = authenticate(username, password)
    except BadCredentials:
        limits.hit("LOGIN_ADDRESS_RATE_LIMIT", "login-address", address)
        _count_failure(identity)
        raise
    end_backoff(account)
    limits.guard().incr(
        f"login-known/{account.id}/{_address_key(address)}", settings().LOGIN_KNOWN_ADDRESS_DAYS * 24 * 3600
    )
    return account


def authenticate(username: str, password: str) -> Account:
    session = db.session()
    account = _account_named(username)
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
    _check_password_policy(password)
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


def end_sessions(account: Account, reason: str) -> None:
    """End every page session and API token of the account (logout, password change,
    deactivation): they carry its session version, which moves on."""
    account.session_version = (account.session_version or 0) + 1
    db.session.flush()
    audit.record(
        db.session(), "auth.sessions_ended", subject_type="account", subject_id=account.id, detail={"reason": reason}
    )


def change_password(account: Account, current: str, new: str) -> None:
    """The owner changes their password; every other session ends with the old one."""
    ok: bool
    try:
        ok = _hasher.verify(account.password_hash, current)
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        raise BadCredentials("The current password is wrong.")
    _check_password_policy(new)
    account.password_hash = hash_password(new)
    audit.record(db.session(), "auth.password_changed", subject_type="account", subject_id=account.id)
    end_sessions(account, "password_changed")


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


def patient_of_account(account: Account, patient_id: str | uuid.UUID) -> Patient:
    """A person on this account, or 404 (another account's people are never revealed)."""
    key = as_uuid(patient_id)
    patient = db.session.scalars(select(Patient).where(Patient.id == key, Patient.account_id == account.id)).first()
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
