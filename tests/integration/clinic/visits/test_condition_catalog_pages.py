"""Issue 16 item 5, the condition catalog: an administrator changes an existing entry from
its row (names, department, chronic, offered online), audited with old and new values;
bad input is refused next to the field in Chinese words, nothing saved."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from clinic.core.audit import AuditEntry
from clinic.core.db import db
from clinic.visits import condition_catalog
from clinic.visits.models import Condition
from identity.models import Role
from tests.conftest import extract_csrf
from tests.integration.pharmacy.test_pharmacy_pages import login
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.answers import refusal


def admin(ctx: Flask) -> FlaskClient:
    cf.catalog()
    return login(ctx, f.staff(Role.ADMIN).username)


def edit(c: FlaskClient, code: str, **changes: Any) -> Any:
    page = c.get(f"/admin/conditions/{code}/edit")
    assert page.status_code == 200
    cond = db.session.get(Condition, code)
    assert cond is not None
    form: dict[str, Any] = {
        "csrf_token": extract_csrf(page.get_data(as_text=True)),
        "name_zh": cond.name_zh,
        "name_en": cond.name_en,
        "department": cond.department,
        **({"chronic": "y"} if cond.chronic else {}),
        **({"active": "y"} if cond.active else {}),
    }
    form.update(changes)
    return c.post(f"/admin/conditions/{code}/edit", data={k: v for k, v in form.items() if v is not None})


def row(code: str) -> Condition:
    db.session.expire_all()
    cond = db.session.get(Condition, code)
    assert cond is not None
    return cond


def updates() -> list[AuditEntry]:
    return list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == "condition.updated")))


def test_the_catalog_links_each_row_to_its_edit_page(client: FlaskClient, ctx: Flask) -> None:
    c = admin(ctx)
    html = c.get("/admin/conditions").get_data(as_text=True)
    assert 'href="/admin/conditions/I10/edit"' in html and 'href="/admin/conditions/B18.1/edit"' in html
    form = c.get("/admin/conditions/I10/edit").get_data(as_text=True)
    assert "原发性高血压" in form and "Essential (primary) hypertension" in form
    assert "英文名称" in form and "提供在线复诊" in form


def test_an_admin_changes_a_condition_and_the_change_is_audited(client: FlaskClient, ctx: Flask) -> None:
    c = admin(ctx)
    resp = edit(c, "J30", name_zh="过敏性鼻炎", name_en="Allergic rhinitis", department="respiratory", chronic="y")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/admin/conditions")
    cond = row("J30")
    assert (cond.name_zh, cond.name_en, cond.department, cond.chronic, cond.active) == (
        "过敏性鼻炎",
        "Allergic rhinitis",
        "respiratory",
        True,
        True,
    )
    [entry] = updates()
    assert entry.subject_type == "condition" and entry.subject_id == "J30" and entry.actor_role == "admin"
    assert entry.detail["changed"]["name_zh"] == ["血管舒缩性和变应性鼻炎", "过敏性鼻炎"]
    assert entry.detail["changed"]["department"] == ["general", "respiratory"]
    assert "active" not in entry.detail["changed"]
    assert "过敏性鼻炎" in c.get("/admin/conditions").get_data(as_text=True)
    # The patients' search finds it by its new name
    assert [x.code for x in condition_catalog.search_conditions("过敏性鼻炎")] == ["J30"]


def test_a_condition_no_longer_offered_stays_listed_and_can_be_offered_again(client: FlaskClient, ctx: Flask) -> None:
    c = admin(ctx)
    assert edit(c, "M10", active=None).status_code == 302
    assert row("M10").active is False
    assert condition_catalog.catalog_condition("M10.0") is None  # a proof under it is no longer eligible
    assert condition_catalog.search_conditions("痛风") == []
    html = c.get("/admin/conditions").get_data(as_text=True)
    assert 'href="/admin/conditions/M10/edit"' in html  # still there, to be offered again
    assert edit(c, "M10", active="y").status_code == 302
    assert row("M10").active is True and condition_catalog.catalog_condition("M10.0") is not None
    assert [e.detail["changed"]["active"] for e in updates()] == [[True, False], [False, True]]


def test_bad_input_is_refused_next_to_the_field_in_words_and_nothing_is_saved(client: FlaskClient, ctx: Flask) -> None:
    c = admin(ctx)
    cases = [
        ({"name_zh": ""}, "请填写疾病的中文名称"),
        ({"name_zh": "高" * 101}, "中文名称最多 100 个字"),
        ({"name_en": "  "}, "请填写疾病的英文名称"),
        ({"name_en": "x" * 201}, "英文名称最多 200 个字"),
        ({"department": "psychiatry"}, "所选科室不是本机构核准开展互联网诊疗的科室"),
        ({"department": "no-such"}, "所选科室不是本机构核准开展互联网诊疗的科室"),
    ]
    for changes, words in cases:
        resp = edit(c, "I10", **changes)
        text = resp.get_data(as_text=True)
        assert resp.status_code == 422, (changes, resp.status_code)
        assert f'<span class="field-error">{words}' in text, (changes, text[-3000:])
        assert "name_zh" not in text.split("<form")[0]  # the field's words, not its code
    cond = row("I10")
    assert (cond.name_zh, cond.department) == ("原发性高血压", "cardiology")
    assert updates() == []


def test_only_admins_edit_and_unknown_codes_are_not_found(client: FlaskClient, ctx: Flask) -> None:
    c = admin(ctx)
    assert refusal(c.get("/admin/conditions/Z99/edit")) == (404, "not_found")
    pharmacist = login(ctx, f.staff(Role.PHARMACIST).username)
    assert refusal(pharmacist.get("/admin/conditions/I10/edit")) == (403, "forbidden")
    csrf = extract_csrf(pharmacist.get("/login").get_data(as_text=True))
    refused = pharmacist.post("/admin/conditions/I10/edit", data={"csrf_token": csrf, "name_zh": "x"})
    assert refused.status_code in (400, 403) and row("I10").name_zh == "原发性高血压"


def test_adding_a_code_already_in_the_catalog_points_to_its_row(client: FlaskClient, ctx: Flask) -> None:
    c = admin(ctx)
    csrf = extract_csrf(c.get("/admin/conditions").get_data(as_text=True))
    resp = c.post(
        "/admin/conditions",
        data={"csrf_token": csrf, "code": "i10", "name_zh": "高血压", "department": "general", "chronic": "y"},
    )
    assert resp.status_code == 409 and "I10 已在目录中" in resp.get_data(as_text=True)
    assert row("I10").name_zh == "原发性高血压" and row("I10").department == "cardiology"
