"""Family-doctor contracts against the database: two simultaneous signings for one person
(one wins 201, the other 409 contract_exists, on SQLite and PostgreSQL), and the record kept."""

from __future__ import annotations

import uuid

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.core.audit import AuditEntry
from clinic.core.db import db
from clinic.family_doctor import contracts
from clinic.family_doctor.models import Contract
from tests.support import fd_factories as fd
from tests.support.races import interleave


def test_two_simultaneous_signings_one_wins(client: FlaskClient, ctx: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    world = fd.team(client)
    p = fd.patient(client, world)
    other = ctx.test_client()
    # Request A has checked that no contract is in force; request B signs (another package)
    # and commits before A inserts. The unique index must refuse A.
    overtaken = interleave(
        monkeypatch, contracts, "_contract_in_force", lambda: fd.sign(other, world, p, package=world.basic_id)
    )

    resp = fd.sign(client, world, p)

    assert overtaken[0].status_code == 201, overtaken[0].get_json()
    assert resp.status_code == 409, resp.get_json()
    assert resp.get_json()["error"]["code"] == "contract_exists"
    db.session.remove()
    rows = db.session.scalars(select(Contract)).all()
    assert len(rows) == 1 and str(rows[0].package_id) == world.basic_id
    assert str(rows[0].id) == overtaken[0].get_json()["id"]
    signed = db.session.scalar(select(func.count()).where(AuditEntry.action == "fd.contract_signed"))
    assert signed == 1
    refused = db.session.scalars(select(AuditEntry.detail).where(AuditEntry.action == "request.refused")).all()
    assert [d["code"] for d in refused] == ["contract_exists"]


def test_the_index_itself_refuses_a_second_contract_in_force(client: FlaskClient) -> None:
    """Even written past the service, the database keeps one contract in force per person."""
    from sqlalchemy.exc import IntegrityError

    world = fd.team(client)
    p = fd.patient(client, world)
    assert fd.sign(client, world, p).status_code == 201
    db.session.remove()
    first = db.session.scalars(select(Contract)).one()
    db.session.add(
        Contract(
            patient_id=first.patient_id,
            account_id=first.account_id,
            team_id=first.team_id,
            package_id=first.package_id,
            status=first.status,
            agreement_version=first.agreement_version,
            agreement_sha256=first.agreement_sha256,
            id=uuid.uuid4(),
        )
    )
    with pytest.raises(IntegrityError):
        db.session.flush()
    db.session.rollback()
