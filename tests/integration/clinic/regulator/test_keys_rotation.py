"""Encryption at rest: no clear text in the raw columns; rotating to a new key lets the
old key go; lookups by keyed hash keep working; a new lookup key is applied by re-hashing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.fernet import Fernet
from flask import Flask
from sqlalchemy import text

from clinic.core import crypto
from clinic.core.audit import Actor, acting_as
from clinic.core.crypto import lookup_hash
from clinic.core.db import db, unit_of_work
from clinic.core.errors import Conflict
from identity import face_services, services
from identity.models import Account, FaceEnrollment, Patient, Role
from tests.support import factories as f

ENCODING = bytes(range(256)) * 4  # stands for a 128-d float64 face encoding (1024 bytes)
PHOTO = b"\xff\xd8\xff\xe0 reference face photo bytes"


@pytest.fixture
def keys(ctx: Flask) -> Iterator[dict[str, str]]:
    """The app's keys, restored after the test whatever it configured."""
    original = {"field": ctx.config["FIELD_KEYS"], "lookup": ctx.config["LOOKUP_KEY"]}
    yield original
    crypto.configure(original["field"], original["lookup"])


def raw(sql: str, **params: Any) -> Any:
    return db.session.execute(text(sql), params).scalar_one()


def people(ctx: Flask) -> dict[str, Any]:
    reg = f.patient("李四")
    physician = f.staff(Role.PHYSICIAN)
    with unit_of_work():
        db.session.add(
            FaceEnrollment(
                account_id=physician.id,
                encoding=ENCODING,
                photo_file="p.bin",
                photo_media_type="image/jpeg",
                photo_sha256="0" * 64,
                consecutive_mismatches=0,
            )
        )
    photo = face_services.face_photo_dir() / "p.bin"
    photo.write_bytes(crypto.encrypt(PHOTO))
    return {"reg": reg, "physician": physician, "photo": photo}


def read_back(world: dict[str, Any]) -> tuple[str, str | None, bytes, bytes]:
    db.session.expire_all()
    patient = db.session.get(Patient, world["reg"].patient.id)
    account = db.session.get(Account, world["reg"].account.id)
    enrollment = db.session.get(FaceEnrollment, world["physician"].id)
    assert patient is not None and account is not None and enrollment is not None
    return patient.id_number, account.phone, enrollment.encoding, crypto.decrypt(world["photo"].read_bytes())


def test_raw_columns_hold_no_clear_text(ctx: Flask, keys: dict[str, str]) -> None:
    world = people(ctx)
    reg = world["reg"]
    id_raw = bytes(raw("SELECT id_number FROM patients WHERE name = :n", n="李四"))
    phone_raw = bytes(raw("SELECT phone FROM accounts WHERE username = :u", u=reg.account.username))
    enc_raw = bytes(raw("SELECT encoding FROM face_enrollments"))
    assert reg.patient.id_number.encode() not in id_raw and reg.patient.id_number[-6:].encode() not in id_raw
    assert reg.account.phone.encode() not in phone_raw and reg.account.phone[-8:].encode() not in phone_raw
    assert ENCODING[:32] not in enc_raw
    assert PHOTO not in world["photo"].read_bytes()
    # Fernet tokens, readable with the configured key only
    assert crypto.decrypt(id_raw).decode() == reg.patient.id_number
    with pytest.raises(Exception):  # noqa: B017 - any key but ours fails
        Fernet(Fernet.generate_key()).decrypt(id_raw)
    # the lookup hash is keyed: not the plain SHA-256 of the number
    import hashlib

    stored_hash = raw("SELECT id_number_hash FROM patients WHERE name = :n", n="李四")
    assert stored_hash == lookup_hash(reg.patient.id_number)
    assert stored_hash != hashlib.sha256(reg.patient.id_number.encode()).hexdigest()


def test_rotate_then_drop_the_old_key(ctx: Flask, keys: dict[str, str]) -> None:
    world = people(ctx)
    before = read_back(world)
    old_raw = bytes(raw("SELECT id_number FROM patients WHERE name = :n", n="李四"))
    new_key = ctx.test_cli_runner().invoke(args=["keys", "generate"]).output.strip()
    assert Fernet(new_key.encode())

    crypto.configure(f"{new_key},{keys['field']}", keys["lookup"])  # the new key in front
    result = ctx.test_cli_runner().invoke(args=["keys", "rotate", "--batch-size", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["rotated"]["patients"] >= 1 and summary["rotated"]["face_enrollments"] == 1
    assert summary["files"] == 1

    new_raw = bytes(raw("SELECT id_number FROM patients WHERE name = :n", n="李四"))
    assert new_raw != old_raw
    with pytest.raises(Exception):  # noqa: B017 - the old key alone no longer reads it
        Fernet(keys["field"].encode()).decrypt(new_raw)

    crypto.configure(new_key, keys["lookup"])  # the old key removed
    assert read_back(world) == before

    # lookups by keyed hash still work: the same ID number or phone is still found
    with acting_as(Actor(None, "test")), pytest.raises(Conflict), unit_of_work():
        services.register_patient("李四", world["reg"].patient.id_number, "13900000001", f.PASSWORD)
    with acting_as(Actor(None, "test")), pytest.raises(Conflict), unit_of_work():
        services.register_patient(
            "王五", f.id_number(__import__("datetime").date(1990, 1, 1)), world["reg"].account.phone, f.PASSWORD
        )


def test_without_rotation_removing_the_old_key_breaks_reads(ctx: Flask, keys: dict[str, str]) -> None:
    """The control for the test above: rotation is what makes dropping the old key safe."""
    world = people(ctx)
    crypto.configure(Fernet.generate_key().decode(), keys["lookup"])
    with pytest.raises(RuntimeError, match="cannot be read"):
        read_back(world)


def test_a_new_lookup_key_is_applied_by_rehash(ctx: Flask, keys: dict[str, str]) -> None:
    world = people(ctx)
    id_number = world["reg"].patient.id_number
    crypto.configure(keys["field"], "a-brand-new-lookup-key")
    # before re-hashing, the person is not found by ID number: a duplicate would slip in
    assert db.session.query(Patient).filter(Patient.id_number_hash == lookup_hash(id_number)).count() == 0
    result = ctx.test_cli_runner().invoke(args=["keys", "rehash"])
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    assert db.session.query(Patient).filter(Patient.id_number_hash == lookup_hash(id_number)).count() == 1
    assert db.session.query(Account).filter(Account.phone_hash == lookup_hash(world["reg"].account.phone)).count() == 1
    with acting_as(Actor(None, "test")), pytest.raises(Conflict), unit_of_work():
        services.register_patient("李四", id_number, "13900000002", f.PASSWORD)
