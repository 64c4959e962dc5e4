"""Staff pages' plumbing: the role decorators in one kernel module, error pages in words,
the favicon, codes shown through one label mapping per domain."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from flask_babel import refresh

from clinic.core.pages import bj, label_for
from identity.models import Role
from tests.integration.test_pharmacy_pages import login
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
