"""Unknown means held: formulary rows whose ingredients are not recognised are imported as
`unclassified`, listed in the import summary, and wait in the classification queue page of
pharmacists and administrators, where each decision is audited (real database, both backends)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from clinic.core.audit import Actor, AuditEntry, acting_as
from clinic.core.db import db, unit_of_work
from clinic.core.errors import Conflict, Invalid
from clinic.core.principal import Principal
from identity.models import Role
from prescriptions import catalog, imports
from prescriptions.models import Drug
from tests.conftest import extract_csrf
from tests.integration.clinic.visits.test_visit_pages import login
from tests.support import factories as f
from tests.support.answers import refusal

CLI = Actor(None, "test")
CSV = """name,form,strength,route,generic_name,ingredients,cold_chain
院内制剂甲片,片剂,10mg,口服,,,false
苯磺酸氨氯地平片,片剂,2.5mg,口服,氨氯地平,,false
某新药胶囊,胶囊,20mg,口服,,阿托伐他汀;未知成分丙,false
盐酸哌甲酯缓释片,缓释片,18mg,口服,,,false
止咳复方片,片剂,1片,口服,,可待因;未知成分丁,false
"""


def import_csv(tmp_path: Path, text: str = CSV) -> imports.ImportReport:
    path = tmp_path / "formulary.csv"
    path.write_text(text, encoding="utf-8")
    with acting_as(CLI), unit_of_work():
        return imports.import_formulary(path)


def drug(name: str) -> Drug:
    found = db.session.scalar(select(Drug).where(Drug.name == name))
    assert found is not None, name
    return found


def test_unknown_rows_are_held_and_listed_in_the_summary(ctx: Flask, tmp_path: Path) -> None:
    report = import_csv(tmp_path)
    assert report.imported == 5
    held = {u["row"]: u["name"] for u in report.unclassified}
    assert held == {2: "院内制剂甲片", 4: "某新药胶囊"}
    assert "未知成分丙" in report.unclassified[1]["reason"]
    controlled = {c["name"]: c["control_class"] for c in report.controlled}
    # a controlled ingredient beside an unknown one: controlled, not merely held
    assert controlled == {"盐酸哌甲酯缓释片": "psychotropic_1", "止咳复方片": "narcotic"}
    assert drug("院内制剂甲片").control_class == "unclassified"
    assert drug("苯磺酸氨氯地平片").control_class is None
    summary = report.summary()
    assert "Held as unclassified (2)" in summary and "row 2: 院内制剂甲片" in summary
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "catalog.imported"))
    assert entry is not None and entry.detail["unclassified"] == [2, 4]
    assert report.as_dict()["unclassified"][0]["drug_id"] == str(drug("院内制剂甲片").id)


def test_a_decision_is_audited_and_survives_a_later_import(ctx: Flask, tmp_path: Path) -> None:
    import_csv(tmp_path)
    pharmacist = f.staff(Role.PHARMACIST)
    held = drug("院内制剂甲片")
    assert [d.name for d in catalog.unclassified_drugs()] == ["院内制剂甲片", "某新药胶囊"]
    with acting_as(Actor(str(pharmacist.id), "pharmacist")), unit_of_work():
        for choice, note in (("psychotropic_9", "理由"), ("ordinary", "  ")):
            with pytest.raises(Invalid):
                catalog.classify_drug(Principal(pharmacist.id, "pharmacist"), held.id, choice, note)
        catalog.classify_drug(
            Principal(pharmacist.id, "pharmacist"), held.id, "ordinary", "院内制剂：维生素类，说明书无管制成分"
        )
    held = drug("院内制剂甲片")
    assert held.control_class is None and held.classified_by == pharmacist.id
    assert "院内制剂：维生素类" in held.control_reason
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "drug.classified"))
    assert entry is not None and entry.actor_id == str(pharmacist.id)
    assert entry.detail["from"] == "unclassified" and entry.detail["to"] is None
    with acting_as(Actor(str(pharmacist.id), "pharmacist")), unit_of_work(), pytest.raises(Conflict):
        catalog.classify_drug(Principal(pharmacist.id, "pharmacist"), held.id, "toxic", "再分一次")
    # the same file again: the matcher still cannot resolve it, the person's decision stays
    report = import_csv(tmp_path)
    assert [u["name"] for u in report.unclassified] == ["某新药胶囊"]
    assert drug("院内制剂甲片").control_class is None
    assert [d.name for d in catalog.unclassified_drugs()] == ["某新药胶囊"]


def test_the_queue_page_for_pharmacists_and_administrators(ctx: Flask, tmp_path: Path) -> None:
    import_csv(tmp_path)
    f.institution()
    admin = f.staff(Role.ADMIN)
    page = ctx.test_client()
    login(page, admin.username)
    home = page.get("/", follow_redirects=True).get_data(as_text=True)  # the administrator's console
    assert "/catalog/classification" in home  # reachable from the menu
    html = page.get("/catalog/classification").get_data(as_text=True)
    assert "待分类药品" in html and "院内制剂甲片" in html and "某新药胶囊" in html and "分类决定" in html
    assert "阿托伐他汀" in html and "阿托伐他汀、未知成分丙<" not in html  # recognised ingredients only
    visible = re.sub(r"<[^>]+>", " ", html)
    assert "unclassified" not in visible and "psychotropic" not in visible  # no raw codes on the page
    held = drug("某新药胶囊")
    csrf = extract_csrf(html)
    missing = page.post(f"/catalog/classification/{held.id}", data={"csrf_token": csrf, "choice": "toxic"})
    assert missing.status_code == 302
    assert "请填写分类理由" in page.get("/catalog/classification").get_data(as_text=True)
    assert drug("某新药胶囊").control_class == "unclassified"
    done = page.post(
        f"/catalog/classification/{held.id}",
        data={"csrf_token": csrf, "choice": "toxic", "note": "未知成分丙经核实为毒性中药提取物"},
        follow_redirects=True,
    )
    text = done.get_data(as_text=True)
    assert "已将某新药胶囊分类为医疗用毒性药品" in text
    assert drug("某新药胶囊").control_class == "toxic"
    assert "最近的分类决定" in text

    pharmacist = f.staff(Role.PHARMACIST)
    other = ctx.test_client()
    login(other, pharmacist.username)
    assert "院内制剂甲片" in other.get("/catalog/classification").get_data(as_text=True)
    doctor = f.staff(Role.PHYSICIAN)
    third = ctx.test_client()
    login(third, doctor.username)
    assert refusal(third.get("/catalog/classification")) == (403, "forbidden")
    assert ctx.test_client().get("/catalog/classification").status_code in (302, 401)


def test_the_import_summary_page_lists_the_held_rows_and_links_to_the_queue(ctx: Flask, tmp_path: Path) -> None:
    f.institution()
    admin = f.staff(Role.ADMIN)
    report = import_csv(tmp_path)
    with acting_as(Actor(str(admin.id), "admin")), unit_of_work():
        run = imports.start_import(Principal(admin.id, "admin"), "formulary.csv")
        imports.finish_import(run.id, report)
    page = ctx.test_client()
    login(page, admin.username)
    html = page.get(f"/admin/formulary/runs/{run.id}").get_data(as_text=True)
    held = html.split('id="unclassified"')[1].split("</table>")[0]
    assert 'data-row="2"' in held and "院内制剂甲片" in held and 'data-row="4"' in held and "某新药胶囊" in held
    assert "暂缓待分类" in html and 'id="to-classification"' in html
    assert 'id="rows-unclassified">2<' in html
