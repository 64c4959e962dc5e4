"""`flask retention purge` and the records between institutions: a partner's agreement and
every signed message exchanged with it, twenty years old, stay whatever the purge does to
a visit's chat of the same age (issue 19 item 6: medical records, 15 years at least)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from clinic.core.db import Base, db, unit_of_work, utcnow
from clinic.regulator import retention
from clinic.telemedicine.models import FederationMessage, PartnerInstitution
from clinic.visits.models import VisitMessage
from identity.models import Role
from tests.integration.clinic.regulator.test_retention_purge import closed_visit
from tests.support import clinic_factories as cf
from tests.support import factories as f


def _tm_counts() -> dict[str, int]:
    db.session.remove()
    out = {}
    for table in Base.metadata.tables:
        if table.startswith("tm_"):
            out[table] = int(db.session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
    return out


def _old_exchange(years: int) -> dict[str, Any]:
    at = utcnow() - timedelta(days=365 * years)
    with unit_of_work() as s:
        partner = PartnerInstitution(
            name="乙市第一人民医院",
            license_no="PDY12345678",
            level="三级",
            base_url="https://partner.example",
            public_jwk={"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "kid": "inst-old"},
            kid="inst-old",
            services=["consultation", "referral"],
            departments=[],
            fee_fen=20000,
            split_inviting=20,
            split_invited=80,
            valid_from=at.date(),
            valid_until=(at + timedelta(days=365)).date(),
            created_at=at,
        )
        s.add(partner)
        s.flush()
        for i, direction in enumerate(("out", "in", "out")):
            s.add(
                FederationMessage(
                    partner_id=partner.id,
                    direction=direction,
                    message_id=f"m-{i}",
                    event_code="consultation-request",
                    kid="inst-old",
                    jws="a.b.c",
                    created_at=at + timedelta(hours=i),
                    delivered_at=at + timedelta(hours=i) if direction == "out" else None,
                )
            )
    return {"partner": partner.id}


def test_the_purge_keeps_every_record_between_institutions(client: FlaskClient, ctx: Flask) -> None:
    cf.catalog()
    physician = f.staff(Role.PHYSICIAN)
    chat = closed_visit(client, physician, years_ago=20, messages=2)  # purgeable: the control
    _old_exchange(years=20)
    before = _tm_counts()
    assert before["tm_partners"] == 1 and before["tm_messages"] == 3
    assert all(retention.kind_of_table(t) for t in before)  # every one of them is a kept kind

    result = ctx.test_cli_runner().invoke(args=["retention", "purge"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["messages"] == 2
    db.session.remove()
    assert db.session.scalar(select(func.count()).where(VisitMessage.visit_id == chat["id"])) == 0
    assert _tm_counts() == before
    kept = db.session.scalars(select(FederationMessage).order_by(FederationMessage.message_id)).all()
    assert [m.jws for m in kept] == ["a.b.c"] * 3  # as signed, readable (encrypted at rest)


def test_the_rules_command_lists_the_telemedicine_records(ctx: Flask) -> None:
    rules = json.loads(ctx.test_cli_runner().invoke(args=["retention", "rules"]).output)
    by_kind = {r["kind"]: r for r in rules}
    for kind, table in [
        ("federation_message", "tm_messages"),
        ("partner_agreement", "tm_partners"),
        ("consultation", "tm_consultations"),
        ("consultation_attachment", "tm_consult_attachments"),
        ("consultation_opinion", "tm_consult_opinions"),
        ("referral", "tm_referrals"),
    ]:
        assert by_kind[kind]["tables"] == [table]
        assert by_kind[kind]["min_years"] >= 15 and by_kind[kind]["purgeable"] is False
