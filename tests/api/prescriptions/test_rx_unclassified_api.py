"""An unclassified drug is listed as such by GET /drugs and refused as `drug_unclassified`."""

from __future__ import annotations

from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import func, select

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work
from clinic.core.principal import Principal
from identity.models import Role
from prescriptions import catalog, imports
from prescriptions.models import Drug, Prescription
from tests.support import factories as f
from tests.support.rx_factories import item, visit_in_progress

CSV = "name,form,strength,route,generic_name,ingredients,cold_chain,atc_code\n院内降压合剂片,片剂,10mg,口服,,,false,C09AA02\n"


def test_unclassified_drug_is_shown_and_refused_with_every_violation(client: FlaskClient, tmp_path: Path) -> None:
    v = visit_in_progress(client)
    path = tmp_path / "f.csv"
    path.write_text(CSV, encoding="utf-8")
    with acting_as(Actor(None, "test")), unit_of_work():
        assert [u["name"] for u in imports.import_formulary(path).unclassified] == ["院内降压合剂片"]
    held = db.session.scalar(select(Drug).where(Drug.name == "院内降压合剂片"))
    assert held is not None

    found = client.get("/api/v1/drugs", query_string={"q": "院内降压"}, headers=f.auth(v["face"]))
    assert found.status_code == 200
    assert found.get_json()["items"][0]["control_class"] == "unclassified"

    items = [item(v["drugs"]["amlodipine"], days=10), item(str(held.id))]
    resp = client.post(
        f"/api/v1/visits/{v['visit_id']}/prescriptions", json={"items": items}, headers=f.auth(v["face"])
    )
    assert resp.status_code == 422, resp.get_json()
    err = resp.get_json()["error"]
    assert err["code"] == "prescription_rejected"
    got = {(x["code"], x.get("item")) for x in err["violations"]}
    assert {("supply_exceeds_limit", 0), ("drug_unclassified", 1)} <= got
    assert ("controlled_substance", 1) not in got
    assert db.session.scalar(select(func.count()).select_from(Prescription)) == 0  # nothing signed

    # once a pharmacist has classified it as ordinary, that refusal is gone
    pharmacist = f.staff(Role.PHARMACIST)
    with acting_as(Actor(str(pharmacist.id), "pharmacist")), unit_of_work():
        catalog.classify_drug(Principal(pharmacist.id, "pharmacist"), held.id, "ordinary", "院内制剂，成分为依那普利")
    again = client.post(
        f"/api/v1/visits/{v['visit_id']}/prescriptions", json={"items": [item(str(held.id))]}, headers=f.auth(v["face"])
    )
    codes = {x["code"] for x in (again.get_json().get("error") or {}).get("violations", [])}
    assert "drug_unclassified" not in codes, again.get_json()
