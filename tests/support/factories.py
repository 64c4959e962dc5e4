"""Factories: build people and staff through the real services, committed."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from flask.testing import FlaskClient

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work
from clinic.demo import DEPARTMENTS, make_id_number
from identity import services
from identity.models import Account, Department, Institution, Role

PASSWORD = "Passw0rd-test"
_counter = {"n": 0}


def _next() -> int:
    _counter["n"] += 1
    return _counter["n"]


DEPARTMENT_NAMES = {d[0]: (d[1], d[2]) for d in DEPARTMENTS}


def institution(
    today: date | None = None, departments: tuple[str, ...] = ("cardiology", "endocrinology", "pediatrics")
) -> Institution:
    today = today or date.today()
    with unit_of_work() as s:
        for code in departments + ("psychiatry",):
            if s.get(Department, code) is None:
                zh, en = DEPARTMENT_NAMES.get(code, (code, code))
                s.add(Department(code=code, name_zh=zh, name_en=en, approved=code != "psychiatry"))
        inst = s.get(Institution, 1) or Institution(
            id=1,
            name="测试互联网医院",
            practice_license_no="PDY-TEST",
            internet_approval_no="TEST-APPROVAL",
            approval_valid_until=today + timedelta(days=365),
        )
        s.add(inst)
    return inst


def id_number(born: date, region: str = "110105", seq: int | None = None) -> str:
    return make_id_number(region, born, seq if seq is not None else (_next() % 900) + 10)


def phone() -> str:
    return f"138{_next():08d}"


def patient(name: str = "张三", born: date = date(1980, 5, 17), verified: bool = True) -> services.Registration:
    with acting_as(Actor(None, "test")), unit_of_work():
        reg = services.register_patient(name, id_number(born), phone(), PASSWORD)
        if verified:
            reg.account.phone_verified_at = reg.account.created_at
    return reg


def staff(role: Role, **kw: Any) -> Account:
    institution()
    n = _next()
    today = date.today()
    defaults: dict[str, Any] = {}
    if role == Role.PHYSICIAN:
        defaults = {
            "department": "cardiology",
            "license_no": f"LIC{n:06d}",
            "practice_registration_no": f"REG{n:06d}",
            "independent_practice_since": date(2010, 1, 1),
            "license_valid_until": today + timedelta(days=365),
        }
    elif role == Role.PHARMACIST:
        defaults = {"qualification_no": f"Q{n:06d}", "qualification_valid_until": today + timedelta(days=365)}
    defaults.update(kw)
    with acting_as(Actor(None, "test")), unit_of_work():
        account = services.create_staff(
            services.StaffSpec(
                username=kw.pop("username", f"{role.value}{n}"),
                password=PASSWORD,
                role=role,
                name=f"{role.value} {n}",
                **{k: v for k, v in defaults.items() if k != "username"},
            )
        )
    return db.session.get(Account, account.id) or account


def token(client: FlaskClient, username: str, password: str = PASSWORD) -> str:
    resp = client.post("/api/v1/auth/token", json={"username": username, "password": password})
    assert resp.status_code == 200, resp.get_json()
    return str(resp.get_json()["access_token"])


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}
