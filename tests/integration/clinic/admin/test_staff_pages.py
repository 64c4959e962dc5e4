"""Staff pages' plumbing: the role decorators in one kernel module, error pages in words,
the favicon, codes shown through one label mapping per domain."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from flask_babel import refresh

from clinic.core.pages import bj, label_for
from identity.models import Role
from tests.conftest import extract_csrf
from tests.integration.pharmacy.test_pharmacy_pages import login
from tests.support import factories as f


def test_error_pages_speak_chinese_and_say_what_happened(client: FlaskClient, ctx: Flask) -> None:
    missing = client.get("/no/such/page")
    text = missing.get_data(as_text=True)
    assert missing.status_code == 404 and "页面不存在" in text and "requested URL" not in text
    pharmacist = login(ctx, f.staff(Role.PHARMACIST).username)
    refused = pharmacist.get("/admin/audit")
    text = refused.get_data(as_text=True)
    assert refused.status_code == 403 and "无权访问" in text and "您没有权限打开此页面" in text
    # English under the switch
    pharmacist.set_cookie("lang", "en")
    english = pharmacist.get("/admin/audit").get_data(as_text=True)
    assert "No access" in english and "无权访问" not in english


def test_pages_send_nobody_signed_in_to_the_login_page(client: FlaskClient) -> None:
    for path in ("/pharmacy/queue", "/admin/audit", "/physician/visits", "/visits"):
        resp = client.get(path)
        assert resp.status_code == 302 and "/login" in resp.headers["Location"], path


def test_a_favicon_is_served(client: FlaskClient) -> None:
    page = client.get("/login").get_data(as_text=True)
    assert 'rel="icon"' in page
    icon = client.get("/favicon.ico", follow_redirects=True)
    assert icon.status_code == 200 and b"<svg" in icon.data


def test_labels_come_from_the_domain_mapping_and_never_show_a_raw_code(ctx: Flask) -> None:
    with ctx.test_request_context("/"):
        assert label_for("control", "psychotropic_2") == "第二类精神药品"
        assert label_for("rx", "returned") == "已退回医师修改"
        assert label_for("reason", "dose") == "剂量、用法不适宜"
        assert label_for("rx", "no_such_status") == "—"
    with ctx.test_request_context("/", headers={"Cookie": "lang=en"}):
        refresh()  # the locale is cached on the app context the fixture pushed
        assert label_for("control", "psychotropic_2") == "Class II psychotropic"


def test_times_are_shown_in_beijing_time() -> None:
    from datetime import UTC, datetime

    assert bj(datetime(2026, 12, 1, 20, 30, tzinfo=UTC)) == "2026-12-02 04:30"
    assert bj(None) == "—"


def test_a_physician_voids_an_unreviewed_prescription_with_a_reason_and_revises_it(
    client: FlaskClient, ctx: Flask
) -> None:
    from tests.integration.clinic.visits.test_visit_pages import face_checked
    from tests.support.rx_factories import item, prescribed

    v = prescribed(client)
    rx = v["rx"]
    doc = login(ctx, v["doc"].username)
    face_checked(doc)
    page = doc.get(f"/physician/prescriptions/{rx}").get_data(as_text=True)
    assert 'id="void"' in page and "UTC" not in page
    # no reason: refused next to the field, nothing changed
    refused = doc.post(f"/physician/prescriptions/{rx}/void", data={"csrf_token": extract_csrf(page), "reason": ""})
    text = refused.get_data(as_text=True)
    assert refused.status_code == 422 and "请说明作废原因" in text and 'class="field-error"' in text
    assert client.get(f"/api/v1/prescriptions/{rx}", headers=f.auth(v["face"])).get_json()["status"] == "pending_review"
    # a revision of a prescription still pending is refused (only ended ones are revised)
    early = client.post(
        f"/api/v1/visits/{v['visit_id']}/prescriptions",
        json={"items": [item(v["drugs"]["amlodipine"])], "replaces": rx},
        headers=f.auth(v["face"]),
    )
    assert early.status_code == 409 and early.get_json()["error"]["code"] == "not_replaceable"
    voided = doc.post(
        f"/physician/prescriptions/{rx}/void", data={"csrf_token": extract_csrf(page), "reason": "剂量写错，重新开具"}
    )
    assert voided.status_code == 302
    after = doc.get(f"/physician/prescriptions/{rx}").get_data(as_text=True)
    assert "剂量写错，重新开具" in after and "已取消" in after and 'id="revise"' in after
    # the pharmacists no longer see it
    ph = login(ctx, f.staff(Role.PHARMACIST).username)
    assert "<strong>0</strong>" in ph.get("/pharmacy/queue").get_data(as_text=True)
    # the revision records what it replaces; a second revision of the same one is refused
    again = client.post(
        f"/api/v1/visits/{v['visit_id']}/prescriptions",
        json={"items": [item(v["drugs"]["amlodipine"])], "replaces": rx},
        headers=f.auth(v["face"]),
    )
    assert again.status_code == 201, again.get_json()
    new = client.get(f"/api/v1/prescriptions/{again.get_json()['id']}", headers=f.auth(v["face"])).get_json()
    assert new["replaces_id"] == rx
    twice = client.post(
        f"/api/v1/visits/{v['visit_id']}/prescriptions",
        json={"items": [item(v["drugs"]["amlodipine"])], "replaces": rx},
        headers=f.auth(v["face"]),
    )
    assert twice.status_code == 409 and twice.get_json()["error"]["code"] == "already_replaced"


def test_a_physician_goes_off_duty_from_the_workstation_and_the_directory_shows_it(
    client: FlaskClient, ctx: Flask
) -> None:
    from tests.integration.clinic.visits.test_visit_pages import face_checked

    doc = f.staff(Role.PHYSICIAN)
    page = login(ctx, doc.username)
    face_checked(page)
    home = page.get("/").get_data(as_text=True)
    assert 'data-on-duty="yes"' in home and "下线" in home

    def listed() -> bool:
        items = client.get("/api/v1/physicians").get_json()["items"]
        return next(p["on_duty"] for p in items if p["id"] == str(doc.id))

    assert listed() is True
    resp = page.post("/workstation/duty", data={"csrf_token": extract_csrf(home), "on_duty": "0"})
    assert resp.status_code == 302
    after = page.get("/").get_data(as_text=True)
    assert 'data-on-duty="no"' in after and "您已下线" in after and "上线" in after
    assert listed() is False
    # and back on duty with the button now shown
    page.post("/workstation/duty", data={"csrf_token": extract_csrf(after), "on_duty": "1"})
    assert listed() is True
