"""Return-visit pages: patients on a phone, physicians at a workstation (or a tablet).

The pages are one blueprint ("visits") written in three modules: `patient_views` (proofs of
in-person diagnoses, informed consent, requesting, paying and cancelling a visit),
`room_views` (the visit room both sides use: messages, images, video) and
`physician_views` (the proofs to confirm, the waiting visits, accepting, completing and
ending a visit, the workstation's home panels). This module holds the blueprint, what
every page of it shares (who is signed in, reading an upload, showing a refusal) and the
template helpers. Each action calls the package's use cases (proofs, informed_consent,
requesting, lifecycle, queues, visit_room, condition_catalog) and answers
POST/redirect/GET; refusals are flashed with `handle_refusal` and the page is shown
again with the refusal's status. The rules live in rules.py and the use cases, not here.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from flask import Blueprint, Flask, flash, g, redirect, url_for
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from markupsafe import Markup, escape
from werkzeug.datastructures import FileStorage
from werkzeug.wrappers import Response

from clinic.core.db import db, utcnow
from clinic.core.errors import DomainError, RuleRefusal
from clinic.core.pages import label_for, register_panel, to_beijing
from clinic.core.web import handle_refusal, localized
from clinic.visits import condition_catalog, rules
from clinic.visits.models import Condition, Diagnosis
from identity import rules as identity_rules
from identity.models import Account, Department, Patient

bp = Blueprint("visits", __name__, template_folder="templates")

FACE_REQUIRED = "face_verification_required"

# --- access -----------------------------------------------------------------------------


def me() -> Account:
    account: Account = current_user._get_current_object()
    return account


def read_upload(upload: FileStorage | None, limit: int) -> bytes | None:
    if upload is None or not upload.filename:
        return None
    return upload.stream.read(limit + 1)


def refused(err: DomainError) -> str:
    """The refusal's message, with every broken rule when there are several."""
    message = handle_refusal(err)
    if isinstance(err, RuleRefusal) and len(err.violations) > 1:
        return " ".join(localized(v.message) for v in err.violations)
    return message


def to_face(err: DomainError, back: str) -> Response:
    flash(handle_refusal(err), "error")
    return redirect(url_for("identity.face", next=back))


# --- template helpers (pure reads for display) ------------------------------------------


def english() -> bool:
    return str(get_locale()) == "en"


def _departments() -> dict[str, Department]:
    if "visit_departments" not in g:
        g.visit_departments = {d.code: d for d in db.session.query(Department).all()}
    found: dict[str, Department] = g.visit_departments
    return found


def department_name(code: str | None) -> str:
    if not code:
        return ""
    dept = _departments().get(code)
    if dept is None:
        return code
    return dept.name_en if english() else dept.name_zh


def _catalog() -> dict[str, Condition]:
    if "visit_conditions" not in g:
        g.visit_conditions = {c.code: c for c in condition_catalog.list_conditions()}
    found: dict[str, Condition] = g.visit_conditions
    return found


def condition_label(diag: Diagnosis) -> str:
    """The condition's name in the UI language; before review, the catalog entry it falls under.

    A proof written in the national clinical edition (国家临床版 2.0) shows that code and, where
    clinic/visits/data names it, its Chinese name: 支气管哮喘 (J45.900x001)."""
    cond: Condition | None = diag.condition
    if cond is None:
        catalog = _catalog()
        match = rules.match_condition(diag.icd10, catalog)
        cond = catalog.get(match) if match else None
    if diag.icd10_national and not english():
        name = rules.national_name(diag.icd10_national) or (cond.name_zh if cond is not None else "")
        return f"{name} ({diag.icd10_national})" if name else diag.icd10_national
    if cond is not None:
        return f"{cond.name_en if english() else cond.name_zh} ({diag.icd10})"
    try:
        return f"{rules.icd10_name(diag.icd10)} ({diag.icd10})"
    except Exception:  # a code outside the ICD-10 tables: show it as entered
        return diag.icd10


def icd10_words(code: str | None, national: str | None = None) -> str:
    """A diagnosis code in words with the code after it: 原发性高血压 (I10); with the national
    edition code the proof carried, its own name where known: 支气管哮喘 (J45.900x001)."""
    if not code:
        return "—"
    cond = _catalog().get(code) or _catalog().get(rules.match_condition(code, _catalog()) or "")
    if national and not english():
        name = rules.national_name(national) or (cond.name_zh if cond is not None else "")
        return f"{name} ({national})" if name else national
    if cond is not None:
        return f"{cond.name_en if english() else cond.name_zh} ({code})"
    if not english():
        return code  # the ICD-10 tables here are in English: no English words on a Chinese page
    try:
        return f"{rules.icd10_name(code)} ({code})"
    except Exception:  # a code outside the ICD-10 tables: show it as entered
        return code


def age_text(age: Any) -> str:
    """A prescriptions.rules.Age in the page's language."""
    return str(age.en() if english() else age.zh())


LIST_ITEM = re.compile(r"^(\d+\.|[-*])\s+")


def consent_html(text: str) -> Markup:
    """The consent text (a little Markdown: headings, **bold**, lines) as safe HTML."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line.rstrip() for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        heading = re.match(r"^(#{1,3})\s+(.*)$", lines[0])
        if heading and len(lines) == 1:
            level = len(heading.group(1)) + 1
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif all(LIST_ITEM.match(line) for line in lines):
            items = "".join("<li>" + _inline(LIST_ITEM.sub("", line)) + "</li>" for line in lines)
            out.append(f"<ol>{items}</ol>" if lines[0][0].isdigit() else f"<ul>{items}</ul>")
        else:
            out.append("<p>" + "<br>".join(_inline(line) for line in lines) + "</p>")
    return Markup("\n".join(out))


def _inline(line: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", str(escape(line)))


def person_facts(patient: Patient) -> str:
    """Sex and age in completed years, counted on today's date in Beijing."""
    age = identity_rules.age_years(patient.birth_date, to_beijing(utcnow()).date())
    return str(_l("%(sex)s, %(age)s years", sex=label_for("sex", patient.sex), age=age))


def yuan(fen: int) -> str:
    return f"¥{fen // 100}.{fen % 100:02d}"


@bp.app_context_processor
def _helpers() -> dict[str, Any]:
    return {
        "visit_status_label": lambda s: label_for("visit", s),
        "diagnosis_status_label": lambda s: label_for("diagnosis", s),
        "document_kind_label": lambda k: label_for("document", k),
        "department_name": department_name,
        "condition_label": condition_label,
        "icd10_words": icd10_words,
        "age_text": age_text,
        "person_facts": person_facts,
        "yuan": yuan,
        "can_message": rules.can_message,
    }


def init_app(app: Flask) -> None:
    # The page modules add their routes to `bp` when imported: import them before registering.
    importlib.import_module("clinic.visits.patient_views")
    from clinic.visits import physician_views

    importlib.import_module("clinic.visits.room_views")

    app.register_blueprint(bp)
    for panel in physician_views.PANELS:
        register_panel("physician", panel)
