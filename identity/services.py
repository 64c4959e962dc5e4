"""Identity use cases: one function each. They flush, audit, and never commit."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from clinic.core import audit, crypto, limits
from clinic.core.config import settings
from clinic.core.crypto import lookup_hash
from clinic.core.db import as_uuid, db, get_or_404, utcnow
from clinic.core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, RateLimited, RuleRefusal
from clinic.core.principal import Principal
from identity import face, rules
from identity.models import (
    STAFF_ROLES,
    Account,
    Department,
    FaceEnrollment,
    FaceImage,
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


def _cfg(name: str) -> int:
    from flask import current_app

    return int(current_app.config[name])


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
    if failures >= _cfg("LOGIN_BACKOFF_FREE_FAILURES") and guard.get(lock) > 0:
        wait = max(1, int(guard.expiry(lock) - time.time() + 0.999))
        raise RateLimited(
            "Too many failed logins for this account; try again in %(seconds)s seconds.",
            params={"seconds": wait},
            retry_after=wait,
        )


def _count_failure(identity: str) -> None:
    guard = limits.guard()
    failures = guard.incr(f"login-fail/{identity}", _cfg("LOGIN_BACKOFF_WINDOW_SECONDS"))
    wait = backoff_seconds(
        failures,
        _cfg("LOGIN_BACKOFF_FREE_FAILURES"),
        _cfg("LOGIN_BACKOFF_BASE_SECONDS"),
        _cfg("LOGIN_BACKOFF_MAX_SECONDS"),
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
        f"login-known/{account.id}/{_address_key(address)}", _cfg("LOGIN_KNOWN_ADDRESS_DAYS") * 24 * 3600
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


def get_account(account_id: str | uuid.UUID) -> Account:
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


# --- face freshness ----------------------------------------------------------------


class FaceVerificationRequired(Forbidden):
    code = "face_verification_required"
    default_message = "A face check is needed within the last minutes before this act."


def face_is_fresh(face_verified_at: int | float | None, now: float, window_seconds: int) -> bool:
    """Pure: was the last successful face check within the freshness window?"""
    return face_verified_at is not None and 0 <= now - float(face_verified_at) <= window_seconds


def require_fresh_face(who: Principal) -> None:
    """Confirming a diagnosis, accepting a visit, signing a prescription: the caller's token
    (or page session) must carry a successful face check (`face_at`, Unix seconds) within
    FACE_FRESH_SECONDS; else 403 face_verification_required."""
    window = settings().FACE_FRESH_SECONDS
    if face_locked(who.account_id):
        raise FaceLocked()
    if who.face_at is None or not face_is_fresh(who.face_at, utcnow().timestamp(), window):
        raise FaceVerificationRequired(
            "Verify your face first: these acts need a face check within the last %(minutes)s minutes.",
            params={"minutes": window // 60},
        )


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


def deactivate_staff(account_id: str, reason: str) -> Account:
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


# --- face enrollment and verification (2018 measures Art. 14; 2022 rules) -----------


class FaceMismatch(Forbidden):
    code = "face_mismatch"
    default_message = "The face does not match the physician's enrolled face."


class FaceLocked(Forbidden):
    code = "face_locked"
    default_message = (
        "Face verification is locked after too many consecutive mismatches; an administrator must lift it."
    )


class FaceNotEnrolled(Forbidden):
    code = "face_not_enrolled"
    default_message = "No reference face is enrolled for this physician; ask an administrator to enroll one."


class ImageReplayed(Conflict):
    code = "image_replayed"
    default_message = "This image was already used; take a new picture with the camera."


def _face_config() -> dict[str, Any]:
    from flask import current_app

    return dict(current_app.config)


def face_photo_dir() -> Path:
    """Where reference photos are kept (encrypted): the instance folder, never the web root."""
    from flask import current_app

    configured = current_app.config.get("FACE_PHOTO_DIR") or ""
    path = Path(configured) if configured else Path(current_app.instance_path) / "face_photos"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _require_physician(account: Account) -> None:
    if account.role != Role.PHYSICIAN:
        raise Invalid("Faces are enrolled and checked for physicians only.", code="not_a_physician")


def _used_images(account_id: uuid.UUID) -> list[rules.UsedImage]:
    rows = db.session.execute(select(FaceImage.sha256, FaceImage.dhash).where(FaceImage.account_id == account_id))
    return [rules.UsedImage(sha, int(dh, 16)) for sha, dh in rows]


def _remember_image(account_id: uuid.UUID, prepared: face.Prepared, purpose: str, outcome: str) -> None:
    db.session.add(
        FaceImage(
            account_id=account_id,
            sha256=prepared.sha256,
            dhash=face.hash_hex(prepared.dhash),
            purpose=purpose,
            outcome=outcome,
        )
    )


def face_enrollment(account_id: uuid.UUID) -> FaceEnrollment | None:
    return db.session.get(FaceEnrollment, account_id)


def enroll_face(account: Account, data: bytes) -> FaceEnrollment:
    """Enroll (or replace) a physician's reference photo: exactly one face, else refused.

    The encoding is computed once here and stored encrypted; the photo is written
    encrypted under FACE_PHOTO_DIR. A refused photo leaves nothing behind.
    """
    session = db.session()
    _require_physician(account)
    cfg = _face_config()
    analysis = face.analyse(
        data, face.limits_from(cfg), float(cfg["FACE_MIN_SCORE_RATIO"]), float(cfg["FACE_SURE_SCORE"])
    )
    prepared = analysis.prepared
    filename = f"{account.id.hex}-{secrets.token_hex(8)}.bin"
    target = face_photo_dir() / filename
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(crypto.encrypt(data))
    enrollment = session.get(FaceEnrollment, account.id)
    if enrollment is None:
        enrollment = FaceEnrollment(account_id=account.id, consecutive_mismatches=0)
        session.add(enrollment)
    enrollment.encoding = face.encoding_to_bytes(analysis.encoding)
    enrollment.photo_file = filename
    enrollment.photo_media_type = prepared.media_type
    enrollment.photo_sha256 = prepared.sha256
    enrollment.enrolled_by = audit.current_actor().id
    enrollment.enrolled_at = utcnow()
    _remember_image(account.id, prepared, "enrollment", "enrolled")
    session.flush()
    audit.record(
        session,
        "face.enrolled",
        subject_type="account",
        subject_id=account.id,
        detail={
            "photo_sha256": prepared.sha256,
            "width": prepared.original_size[0],
            "height": prepared.original_size[1],
        },
    )
    return enrollment


def face_photo(account: Account) -> tuple[bytes, str]:
    """The enrolled reference photo (for administrators only) and its media type."""
    enrollment = face_enrollment(account.id)
    if enrollment is None:
        raise NotFound("No face is enrolled for this physician.")
    data = crypto.decrypt((face_photo_dir() / enrollment.photo_file).read_bytes())
    audit.record(db.session(), "face.photo_viewed", subject_type="account", subject_id=account.id)
    return data, enrollment.photo_media_type


def verify_face(account: Account, data: bytes) -> datetime:
    """Compare a live image with the enrolled face; return the time of the successful check.

    Refusals: face_not_enrolled, face_locked (403); not_an_image, no_face, several_faces (422);
    image_too_large (413); image_replayed (409); face_mismatch (403), which counts towards the
    lockout and is kept although the request is refused. The distance goes to the audit trail only.
    """
    session = db.session()
    _require_physician(account)
    cfg = _face_config()
    enrollment = session.get(FaceEnrollment, account.id)
    if enrollment is None:
        raise FaceNotEnrolled()
    if enrollment.locked_at is not None:
        audit.record(session, "face.check_locked", subject_type="account", subject_id=account.id)
        raise FaceLocked(persist=True)
    prepared = face.prepare(data, face.limits_from(cfg))
    earlier = rules.replay_of(
        prepared.sha256, prepared.dhash, _used_images(account.id), int(cfg["FACE_REPLAY_MAX_BITS"])
    )
    if earlier is not None:
        audit.record(
            session,
            "face.replay_refused",
            subject_type="account",
            subject_id=account.id,
            detail={
                "sha256": prepared.sha256,
                "same_bytes": earlier.sha256 == prepared.sha256,
                "dhash_bits": rules.hamming(earlier.dhash, prepared.dhash),
            },
        )
        raise ImageReplayed(persist=True)
    box = face.one_face(prepared.pixels, float(cfg["FACE_MIN_SCORE_RATIO"]), float(cfg["FACE_SURE_SCORE"]))
    encoding = face.encode(prepared.pixels, box)
    reference = face.encoding_from_bytes(enrollment.encoding)
    distance = face.distance(encoding, reference)
    tolerance = float(cfg["FACE_TOLERANCE"])
    matched = rules.face_matches(distance, tolerance)
    state = rules.after_face_attempt(
        rules.LockoutState(enrollment.consecutive_mismatches, False), matched, int(cfg["FACE_MAX_MISMATCHES"])
    )
    now = utcnow()
    enrollment.consecutive_mismatches = state.consecutive_mismatches
    if matched:
        enrollment.last_verified_at = now
    if state.locked:
        enrollment.locked_at = now
    _remember_image(account.id, prepared, "check", "match" if matched else "mismatch")
    session.flush()
    audit.record(
        session,
        "face.verified" if matched else "face.mismatch",
        subject_type="account",
        subject_id=account.id,
        detail={
            "distance": round(distance, 4),
            "tolerance": tolerance,
            "outcome": "match" if matched else "mismatch",
            "consecutive_mismatches": state.consecutive_mismatches,
            "sha256": prepared.sha256,
        },
    )
    if state.locked:
        audit.record(
            session,
            "face.locked",
            subject_type="account",
            subject_id=account.id,
            detail={"consecutive_mismatches": state.consecutive_mismatches},
        )
    if not matched:
        message = FaceMismatch.default_message
        if state.locked:
            message += " " + FaceLocked.default_message
        raise FaceMismatch(message, persist=True)
    return now


def face_locked(account_id: object) -> bool:
    key = as_uuid(account_id)
    enrollment = db.session.get(FaceEnrollment, key) if key is not None else None
    return enrollment is not None and enrollment.locked_at is not None


def unlock_face(account: Account) -> None:
    """An administrator lifts a face lockout (and the mismatch count starts again)."""
    session = db.session()
    enrollment = session.get(FaceEnrollment, account.id)
    if enrollment is None:
        raise NotFound("No face is enrolled for this physician.")
    was_locked = enrollment.locked_at is not None
    enrollment.locked_at = None
    enrollment.consecutive_mismatches = 0
    session.flush()
    audit.record(
        session, "face.unlocked", subject_type="account", subject_id=account.id, detail={"was_locked": was_locked}
    )


def enroll_demo_physicians(entries: list[dict[str, Any]]) -> None:
    """Demo world: enroll each demo physician (dicts with `id`) with a real photo of a
    different real person shipped by an installed package, write that photo into the
    instance folder and put its absolute path in the entry as `face_image`."""
    import io

    from flask import current_app
    from matplotlib import cbook
    from PIL import Image
    from skimage import data as skdata

    def astronaut() -> bytes:
        buf = io.BytesIO()
        Image.fromarray(skdata.astronaut()).save(buf, "JPEG", quality=92)
        return buf.getvalue()

    def grace_hopper() -> bytes:
        return Path(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))).read_bytes()

    photos = [("eileen_collins", astronaut), ("grace_hopper", grace_hopper)]
    folder = Path(current_app.instance_path) / "demo_faces"
    folder.mkdir(parents=True, exist_ok=True)
    for entry, (person, load) in zip(entries, photos, strict=False):
        data = load()
        path = folder / f"{entry['username']}-{person}.jpg"
        path.write_bytes(data)
        enroll_face(get_account(entry["id"]), data)
        entry["face_image"] = str(path.resolve())
        # The enrolled photo itself is refused as a replay (409 image_replayed); a different
        # framing of the same person is what a demo client sends to pass the face check.
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            probe = img.convert("RGB").crop((w // 10, h // 12, w - w // 8, h - h // 10))
            probe = probe.resize((probe.width * 3 // 4, probe.height * 3 // 4))
            buf = io.BytesIO()
            probe.save(buf, "JPEG", quality=85)
        probe_path = folder / f"{entry['username']}-{person}-probe.jpg"
        probe_path.write_bytes(buf.getvalue())
        entry["face_probe_image"] = str(probe_path.resolve())


def set_on_duty(account_id: str | uuid.UUID, on_duty: bool) -> StaffProfile:
    """A physician starts or ends taking online visits (the directory shows it; routing respects it)."""
    account = get_account(account_id)
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
