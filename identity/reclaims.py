"""Reclaiming an ID number registered by someone else (issue 21 item 11).

One person holds one account of their own (the real-name rule, a unique index on the
ID number of each account's "self"), so whoever registers someone else's ID number first
blocks its owner. The owner's documented path back:

1. `start`: name, ID number, a NEW mobile number, the password of the account to come,
   and optionally a photo of the ID card. A code goes to the new phone. The answer is the
   same whether the ID number is registered or not, and never says who holds it.
2. `confirm_code`: the new phone is confirmed; the request waits for the staff check
   (same neutral answer: "accepted; staff will check and tell you by SMS").
3. `approve` (an administrator): the real-name patient record moves to a new account on
   the confirmed phone (with it every medical record, which hangs on the person, not the
   account); every session and token of the old account ends; the claimant (and the old
   account) are told. `reject`: the claimant is told why; nothing else changes.

Every step is audited naming who acted. The notification centre sits above identity, so
the factory registers who tells people (`set_teller`); identity imports nothing upward.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from flask import Flask, current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from clinic.core import audit, crypto, limits, storage
from clinic.core.config import settings
from clinic.core.crypto import lookup_hash
from clinic.core.db import db, utcnow
from clinic.core.errors import Conflict, Invalid, NotFound
from clinic.core.principal import Principal
from identity import face, rules
from identity.login import check_password_policy, end_sessions, hash_password
from identity.models import Account, IdentityReclaim, Patient, ReclaimStatus, Relation, Role
from identity.otp import verifier
from identity.services import BadCode, _flush_or, _parse_id, send_code


def N_(message: str) -> str:
    """Marks a string for the catalog (`make translations`); translated where it is shown."""
    return message


ACCEPTED = N_("Accepted. Staff will check your request and tell you the outcome by SMS.")
Teller = Callable[[Session, IdentityReclaim], None]
TELLER = "identity.reclaim_teller"


PHONE_TAKEN = N_(
    "The claimant's new mobile number is registered to an account now; reject the request and ask them to apply "
    "again with a number of their own that is not registered."
)


class PhoneTaken(Conflict):
    code = "phone_taken"
    default_message = PHONE_TAKEN


def set_teller(app: Flask, teller: Teller) -> None:
    """Who tells the claimant and the old account of a decision (the notification centre)."""
    app.extensions[TELLER] = teller


RecordsFollow = Callable[[Session, uuid.UUID, uuid.UUID, uuid.UUID], int]
RECORDS_FOLLOW = "identity.records_follow_patient"


def add_records_follow(app: Flask, kind: str, move: RecordsFollow) -> None:
    """Records a domain keeps per account for a patient (visits, prescriptions) move with the
    patient to the new account, so the old account no longer reads them and the owner does.
    `move(session, patient_id, old_account_id, new_account_id)` answers how many moved."""
    app.extensions.setdefault(RECORDS_FOLLOW, {})[kind] = move


def _move_records(session: Session, patient_id: uuid.UUID, old: uuid.UUID, new: uuid.UUID) -> dict[str, int]:
    movers: dict[str, RecordsFollow] = current_app.extensions.get(RECORDS_FOLLOW, {})
    return {kind: move(session, patient_id, old, new) for kind, move in sorted(movers.items())}


def _tell(session: Session, reclaim: IdentityReclaim) -> None:
    teller: Teller | None = current_app.extensions.get(TELLER)
    if teller is not None:
        teller(session, reclaim)


def _mask_phone(phone_e164: str) -> str:
    digits = phone_e164.removeprefix("+86")
    return digits[:3] + "****" + digits[-4:]


def _photo_limits() -> face.Limits:
    cfg = settings()
    return face.Limits(
        max_bytes=cfg.RECLAIM_PHOTO_MAX_BYTES, max_pixels=cfg.FACE_MAX_PIXELS, max_side=cfg.FACE_DETECT_MAX_SIDE
    )


def _load(reclaim_id: uuid.UUID, *, lock: bool = False) -> IdentityReclaim:
    query = select(IdentityReclaim).where(IdentityReclaim.id == reclaim_id)
    if lock:
        query = query.with_for_update()
    reclaim = db.session.scalars(query).first()
    if reclaim is None:
        raise NotFound("No such request.")
    return reclaim


def start(
    name: str, id_number: str, phone: str, password: str, photo: bytes | None, address: str | None
) -> IdentityReclaim:
    """A claimant asks for their ID number back; a code goes to the new phone.

    Refusals name the rule (invalid_id_number, invalid_phone, weak_password, invalid,
    not_an_image, image_too_large, rate_limited); none depends on whether the ID number is
    registered. Limits: RECLAIM_ADDRESS_RATE_LIMIT per address, RECLAIM_ID_RATE_LIMIT per
    ID number, and the SMS limit of the phone; refused requests spend none of them.
    """
    session = db.session()
    address = address or "-"
    limits.test("RECLAIM_ADDRESS_RATE_LIMIT", "reclaim-address", address)
    name = " ".join(name.split())
    if not name:
        raise Invalid("Enter your real name as on your ID card.", field="name")
    person = _parse_id(id_number)
    try:
        phone_e164 = rules.normalize_phone(phone)
    except ValueError as exc:
        raise Invalid(str(exc), code="invalid_phone") from None
    check_password_policy(password)
    id_hash = lookup_hash(person.number)
    limits.test("RECLAIM_ID_RATE_LIMIT", "reclaim-id", id_hash)
    photo_file = media_type = None
    if photo:
        prepared = face.prepare(photo, _photo_limits())  # type, size and pixels checked; bounded decode
        media_type = prepared.media_type
        photo_file = storage.save("reclaims", crypto.encrypt(photo), "bin")  # removed again on rollback
    reclaim = IdentityReclaim(
        status=ReclaimStatus.AWAITING_CODE,
        name=name,
        id_number=person.number,
        id_number_hash=id_hash,
        phone=phone_e164,
        phone_hash=lookup_hash(phone_e164),
        password_hash=hash_password(password),
        photo_file=photo_file,
        photo_media_type=media_type,
    )
    session.add(reclaim)
    session.flush()
    send_code(phone_e164)
    audit.record(
        session,
        "identity.reclaim_requested",
        subject_type="identity_reclaim",
        subject_id=reclaim.id,
        detail={"id_number": reclaim.masked_id_number, "phone": _mask_phone(phone_e164), "photo": bool(photo)},
    )
    audit.record(session, "phone.code_sent", subject_type="identity_reclaim", subject_id=reclaim.id)
    limits.hit("RECLAIM_ADDRESS_RATE_LIMIT", "reclaim-address", address)
    limits.hit("RECLAIM_ID_RATE_LIMIT", "reclaim-id", id_hash)
    return reclaim


def _awaiting_code(reclaim_id: uuid.UUID) -> IdentityReclaim:
    reclaim = _load(reclaim_id)
    if reclaim.status != ReclaimStatus.AWAITING_CODE:
        raise Conflict("This request was already confirmed; staff will tell you the outcome by SMS.", code="conflict")
    return reclaim


def resend_code(reclaim_id: uuid.UUID) -> None:
    reclaim = _awaiting_code(reclaim_id)
    send_code(reclaim.phone)
    audit.record(db.session(), "phone.code_sent", subject_type="identity_reclaim", subject_id=reclaim.id)


def confirm_code(reclaim_id: uuid.UUID, code: str) -> IdentityReclaim:
    """The claimant proves the new phone is theirs; the request goes to the staff check."""
    session = db.session()
    reclaim = _awaiting_code(reclaim_id)
    if not verifier().check(reclaim.phone, code.strip()):
        audit.record(session, "identity.reclaim_code_rejected", subject_type="identity_reclaim", subject_id=reclaim.id)
        raise BadCode(persist=True)
    reclaim.status = ReclaimStatus.SUBMITTED
    reclaim.code_confirmed_at = utcnow()
    session.flush()
    audit.record(session, "identity.reclaim_code_confirmed", subject_type="identity_reclaim", subject_id=reclaim.id)
    return reclaim


# --- the staff check ---------------------------------------------------------------------


def submitted() -> list[IdentityReclaim]:
    """Requests waiting for a staff member, oldest first."""
    return list(
        db.session.scalars(
            select(IdentityReclaim)
            .where(IdentityReclaim.status == ReclaimStatus.SUBMITTED)
            .order_by(IdentityReclaim.code_confirmed_at)
        )
    )


def decided(limit: int = 20) -> list[IdentityReclaim]:
    return list(
        db.session.scalars(
            select(IdentityReclaim)
            .where(IdentityReclaim.status.in_((ReclaimStatus.APPROVED, ReclaimStatus.REJECTED)))
            .order_by(IdentityReclaim.decided_at.desc())
            .limit(limit)
        )
    )


def holder(reclaim: IdentityReclaim) -> Patient | None:
    """The real-name record of this ID number as someone's own (None: nobody registered it)."""
    return db.session.scalars(
        select(Patient).where(Patient.id_number_hash == reclaim.id_number_hash, Patient.relation == Relation.SELF)
    ).first()


def phone_in_use(reclaim: IdentityReclaim) -> bool:
    """Is the claimant's new number an account's login or phone now (approval would fail)?"""
    return (
        db.session.scalars(
            select(Account.id).where((Account.phone_hash == reclaim.phone_hash) | (Account.username == reclaim.phone))
        ).first()
        is not None
    )


def _submitted(reclaim_id: uuid.UUID) -> IdentityReclaim:
    reclaim = _load(reclaim_id, lock=True)
    if reclaim.status != ReclaimStatus.SUBMITTED:
        raise Conflict("This request is not waiting for a decision.", code="conflict")
    return reclaim


def approve(who: Principal, reclaim_id: uuid.UUID) -> IdentityReclaim:
    """The administrator `who` gives the ID number back to the claimant: a new account on the
    confirmed phone takes the real-name record; the old account loses it and every session it had."""
    session = db.session()
    reclaim = _submitted(reclaim_id)
    if phone_in_use(reclaim):
        raise PhoneTaken()
    person = _parse_id(reclaim.id_number)
    account = Account(
        username=reclaim.phone,
        password_hash=reclaim.password_hash,
        role=Role.PATIENT,
        display_name=reclaim.name,
        phone=reclaim.phone,
        phone_hash=reclaim.phone_hash,
        phone_verified_at=reclaim.code_confirmed_at,
    )
    session.add(account)
    _flush_or(PhoneTaken())  # registered meanwhile
    patient = holder(reclaim)
    old: Account | None = None
    if patient is not None:
        old = patient.account
        patient.account = account  # leaves old.patients, joins account.patients
        patient.name = reclaim.name  # the name the staff checked against the ID card
    else:  # nobody held it: the claimant gets it as at a registration
        patient = Patient(
            account_id=account.id,
            name=reclaim.name,
            id_number=person.number,
            id_number_hash=reclaim.id_number_hash,
            birth_date=person.birth_date,
            sex=person.sex,
            relation=Relation.SELF,
        )
        session.add(patient)
    _flush_or(Conflict("This ID number changed hands meanwhile; open the request again.", code="conflict"))
    moved = _move_records(session, patient.id, old.id, account.id) if old is not None else {}
    reclaim.status = ReclaimStatus.APPROVED
    reclaim.decided_at = utcnow()
    reclaim.decided_by = who.account_id
    reclaim.old_account_id = old.id if old is not None else None
    reclaim.new_account_id = account.id
    reclaim.patient_id = patient.id
    reclaim.password_hash = ""
    session.flush()
    audit.record(
        session,
        "identity.reclaim_approved",
        subject_type="identity_reclaim",
        subject_id=reclaim.id,
        detail={
            "patient_id": str(patient.id),
            "old_account_id": str(old.id) if old is not None else None,
            "new_account_id": str(account.id),
        },
    )
    audit.record(
        session,
        "patient.account_changed",
        subject_type="patient",
        subject_id=patient.id,
        detail={
            "from_account_id": str(old.id) if old is not None else None,
            "to_account_id": str(account.id),
            "reason": "identity_reclaimed",
            "reclaim_id": str(reclaim.id),
            "records_moved": moved,
        },
    )
    audit.record(session, "patient.registered", subject_type="account", subject_id=account.id)
    if old is not None:
        end_sessions(old, "identity_reclaimed")
    _tell(session, reclaim)
    return reclaim


def reject(who: Principal, reclaim_id: uuid.UUID, reason: str) -> IdentityReclaim:
    """The administrator `who` turns the request down, saying why (the claimant reads it);
    nothing else changes."""
    session = db.session()
    reason = " ".join(reason.split())
    if not 2 <= len(reason) <= 500:
        raise Invalid("Say why the request is rejected (2 to 500 characters); the claimant reads it.", field="reason")
    reclaim = _submitted(reclaim_id)
    reclaim.status = ReclaimStatus.REJECTED
    reclaim.decided_at = utcnow()
    reclaim.decided_by = who.account_id
    reclaim.reason = reason
    reclaim.password_hash = ""
    session.flush()
    audit.record(
        session,
        "identity.reclaim_rejected",
        subject_type="identity_reclaim",
        subject_id=reclaim.id,
        detail={"reason": reason},
    )
    _tell(session, reclaim)
    return reclaim


def get(reclaim_id: uuid.UUID) -> IdentityReclaim:
    return _load(reclaim_id)


def photo(reclaim_id: uuid.UUID) -> tuple[bytes, str]:
    """The ID card photo the claimant sent (administrators only), audited."""
    reclaim = _load(reclaim_id)
    if not reclaim.photo_file:
        raise NotFound("No photo was sent with this request.")
    data = crypto.decrypt(storage.load(reclaim.photo_file))
    audit.record(db.session(), "identity.reclaim_photo_viewed", subject_type="identity_reclaim", subject_id=reclaim.id)
    return data, reclaim.photo_media_type or "application/octet-stream"
