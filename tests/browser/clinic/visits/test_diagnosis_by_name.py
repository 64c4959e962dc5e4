"""A patient uploads a proof and picks the diagnosis by typing its Chinese name (phone size):
the list fills from the condition catalog as they type; no code is typed or shown."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from clinic.core.db import db
from clinic.visits.models import Diagnosis
from tests.support import clinic_factories as cf
from tests.support import factories as f


def test_the_diagnosis_is_picked_by_its_chinese_name(page: Any, shoot: Callable[[str], Path], tmp_path: Path) -> None:
    cf.catalog()
    reg = f.patient(name="赵敏")
    page.goto("/login")
    page.fill("#username", reg.account.username.removeprefix("+86"))
    page.fill("#password", f.PASSWORD)
    page.locator("form button[type=submit]").first.click()
    expect(page.locator("#patients")).to_contain_text("赵敏", timeout=3000)

    page.goto("/diagnoses")
    field = page.locator("input[list='condition-list']")
    field.fill("糖尿")
    # the list now offers the two diabetes conditions by name (filled by the static script)
    expect(page.locator("#condition-list option")).to_have_count(2, timeout=3000)
    names = page.locator("#condition-list option").evaluate_all("els => els.map(e => e.value)")
    assert sorted(names) == ["1型糖尿病", "2型糖尿病"]
    field.fill("2型糖尿病")
    page.fill("input[name='institution']", "北京朝阳医院")
    page.fill("input[name='diagnosed_on']", "2024-03-01")
    image = tmp_path / "record.png"
    image.write_bytes(cf.png())
    page.set_input_files("input[type='file']", str(image))
    shoot("diagnosis-by-name-filled")
    page.locator("#diagnosis-form button[type=submit]").click()
    expect(page.locator(".flash.ok")).to_be_visible(timeout=5000)
    shoot("diagnosis-by-name-uploaded")
    db.session.expire_all()
    diag = db.session.query(Diagnosis).one()
    assert diag.icd10 == "E11" and diag.patient_id == reg.patient.id
