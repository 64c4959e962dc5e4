"""The demo world: an institution, staff, patients — enough to walk every journey.

Passwords are generated on each run and printed once (nothing secret is in the repo).
"""

from __future__ import annotations

import secrets
import uuid
from datetime import date, timedelta
from typing import Any

from clinic.core.db import db
from clinic.core.principal import Principal
from clinic.visits import condition_catalog, proofs
from identity import face_services, services
from identity.models import Department, Institution, Role
from identity.rules import check_digit

DEPARTMENTS = [
    ("cardiology", "心血管内科", "Cardiology", True),
    ("endocrinology", "内分泌科", "Endocrinology", True),
    ("respiratory", "呼吸内科", "Respiratory medicine", True),
    ("pediatrics", "儿科", "Pediatrics", True),
    ("general", "全科医疗科", "General practice", True),
    ("nephrology", "肾病学专业", "Nephrology", True),
    ("rheumatology", "风湿免疫科", "Rheumatology", True),
    ("infectious", "感染科", "Infectious diseases", True),
    ("emergency", "急诊医学科", "Emergency medicine", False),
    ("psychiatry", "精神科", "Psychiatry", False),
]


def make_id_number(region: str, born: date, seq: int) -> str:
    body = f"{region}{born:%Y%m%d}{seq:03d}"
    return body + check_digit(body)


def _password() -> str:
    return secrets.token_urlsafe(9) + "7k"


def _years_ago(today: date, years: int) -> date:
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February
        return today.replace(year=today.year - years, day=28)


def build(today: date | None = None, level: str = "三级") -> dict[str, Any]:
    """The demo world; `level="基层"` makes the institution a primary-care one (社区卫生服务中心)
    that offers family-doctor contracts, with a team and its service packages."""
    today = today or date.today()
    session = db.session()
    for code, zh, en, approved in DEPARTMENTS:
        session.add(Department(code=code, name_zh=zh, name_en=en, approved=approved))
    primary = level == "基层"
    inst = Institution(
        id=1,
        name="示范社区卫生服务中心" if primary else "示范互联网医院",
        name_en="Demonstration Community Health Service Centre" if primary else "Demonstration Internet Hospital",
        level=level,
        practice_license_no="PDY00001X11010515A1001",
        internet_approval_no="京卫互联网医院〔2024〕001号",
        approval_valid_until=today + timedelta(days=3 * 365),
        address="北京市朝阳区示范路1号",
        settings={"weight_required_under_age": 14},
    )
    session.add(inst)
    session.flush()

    accounts: dict[str, Any] = {"physicians": [], "pharmacists": [], "patients": []}

    def staff(role: Role, username: str, name: str, **kw: Any) -> dict[str, Any]:
        password = _password()
        account = services.create_staff(
            services.StaffSpec(username=username, password=password, role=role, name=name, **kw)
        )
        return {"username": username, "password": password, "id": str(account.id), "name": name}

    accounts["admin"] = staff(Role.ADMIN, "admin", "系统管理员")
    accounts["regulator"] = staff(Role.REGULATOR, "regulator", "卫生健康委监管")
    for username, name, dept, title, since in [
        ("dr_wang", "王建国", "cardiology", "主任医师", date(2005, 7, 1)),
        ("dr_li", "李秀英", "endocrinology", "副主任医师", date(2012, 9, 1)),
    ]:
        entry = staff(
            Role.PHYSICIAN,
            username,
            name,
            department=dept,
            title=title,
            license_no=f"1101100{secrets.randbelow(10**8):08d}",
            practice_registration_no=f"REG-{username.upper()}",
            independent_practice_since=since,
            license_valid_until=today + timedelta(days=5 * 365),
        )
        entry["department"] = dept
        accounts["physicians"].append(entry)
    face_services.enroll_demo_physicians(accounts["physicians"])  # face_image: a real photo each
    for username, name in [("ph_zhao", "赵敏"), ("ph_chen", "陈静")]:
        accounts["pharmacists"].append(
            staff(
                Role.PHARMACIST,
                username,
                name,
                qualification_no=f"YS{secrets.randbelow(10**8):08d}",
                qualification_valid_until=today + timedelta(days=3 * 365),
            )
        )

    def patient_account(name: str, id_number: str, phone: str) -> tuple[dict[str, Any], Any]:
        password = _password()
        reg = services.register_patient(name, id_number, phone, password)
        reg.account.phone_verified_at = reg.account.created_at
        return {"username": reg.account.username, "password": password, "id": str(reg.account.id)}, reg

    condition_catalog.seed_conditions()
    by_dept = {p["department"]: p["id"] for p in accounts["physicians"]}
    adult, reg_adult = patient_account("张伟", make_id_number("110105", date(1965, 3, 12), 31), "13800138001")
    adult_dx = [
        _confirmed(reg_adult.account, reg_adult.patient, "I10", "北京朝阳医院", date(2019, 4, 2), by_dept),
        _confirmed(reg_adult.account, reg_adult.patient, "E11", "北京朝阳医院", date(2021, 9, 15), by_dept),
    ]
    adult["patients"] = [_person(reg_adult.patient, adult_dx)]
    parent, reg_parent = patient_account("刘芳", make_id_number("310104", date(1990, 6, 8), 42), "13900139002")
    child = services.add_family_member(
        reg_parent.account, "刘小雨", make_id_number("310104", _years_ago(today, 4) - timedelta(days=30), 23), "child"
    )
    child_dx = [
        _confirmed(
            reg_parent.account, child, "E10", "上海交通大学医学院附属新华医院", today - timedelta(days=200), by_dept
        )
    ]
    parent["patients"] = [_person(reg_parent.patient, []), _person(child, child_dx)]
    accounts["patients"] = [adult, parent]

    world: dict[str, Any] = {
        "institution": {
            "id": inst.id,
            "name": inst.name,
            "level": inst.level,
            "practice_license_no": inst.practice_license_no,
            "internet_approval_no": inst.internet_approval_no,
            "approved_departments": [d[0] for d in DEPARTMENTS if d[3]],
        },
        "accounts": accounts,
        "drugs": _seed_drugs(),
        "partners": __import__("pharmacy.partners").partners.seed_demo_partners(today),  # id, secret each
    }
    if primary:
        from clinic.family_doctor.services import seed_demo_teams  # the demo composes every domain

        ids = [uuid.UUID(p["id"]) for p in accounts["physicians"]]
        world["family_doctor_teams"] = [
            {
                "id": str(t.team.id),
                "name": t.team.name,
                "lead_username": t.team.lead.username,
                "packages": [
                    {"id": str(p.id), "name": p.name, "conditions": list(p.conditions), "fee_fen": p.fee_fen}
                    for p in t.packages
                ],
            }
            for t in seed_demo_teams(ids[0], ids)
        ]
    return world


def _person(p: Any, diagnoses: list[Any]) -> dict[str, Any]:
    return {
        "id": str(p.id),
        "name": p.name,
        "birth_date": p.birth_date.isoformat(),
        "relation": p.relation.value,
        "confirmed_diagnoses": [{"id": str(d.id), "icd10": d.icd10, "department": d.department} for d in diagnoses],
    }


def _record_image(title: str, lines: list[str]) -> bytes:
    """A plain picture standing in for a scanned outpatient record."""
    import io

    from PIL import Image, ImageDraw

    img = Image.new("RGB", (800, 560), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((10, 10, 790, 550), outline="black", width=3)
    draw.text((40, 40), title, fill="black")
    for i, line in enumerate(lines):
        draw.text((40, 100 + 40 * i), line, fill="black")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _confirmed(account: Any, patient: Any, icd10: str, where: str, on: date, by_dept: dict[str, str]) -> Any:
    """A proof of an in-person diagnosis, confirmed by the demo physician of its department."""
    from clinic.core.audit import Actor, acting_as

    picture = _record_image("Outpatient record (demo)", [f"Patient: {patient.id}", f"ICD-10: {icd10}", f"Date: {on}"])
    with acting_as(Actor(str(account.id), "patient")):
        diag = proofs.submit_diagnosis(
            Principal(account.id, "patient"), patient.id, icd10, where, on, picture, "outpatient_record"
        )
    cond = condition_catalog.catalog_condition(diag.icd10)
    assert cond is not None, icd10
    physician = by_dept[cond.department]
    with acting_as(Actor(physician, "physician")):
        diag = proofs.record_confirmation(diag, uuid.UUID(physician), cond)
    return diag


def _seed_drugs() -> dict[str, str]:
    from prescriptions.catalog import seed_catalog

    return seed_catalog()
