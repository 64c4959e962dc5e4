"""POST /api/v1/auth/face and the administrators' face endpoints (API.md § Identity)."""

from __future__ import annotations

import io
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jose import jwt
from PIL import Image
from sqlalchemy import func, select, text

from clinic.core.audit import Actor, AuditEntry, acting_as
from clinic.core.db import db, unit_of_work
from clinic.core.principal import Principal
from identity import face_services, services, tokens
from identity.models import Account, FaceEnrollment, FaceImage, Role
from tests.support import faces as F
from tests.support import factories as f
from tests.support.answers import refusal


def count(model: type) -> int:
    return int(db.session.scalar(select(func.count()).select_from(model)) or 0)


def enrolled_physician(photo: bytes | None = None) -> Account:
    doctor = f.staff(Role.PHYSICIAN)
    with acting_as(Actor(None, "test")), unit_of_work():
        face_services.enroll_face(services.get_account(doctor.id), photo or F.fr_images()["obama"])
    return doctor


def post_face(client: FlaskClient, tok: str, data: bytes, name: str = "capture.jpg") -> tuple[int, dict]:
    resp = client.post(
        "/api/v1/auth/face",
        data={"image": (io.BytesIO(data), name)},
        headers=f.auth(tok),
        content_type="multipart/form-data",
    )
    return resp.status_code, resp.get_json()


def audit_actions(prefix: str = "face.") -> list[AuditEntry]:
    return list(
        db.session.scalars(select(AuditEntry).where(AuditEntry.action.like(prefix + "%")).order_by(AuditEntry.seq))
    )


def test_a_matching_face_gives_a_token_carrying_the_check_time(client: FlaskClient, ctx: Flask) -> None:
    doctor = enrolled_physician()
    tok = f.token(client, doctor.username)
    before = int(time.time())
    status, body = post_face(client, tok, F.fr_images()["obama2"])
    assert status == 200, body
    claims = jwt.get_unverified_claims(body["access_token"])
    assert before - 1 <= claims["face_at"] <= int(time.time()) + 1
    assert claims["sub"] == str(doctor.id)
    assert "distance" not in str(body)
    # the new token passes the freshness gate; the old one does not
    face_services.require_fresh_face(tokens.load_principal(body["access_token"]))
    with pytest.raises(face_services.FaceVerificationRequired):
        face_services.require_fresh_face(tokens.load_principal(tok))
    entry = audit_actions("face.verified")[-1]
    assert entry.detail["outcome"] == "match" and 0 <= entry.detail["distance"] < 0.55
    # the token works on the API
    assert client.get("/api/v1/me", headers=f.auth(body["access_token"])).status_code == 200


def test_another_person_is_a_mismatch_and_the_distance_stays_in_the_audit(client: FlaskClient, ctx: Flask) -> None:
    doctor = enrolled_physician()
    tok = f.token(client, doctor.username)
    status, body = post_face(client, tok, F.fr_images()["biden"])
    assert status == 403 and body["error"]["code"] == "face_mismatch"
    assert "distance" not in str(body) and "0." not in body["error"]["message"]
    entry = audit_actions("face.mismatch")[-1]
    assert entry.detail["distance"] > 0.55 and entry.detail["consecutive_mismatches"] == 1
    assert db.session.get(FaceEnrollment, doctor.id).consecutive_mismatches == 1  # kept although refused


def test_five_consecutive_mismatches_lock_out_until_an_administrator_lifts_it(client: FlaskClient, ctx: Flask) -> None:
    doctor = enrolled_physician()
    admin = f.staff(Role.ADMIN)
    tok = f.token(client, doctor.username)
    others = [F.fr_images()["biden"], F.astronaut(), F.grace_hopper(), F.insightface_images()["tom_hanks"]]
    others.append(F.cropped(F.fr_images()["biden"], 0.3))
    for i, image in enumerate(others, start=1):
        status, body = post_face(client, tok, image)
        assert (status, body["error"]["code"]) == (403, "face_mismatch"), i
    assert db.session.get(FaceEnrollment, doctor.id).locked_at is not None
    # now even the right face is refused
    status, body = post_face(client, tok, F.fr_images()["obama2"])
    assert (status, body["error"]["code"]) == (403, "face_locked")
    assert [e.action for e in audit_actions("face.locked")] == ["face.locked"]
    # a token with a fresh face check no longer passes the gate either
    with pytest.raises(face_services.FaceLocked):
        face_services.require_fresh_face(Principal(account_id=doctor.id, role="physician", face_at=time.time()))
    # the physician cannot lift it; an administrator can
    url = f"/api/v1/admin/physicians/{doctor.id}/face/unlock"
    assert refusal(client.post(url, headers=f.auth(tok))) == (403, "forbidden")
    resp = client.post(url, headers=f.auth(f.token(client, admin.username)))
    assert resp.status_code == 200 and resp.get_json()["locked"] is False
    status, body = post_face(client, tok, F.fr_images()["obama2"])
    assert status == 200, body


def test_a_match_resets_the_mismatch_count(client: FlaskClient, ctx: Flask) -> None:
    doctor = enrolled_physician()
    tok = f.token(client, doctor.username)
    assert post_face(client, tok, F.fr_images()["biden"])[0] == 403
    assert post_face(client, tok, F.fr_images()["obama3"])[0] == 200
    assert db.session.get(FaceEnrollment, doctor.id).consecutive_mismatches == 0


@pytest.mark.parametrize(
    "replay",
    [
        lambda d: d,  # the same bytes
        lambda d: F.reencoded(d, 70),  # the same pixels re-encoded
        lambda d: F.resized(d, 0.5),  # the same pixels, smaller
        lambda d: F.relit(d, 1.2),  # the same pixels, brighter
    ],
    ids=["same-bytes", "reencoded", "resized", "relit"],
)
def test_an_image_already_used_is_refused_as_replayed(client: FlaskClient, ctx: Flask, replay) -> None:  # type: ignore[no-untyped-def]
    doctor = enrolled_physician()
    tok = f.token(client, doctor.username)
    frame = F.fr_images()["obama2"]
    assert post_face(client, tok, frame)[0] == 200
    status, body = post_face(client, tok, replay(frame))
    assert (status, body["error"]["code"]) == (409, "image_replayed")
    # the enrolled photo itself cannot be replayed either
    status, body = post_face(client, tok, replay(F.fr_images()["obama"]))
    assert (status, body["error"]["code"]) == (409, "image_replayed")
    assert len(audit_actions("face.replay_refused")) == 2


def test_no_face_and_several_faces_are_422_and_store_nothing(client: FlaskClient, ctx: Flask) -> None:
    from skimage import data

    doctor = enrolled_physician()
    tok = f.token(client, doctor.username)
    images_before = count(FaceImage)
    status, body = post_face(client, tok, F.jpeg(Image.fromarray(data.coffee())))
    assert (status, body["error"]["code"]) == (422, "no_face")
    status, body = post_face(client, tok, F.insightface_images()["t1"])
    assert (status, body["error"]["code"]) == (422, "several_faces")
    status, body = post_face(client, tok, F.side_by_side(F.fr_images()["obama2"], F.fr_images()["biden"]))
    assert (status, body["error"]["code"]) == (422, "several_faces")
    assert count(FaceImage) == images_before
    assert db.session.get(FaceEnrollment, doctor.id).consecutive_mismatches == 0


def _png_bomb() -> bytes:
    return F.png(Image.new("L", (7_000, 7_000)))


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda: b"this is not an image at all", 422, "not_an_image"),
        (lambda: F.grace_hopper()[:20_000], 422, "not_an_image"),  # truncated
        (_png_bomb, 413, "image_too_large"),
        (lambda: b"\xff\xd8\xff" + b"\0" * (50 * 1024 * 1024), 413, "too_large"),  # 50 MB upload
    ],
    ids=["not-an-image", "truncated", "png-bomb", "50MB"],
)
def test_bad_uploads_are_clear_4xx_and_store_nothing(client: FlaskClient, ctx: Flask, make, status, code) -> None:  # type: ignore[no-untyped-def]
    doctor = enrolled_physician()
    tok = f.token(client, doctor.username)
    images_before = count(FaceImage)
    got, body = post_face(client, tok, make())
    assert (got, body["error"]["code"]) == (status, code)
    assert count(FaceImage) == images_before
    assert db.session.get(FaceEnrollment, doctor.id).consecutive_mismatches == 0
    # the worker is still fine
    assert post_face(client, tok, F.fr_images()["obama2"])[0] == 200


def test_missing_image_part_and_wrong_roles(client: FlaskClient, ctx: Flask) -> None:
    doctor = enrolled_physician()
    tok = f.token(client, doctor.username)
    resp = client.post("/api/v1/auth/face", data={}, headers=f.auth(tok), content_type="multipart/form-data")
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid"
    pharmacist = f.staff(Role.PHARMACIST)
    status, body = post_face(client, f.token(client, pharmacist.username), F.fr_images()["obama2"])
    assert (status, body["error"]["code"]) == (403, "forbidden")
    unenrolled = f.staff(Role.PHYSICIAN)
    status, body = post_face(client, f.token(client, unenrolled.username), F.fr_images()["obama2"])
    assert (status, body["error"]["code"]) == (403, "face_not_enrolled")
    assert refusal(client.post("/api/v1/auth/face")) == (401, "unauthenticated")


def test_administrator_enrolls_exactly_one_face_and_only_they_see_the_photo(client: FlaskClient, ctx: Flask) -> None:
    doctor = f.staff(Role.PHYSICIAN)
    admin_tok = f.token(client, f.staff(Role.ADMIN).username)
    url = f"/api/v1/admin/physicians/{doctor.id}/face"

    def enroll(data: bytes, tok: str = admin_tok) -> tuple[int, dict]:
        resp = client.post(url, data={"image": (io.BytesIO(data), "p.jpg")}, headers=f.auth(tok))
        return resp.status_code, resp.get_json()

    status, body = enroll(F.insightface_images()["t1"])
    assert (status, body["error"]["code"]) == (422, "several_faces")
    status, body = enroll(F.jpeg(Image.new("RGB", (400, 300), (200, 180, 160))))
    assert (status, body["error"]["code"]) == (422, "no_face")
    assert count(FaceEnrollment) == 0 and count(FaceImage) == 0
    doctor_tok = f.token(client, doctor.username)
    assert enroll(F.grace_hopper(), doctor_tok)[0] == 403
    status, body = enroll(F.grace_hopper())
    assert status == 201, body
    row = db.session.get(FaceEnrollment, doctor.id)
    # the encoding is encrypted at rest, the photo too, and not under the web root
    raw = bytes(db.session.execute(text("SELECT encoding FROM face_enrollments")).scalar_one())
    assert len(row.encoding) == 128 * 8 and len(raw) > 1024 and row.encoding not in raw
    stored = face_services.face_photo_dir() / row.photo_file
    assert stored.exists() and F.grace_hopper()[:64] not in stored.read_bytes()
    assert ctx.static_folder and not str(stored.resolve()).startswith(str(ctx.static_folder))
    photo = client.get(url + "/photo", headers=f.auth(admin_tok))
    assert photo.status_code == 200 and photo.data == F.grace_hopper() and photo.mimetype == "image/jpeg"
    assert photo.headers["Cache-Control"] == "no-store" and photo.headers["X-Content-Type-Options"] == "nosniff"
    assert refusal(client.get(url + "/photo", headers=f.auth(doctor_tok))) == (403, "forbidden")
    assert client.get(url, headers=f.auth(admin_tok)).get_json()["enrolled"] is True
    # a patient's id is not a physician
    patient = f.patient()
    assert refusal(
        client.post(
            f"/api/v1/admin/physicians/{patient.account.id}/face",
            data={"image": (io.BytesIO(F.grace_hopper()), "p.jpg")},
            headers=f.auth(admin_tok),
        )
    ) == (404, "not_found")


def test_cli_enrolls_and_unlocks(ctx: Flask, tmp_path) -> None:  # type: ignore[no-untyped-def]
    doctor = f.staff(Role.PHYSICIAN)
    photo = tmp_path / "dr.jpg"
    photo.write_bytes(F.grace_hopper())
    runner = ctx.test_cli_runner()
    result = runner.invoke(args=["face", "enroll", "--username", doctor.username, str(photo)])
    assert result.exit_code == 0, result.output
    assert db.session.get(FaceEnrollment, doctor.id) is not None
    group = tmp_path / "group.jpg"
    group.write_bytes(F.insightface_images()["t1"])
    result = runner.invoke(args=["face", "enroll", "--username", doctor.username, str(group)])
    assert result.exit_code != 0 and "several_faces" in result.output
    with unit_of_work() as s:
        s.get(FaceEnrollment, doctor.id).locked_at = services.utcnow()  # type: ignore[union-attr]
    result = runner.invoke(args=["face", "unlock", "--username", doctor.username])
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    assert db.session.get(FaceEnrollment, doctor.id).locked_at is None
