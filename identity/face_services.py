"""Physicians' face use cases: enrollment of the reference photo, the live check with its
lockout and replay refusal, and whether a check is fresh enough for an act (2018 measures
Art. 14; 2022 rules). One function each; they flush, audit and never commit.

The image handling and the face engine (face_recognition/dlib) are `identity.face`; the
pure decisions (match, lockout, replay) are `identity.rules`.
"""

from __future__ import annotations

import io
import os
import secrets
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import select

from clinic.core import audit, crypto
from clinic.core.config import settings
from clinic.core.db import db, utcnow
from clinic.core.errors import Conflict, Forbidden, Invalid, NotFound
from clinic.core.principal import Principal
from identity import face, rules
from identity.models import Account, FaceEnrollment, FaceImage, Role
from identity.services import get_account


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


def face_photo_dir() -> Path:
    """Where reference photos are kept (encrypted): FACE_PHOTO_DIR, else the instance
    folder; never the web root."""
    configured = settings().FACE_PHOTO_DIR
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
    cfg = settings()
    analysis = face.analyse(data, face.limits_from(cfg), cfg.FACE_MIN_SCORE_RATIO, cfg.FACE_SURE_SCORE)
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
    cfg = settings()
    enrollment = session.get(FaceEnrollment, account.id)
    if enrollment is None:
        raise FaceNotEnrolled()
    if enrollment.locked_at is not None:
        audit.record(session, "face.check_locked", subject_type="account", subject_id=account.id)
        raise FaceLocked(persist=True)
    prepared = face.prepare(data, face.limits_from(cfg))
    earlier = rules.replay_of(prepared.sha256, prepared.dhash, _used_images(account.id), cfg.FACE_REPLAY_MAX_BITS)
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
    box = face.one_face(prepared.pixels, cfg.FACE_MIN_SCORE_RATIO, cfg.FACE_SURE_SCORE)
    encoding = face.encode(prepared.pixels, box)
    reference = face.encoding_from_bytes(enrollment.encoding)
    distance = face.distance(encoding, reference)
    tolerance = cfg.FACE_TOLERANCE
    matched = rules.face_matches(distance, tolerance)
    state = rules.after_face_attempt(
        rules.LockoutState(enrollment.consecutive_mismatches, False), matched, cfg.FACE_MAX_MISMATCHES
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


def face_locked(account_id: uuid.UUID) -> bool:
    """Is the physician's face check locked (too many consecutive mismatches)?"""
    enrollment = db.session.get(FaceEnrollment, account_id)
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
        enroll_face(get_account(uuid.UUID(str(entry["id"]))), data)
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
