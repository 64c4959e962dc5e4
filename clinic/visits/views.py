"""Return-visit pages: patients on a phone, physicians at a workstation (or a tablet).

Patients: their proofs of in-person diagnoses (upload, follow the review), informed
consent, requesting a visit, paying for it (when payments are on), their visits and
the visit room. Physicians: the queue of proofs to confirm, the waiting visits and the
visit room. Each action calls the package's use cases (proofs, informed_consent,
requesting, lifecycle, queues, visit_room, condition_catalog) and answers
POST/redirect/GET; refusals are flashed with `handle_refusal` and the page is shown
again with the refusal's status. The rules live in rules.py and the use cases, not here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    send_from_directory,
    session,
    url_for,
)
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from markupsafe import Markup, escape
from werkzeug.datastructures import FileStorage
from werkzeug.wrappers import Response
from wtforms.fields.choices import SelectChoice

from clinic.core import storage
from clinic.core import twilio as twilio_adapter
from clinic.core.config import PROJECT_ROOT, settings
from clinic.core.db import as_uuid, db, record_id, utcnow
from clinic.core.errors import DomainError, RuleRefusal
from clinic.core.pages import (
    Panel,
    Words,
    label_for,
    page_principal,
    participant_page,
    patient_page,
    physician_page,
    register_panel,
    to_beijing,
)
from clinic.core.principal import Principal
from clinic.core.web import handle_refusal, localized
from clinic.visits import (
    condition_catalog,
    informed_consent,
    lifecycle,
    proofs,
    queues,
    requesting,
    rules,
    service_switch,
    visit_room,
)
from clinic.visits.forms import (
    CancelForm,
    CompleteForm,
    ConsentForm,
    DiagnosisForm,
    MessageForm,
    RejectForm,
    TerminateForm,
    VisitRequestForm,
)
from clinic.visits.models import Condition, Diagnosis, DiagnosisStatus
from clinic.visits.rules import VisitStatus
from identity import rules as identity_rules
from identity.models import Account, Department, Patient, Role

bp = Blueprint("visits", __name__, template_folder="templates")

F = TypeVar("F", bound=Callable[..., Any])

FACE_REQUIRED = "face_verification_required"

# --- access -----------------------------------------------------------------------------


def _me() -> Account:
    account: Account = current_user._get_current_object()
    return account


def _read(upload: FileStorage | None, limit: int) -> bytes | None:
    if upload is None or not upload.filename:
        return None
    return upload.stream.read(limit + 1)


def _refused(err: DomainError) -> str:
    """The refusal's message, with every broken rule when there are several."""
    message = handle_refusal(err)
    if isinstance(err, RuleRefusal) and len(err.violations) > 1:
        return " ".join(localized(v.message) for v in err.violations)
    return message


def _to_face(err: DomainError, back: str) -> Response:
    flash(handle_refusal(err), "error")
    return redirect(url_for("identity.face", next=back))


# --- template helpers (pure reads for display) ------------------------------------------


def _english() -> bool:
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
    return dept.name_en if _english() else dept.name_zh


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
    if diag.icd10_national and not _english():
        name = rules.national_name(diag.icd10_national) or (cond.name_zh if cond is not None else "")
        return f"{name} ({diag.icd10_national})" if name else diag.icd10_national
    if cond is not None:
        return f"{cond.name_en if _english() else cond.name_zh} ({diag.icd10})"
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
    if national and not _english():
        name = rules.national_name(national) or (cond.name_zh if cond is not None else "")
        return f"{name} ({national})" if name else national
    if cond is not None:
        return f"{cond.name_en if _english() else cond.name_zh} ({code})"
    if not _english():
        return code  # the ICD-10 tables here are in English: no English words on a Chinese page
    try:
        return f"{rules.icd10_name(code)} ({code})"
    except Exception:  # a code outside the ICD-10 tables: show it as entered
        return code


def age_text(age: Any) -> str:
    """A prescriptions.rules.Age in the page's language."""
    return str(age.en() if _english() else age.zh())


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


# --- patients: proofs of in-person diagnoses --------------------------------------------


def _patient_choices(account: Account) -> list[SelectChoice]:
    return [SelectChoice(str(p.id), p.name) for p in account.patients]


def _diagnoses_page(form: DiagnosisForm, status: int = 200) -> Any:
    return render_template(
        "visits/diagnoses.html",
        form=form,
        diagnoses=proofs.diagnoses_of_account(page_principal().account_id),
        conditions=condition_catalog.list_conditions(),
        english=_english(),
    ), status


@bp.route("/diagnoses", methods=["GET", "POST"])
@patient_page
def diagnoses() -> Any:
    account = _me()
    form = DiagnosisForm()
    form.patient_id.choices = _patient_choices(account)
    if request.method == "POST":
        if not form.validate_on_submit():
            return _diagnoses_page(form, 422)
        typed = (form.icd10.data or "").strip()
        named = condition_catalog.condition_by_name(typed)  # the patient picked the condition by its name
        raw_code = named.code if named is not None else (typed.split()[0] if typed.split() else "")
        data = _read(form.document.data, settings().MAX_DOCUMENT_BYTES) or b""
        try:
            proofs.submit_diagnosis(
                page_principal(),
                record_id(form.patient_id.data),
                raw_code,
                form.institution.data,
                form.diagnosed_on.data,
                data,
                form.document_kind.data,
            )
        except DomainError as err:
            flash(_refused(err), "error")
            return _diagnoses_page(form, err.status)
        flash(_l("Uploaded. A physician will review it; you can follow it here."), "ok")
        return redirect(url_for("visits.diagnoses"))
    return _diagnoses_page(form)


@bp.get("/diagnoses/conditions.json")
@patient_page
def condition_search() -> Response:
    """The condition catalog searched by name as the patient types (the upload form's list)."""
    q = (request.args.get("q") or "").strip()[:40]
    english = _english()
    items = [
        {"name": c.name_en if english else c.name_zh, "department": c.department}
        for c in condition_catalog.search_conditions(q)
    ]
    resp = jsonify({"items": items})
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/diagnoses/<diagnosis_id>/document")
@participant_page
def diagnosis_document(diagnosis_id: str) -> Response:
    """The proof itself, only to its patient's account or a physician: never a static URL."""
    diag = proofs.diagnosis_for(page_principal(), record_id(diagnosis_id))
    try:
        data = storage.load(diag.document_path)
    except FileNotFoundError:
        abort(404)
    resp = Response(data, mimetype=diag.document_type)
    ext = diag.document_type.rsplit("/", 1)[-1].replace("jpeg", "jpg")
    # Never rendered as a page of this site: saved (or shown in an <img>), with no script.
    resp.headers["Content-Disposition"] = f'attachment; filename="diagnosis-{diag.id}.{ext}"'
    resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    resp.headers["Cache-Control"] = "private, no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


# --- patients: informed consent ---------------------------------------------------------


def _consent_page(status: int = 200) -> Any:
    account = _me()
    text = informed_consent.current_consent()
    people = [(p, informed_consent.has_current_consent(p.id)) for p in account.patients]
    return render_template(
        "visits/consent.html",
        consent=text,
        body=consent_html(text.text_en if _english() else text.text_zh),
        people=people,
        next=_safe_next(request.args.get("next")),
        form=ConsentForm(),
    ), status


def _safe_next(target: str | None) -> str | None:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


@bp.get("/consent")
@patient_page
def consent() -> Any:
    return _consent_page()


@bp.post("/consent")
@patient_page
def accept_consent() -> Any:
    form = ConsentForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        informed_consent.accept_consent(_me(), form.patient_id.data, form.version.data)
    except DomainError as err:
        flash(_refused(err), "error")
        return _consent_page(err.status)
    flash(_l("Thank you: your consent is recorded."), "ok")
    return redirect(_safe_next(request.args.get("next")) or url_for("visits.consent"))


# --- patients: requesting, paying, following a visit ------------------------------------


def _confirmed(account: Account) -> list[Diagnosis]:
    return [d for d in proofs.diagnoses_of_account(account.id) if d.status == DiagnosisStatus.CONFIRMED]


def _chosen_physician(physician_id: str | None) -> Account | None:
    key = as_uuid(physician_id) if physician_id else None
    account = db.session.get(Account, key) if key is not None else None
    return account if account is not None and account.role == Role.PHYSICIAN else None


def _request_form(account: Account, confirmed: list[Diagnosis]) -> VisitRequestForm:
    form = VisitRequestForm()
    # One optgroup per person (wtforms groups adjacent choices with the same optgroup).
    person_order: dict[uuid.UUID, int] = {}
    for d in confirmed:
        person_order.setdefault(d.patient_id, len(person_order))
    by_person = sorted(confirmed, key=lambda d: person_order[d.patient_id])
    form.diagnosis_id.choices = [
        SelectChoice(str(d.id), condition_label(d), optgroup=d.patient.name) for d in by_person
    ]
    if request.method == "GET":
        if request.args.get("diagnosis"):
            form.diagnosis_id.data = request.args["diagnosis"]
        if request.args.get("physician"):
            form.physician_id.data = request.args["physician"]
        # Back from the consent detour: what the patient had typed is still there.
        draft = session.pop("visit_draft", None)
        if isinstance(draft, dict) and draft.get("diagnosis_id") == form.diagnosis_id.data:
            form.complaint.data = str(draft.get("complaint") or "")
            form.physician_id.data = form.physician_id.data or draft.get("physician_id") or ""
    return form


def _request_page(form: VisitRequestForm, confirmed: list[Diagnosis], status: int = 200) -> Any:
    consented = {d.patient_id: informed_consent.has_current_consent(d.patient_id) for d in confirmed}
    return render_template(
        "visits/request.html",
        form=form,
        confirmed=confirmed,
        consented=consented,
        suspended=service_switch.suspension(),
        physician=_chosen_physician(form.physician_id.data),
    ), status


@bp.route("/visits/new", methods=["GET", "POST"])
@patient_page
def request_visit() -> Any:
    account = _me()
    confirmed = _confirmed(account)
    form = _request_form(account, confirmed)
    if request.method == "POST":
        if not form.validate_on_submit():
            return _request_page(form, confirmed, 422)
        chosen = next((d for d in confirmed if str(d.id) == form.diagnosis_id.data), None)
        if chosen is None:
            abort(422)
        physician = _chosen_physician(form.physician_id.data)
        back = url_for(
            "visits.request_visit", diagnosis=str(chosen.id), physician=str(physician.id) if physician else None
        )
        try:
            new = requesting.request_visit(
                page_principal(),
                chosen.patient_id,
                chosen.id,
                chosen.department or "",
                form.complaint.data or "",
                physician.id if physician else None,
            )
        except requesting.VisitAlreadyOpen as err:
            _refused(err)  # rolled back and recorded
            flash(_l("This diagnosis already has an open visit: here it is."), "error")
            return redirect(url_for("visits.room", visit_id=err.extra["visit_id"]))
        except RuleRefusal as err:
            message = _refused(err)
            if any(v.code == "consent_required" for v in err.violations):
                flash(_l("Before a first online visit, please read and accept the informed consent."), "error")
                session["visit_draft"] = {
                    "diagnosis_id": str(chosen.id),
                    "complaint": (form.complaint.data or "")[:2000],
                    "physician_id": str(physician.id) if physician else "",
                }
                return redirect(url_for("visits.consent", next=back))
            flash(message, "error")
            return _request_page(form, confirmed, err.status)
        except DomainError as err:
            flash(_refused(err), "error")
            return _request_page(form, confirmed, err.status)
        if new.payment is not None:
            # What the pay page needs to resume the PaymentIntent (the last few visits only).
            payments = dict(list(session.get("visit_payments", {}).items())[-4:])
            payments[str(new.id)] = {
                "client_secret": new.payment.client_secret,
                "amount_fen": new.payment.amount_fen,
            }
            session["visit_payments"] = payments
        if new.status == VisitStatus.AWAITING_PAYMENT:
            return redirect(url_for("visits.pay", visit_id=new.id))
        flash(_l("Your visit is requested. A physician of the department will take it shortly."), "ok")
        return redirect(url_for("visits.room", visit_id=new.id))
    return _request_page(form, confirmed)


@bp.get("/visits")
@patient_page
def my_visits() -> Any:
    return render_template("visits/my_visits.html", visits=lifecycle.visits_of(page_principal()))


@bp.get("/visits/<visit_id>/pay")
@patient_page
def pay(visit_id: str) -> Any:
    visit = lifecycle.visit_for(page_principal(), record_id(visit_id))
    if current_app.extensions.get("payments") is None or visit.status != VisitStatus.AWAITING_PAYMENT:
        return redirect(url_for("visits.room", visit_id=visit.id))
    stored = session.get("visit_payments", {}).get(str(visit.id), {})
    stripe_on = settings().PAYMENTS == "stripe"
    return render_template(
        "visits/pay.html",
        visit=visit,
        amount_fen=int(stored.get("amount_fen") or visit.fee_fen),
        client_secret=stored.get("client_secret") if stripe_on else None,
        publishable_key=settings().STRIPE_PUBLISHABLE_KEY if stripe_on else "",
        stripe_on=stripe_on,
        cancel_form=CancelForm(),
    )


@bp.post("/visits/<visit_id>/cancel")
@patient_page
def cancel(visit_id: str) -> Any:
    form = CancelForm()
    if not form.validate_on_submit():
        abort(400)
    reason = form.reason.data or "cancelled by the patient"
    try:
        lifecycle.cancel_visit(page_principal(), record_id(visit_id), reason)
    except DomainError as err:
        flash(_refused(err), "error")
        return _room(visit_id, status=err.status)
    flash(_l("The visit is cancelled. A paid fee is refunded."), "ok")
    return redirect(url_for("visits.room", visit_id=visit_id))


# --- the visit room (both sides) --------------------------------------------------------


def _room(visit_id: str, status: int = 200, **forms: FlaskForm) -> Any:
    account = _me()
    visit = lifecycle.visit_for(page_principal(), record_id(visit_id))
    if account.role == Role.PATIENT:
        visit_room.patient_present(visit)
    notes = list(visit.notes)
    ctx = {
        "queue_position": queues.queue_position(visit),
        "room_extras": [extra(visit, account) for extra in current_app.extensions.get("visit_room_extras", [])],
        "visit": visit,
        "account": account,
        "is_physician": account.role == Role.PHYSICIAN,
        "mine": visit.physician_id == account.id,
        "completion": [n for n in notes if n.kind == "completion"],
        "message_form": forms.get("message_form") or MessageForm(),
        "complete_form": forms.get("complete_form") or CompleteForm(),
        "terminate_form": forms.get("terminate_form") or TerminateForm(),
        "cancel_form": forms.get("cancel_form") or CancelForm(),
        "can_cancel": rules.can_cancel(visit.status),
        "payments_on": current_app.extensions.get("payments") is not None,
    }
    if account.role == Role.PHYSICIAN:
        history = visit_room.patient_history(account.id, visit)
        ctx["history"] = [h for h in history if not h.current]
        weights = [rx.weight_kg for h in history for rx in h.prescriptions if rx.weight_kg is not None]
        ctx["known_weight"] = weights[0] if weights else None
    return render_template("visits/room.html", **ctx), status


@bp.get("/visits/<visit_id>")
@participant_page
def room(visit_id: str) -> Any:
    return _room(visit_id)


@bp.get("/visits/<visit_id>/live")
@participant_page
def live(visit_id: str) -> Any:
    """What the room polls every few seconds: the status and the messages (HTML)."""
    account = _me()
    visit = lifecycle.visit_for(page_principal(), record_id(visit_id))
    if account.role == Role.PATIENT:
        visit_room.patient_present(visit)
    html = render_template("visits/_messages.html", visit=visit, account=account, messages=visit.messages)
    resp = jsonify(
        {
            "status": visit.status.value,
            "count": len(visit.messages),
            "html": html,
            "queue_position": queues.queue_position(visit),
        }
    )
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/visits/<visit_id>/video-token")
@participant_page
def video_token(visit_id: str) -> Any:
    """The room page's Twilio Video token: participants only, while the visit is in progress."""
    grant = visit_room.video_grant(page_principal(), record_id(visit_id))
    cfg = settings()
    token = twilio_adapter.video_token(
        cfg.TWILIO_ACCOUNT_SID, cfg.TWILIO_API_KEY_SID, cfg.TWILIO_API_KEY_SECRET, grant.identity, grant.room
    )
    resp = jsonify({"token": token, "room": grant.room})
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/vendor/twilio-video.min.js")
def twilio_video_sdk() -> Response:
    """The Twilio Video SDK from the project's npm install (package-lock.json), served by the app."""
    return send_from_directory(
        PROJECT_ROOT / "node_modules" / "twilio-video" / "dist", "twilio-video.min.js", max_age=86400
    )


@bp.post("/visits/<visit_id>/messages")
@participant_page
def send_message(visit_id: str) -> Any:
    form = MessageForm()
    if not form.validate_on_submit():
        return _room(visit_id, status=422, message_form=form)
    image = _read(form.image.data, settings().MAX_IMAGE_BYTES)
    text = (form.text.data or "").strip() or None
    try:
        visit_room.post_message(page_principal(), record_id(visit_id), text, image)
    except DomainError as err:
        flash(_refused(err), "error")
        return _room(visit_id, status=err.status, message_form=form)
    return redirect(url_for("visits.room", visit_id=visit_id, _anchor="send"))


@bp.get("/visits/<visit_id>/messages/<message_id>/image")
@participant_page
def message_image(visit_id: str, message_id: str) -> Response:
    data, mime = visit_room.message_image(page_principal(), record_id(visit_id), record_id(message_id))
    resp = Response(data, mimetype=mime)
    resp.headers["Cache-Control"] = "private, no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Disposition"] = "attachment"  # shown by <img>, never opened as a page
    resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return resp


# --- physicians: proofs to confirm ------------------------------------------------------


@bp.get("/physician/proofs")
@physician_page
def proof_queue() -> Any:
    return render_template("visits/proof_queue.html", proofs=proofs.pending_diagnoses_for(page_principal().account_id))


def _proof_page(diagnosis_id: str, status: int = 200, reject_form: RejectForm | None = None) -> Any:
    diag = proofs.diagnosis_for(page_principal(), record_id(diagnosis_id))
    return render_template("visits/proof.html", diag=diag, reject_form=reject_form or RejectForm()), status


@bp.get("/physician/proofs/<diagnosis_id>")
@physician_page
def proof(diagnosis_id: str) -> Any:
    return _proof_page(diagnosis_id)


@bp.post("/physician/proofs/<diagnosis_id>/confirm")
@physician_page
def confirm_proof(diagnosis_id: str) -> Any:
    try:
        proofs.confirm_diagnosis(page_principal(), record_id(diagnosis_id))
    except DomainError as err:
        if err.code == FACE_REQUIRED:
            return _to_face(err, url_for("visits.proof", diagnosis_id=diagnosis_id))
        flash(_refused(err), "error")
        return _proof_page(diagnosis_id, err.status)
    flash(_l("Confirmed: the patient may now request return visits for it."), "ok")
    return redirect(url_for("visits.proof_queue"))


@bp.post("/physician/proofs/<diagnosis_id>/reject")
@physician_page
def reject_proof(diagnosis_id: str) -> Any:
    form = RejectForm()
    if not form.validate_on_submit():
        return _proof_page(diagnosis_id, 422, form)
    try:
        proofs.reject_diagnosis(page_principal(), record_id(diagnosis_id), form.reason.data)
    except DomainError as err:
        flash(_refused(err), "error")
        return _proof_page(diagnosis_id, err.status, form)
    flash(_l("Declined; the patient sees your reason."), "ok")
    return redirect(url_for("visits.proof_queue"))


# --- physicians: visits -----------------------------------------------------------------


@bp.get("/physician/visits")
@physician_page
def visit_queue() -> Any:
    me = page_principal()
    mine = lifecycle.visits_of(me)
    return render_template(
        "visits/visit_queue.html",
        waiting=queues.waiting_visits_for(me.account_id),
        active=[v for v in mine if v.status == VisitStatus.IN_PROGRESS],
        closed=[v for v in mine if v.status != VisitStatus.IN_PROGRESS][:50],
    )


@bp.post("/physician/visits/<visit_id>/accept")
@physician_page
def accept(visit_id: str) -> Any:
    try:
        lifecycle.accept_visit(page_principal(), record_id(visit_id))
    except DomainError as err:
        if err.code == FACE_REQUIRED:
            return _to_face(err, url_for("visits.room", visit_id=visit_id))
        flash(_refused(err), "error")
        return _room(visit_id, status=err.status)
    flash(_l("You have taken this visit."), "ok")
    return redirect(url_for("visits.room", visit_id=visit_id))


@bp.post("/physician/visits/<visit_id>/complete")
@physician_page
def complete(visit_id: str) -> Any:
    form = CompleteForm()
    if not form.validate_on_submit():
        return _room(visit_id, status=422, complete_form=form)
    try:
        lifecycle.complete_visit(page_principal(), record_id(visit_id), form.note.data)
    except DomainError as err:
        flash(_refused(err), "error")
        return _room(visit_id, status=err.status, complete_form=form)
    flash(_l("The visit is completed and its note recorded."), "ok")
    return redirect(url_for("visits.room", visit_id=visit_id))


@bp.post("/physician/visits/<visit_id>/terminate")
@physician_page
def terminate(visit_id: str) -> Any:
    form = TerminateForm()
    if not form.validate_on_submit():
        return _room(visit_id, status=422, terminate_form=form)
    try:
        lifecycle.terminate_visit(page_principal(), record_id(visit_id), form.reason.data, form.referral_advice.data)
    except DomainError as err:
        flash(_refused(err), "error")
        return _room(visit_id, status=err.status, terminate_form=form)
    flash(_l("The visit is ended and the patient referred to an in-person clinic."), "ok")
    return redirect(url_for("visits.room", visit_id=visit_id))


# --- the physician's workstation home: this domain's panels ---------------------------------


# Panels are read with the account id as a string (clinic.core.pages).


def _waiting(physician_id: str) -> list[Any]:
    return queues.waiting_visits_for(uuid.UUID(physician_id))


def _named_me(physician_id: str) -> list[Any]:
    return [v for v in _waiting(physician_id) if str(v.requested_physician_id) == physician_id]


def _department_waiting(physician_id: str) -> list[Any]:
    return [v for v in _waiting(physician_id) if v.requested_physician_id is None]


def _proofs_to_confirm(physician_id: str) -> list[Any]:
    return proofs.pending_diagnoses_for(uuid.UUID(physician_id))


def _in_progress(physician_id: str) -> list[Any]:
    me = lifecycle.physician_account(uuid.UUID(physician_id))
    return [v for v in lifecycle.visits_of(Principal(me.id, me.role)) if v.status == VisitStatus.IN_PROGRESS]


PANELS = (
    Panel(
        "proofs",
        Words("待确认的线下诊断", "Proofs to confirm"),
        "visits/_panel_proofs.html",
        _proofs_to_confirm,
        order=10,
    ),
    Panel("named", Words("指定我的复诊", "Visits that named you"), "visits/_panel_visits.html", _named_me, order=20),
    Panel(
        "waiting",
        Words("本科室等待接诊", "Waiting in your department"),
        "visits/_panel_visits.html",
        _department_waiting,
        order=30,
    ),
    Panel("in_progress", Words("接诊中", "In progress"), "visits/_panel_visits.html", _in_progress, order=40),
)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    for panel in PANELS:
        register_panel("physician", panel)
