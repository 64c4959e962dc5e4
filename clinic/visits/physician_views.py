"""The physician's return-visit pages (a workstation or a tablet): the proofs of in-person
diagnoses to confirm or decline, the waiting visits, accepting, completing and ending a
visit (refusals are shown in the visit room), and this domain's panels on the physician's
home page."""

from __future__ import annotations

import uuid
from typing import Any

from flask import flash, redirect, render_template, url_for
from flask_babel import lazy_gettext as _l

from clinic.core.db import record_id
from clinic.core.errors import DomainError
from clinic.core.pages import Panel, Words, page_principal, physician_page
from clinic.core.principal import Principal
from clinic.visits import lifecycle, proofs, queues
from clinic.visits.forms import CompleteForm, RejectForm, TerminateForm
from clinic.visits.room_views import room_page
from clinic.visits.rules import VisitStatus
from clinic.visits.views import FACE_REQUIRED, bp, refused, to_face

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
            return to_face(err, url_for("visits.proof", diagnosis_id=diagnosis_id))
        flash(refused(err), "error")
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
        flash(refused(err), "error")
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
            return to_face(err, url_for("visits.room", visit_id=visit_id))
        flash(refused(err), "error")
        return room_page(visit_id, status=err.status)
    flash(_l("You have taken this visit."), "ok")
    return redirect(url_for("visits.room", visit_id=visit_id))


@bp.post("/physician/visits/<visit_id>/complete")
@physician_page
def complete(visit_id: str) -> Any:
    form = CompleteForm()
    if not form.validate_on_submit():
        return room_page(visit_id, status=422, complete_form=form)
    try:
        lifecycle.complete_visit(page_principal(), record_id(visit_id), form.note.data)
    except DomainError as err:
        flash(refused(err), "error")
        return room_page(visit_id, status=err.status, complete_form=form)
    flash(_l("The visit is completed and its note recorded."), "ok")
    return redirect(url_for("visits.room", visit_id=visit_id))


@bp.post("/physician/visits/<visit_id>/terminate")
@physician_page
def terminate(visit_id: str) -> Any:
    form = TerminateForm()
    if not form.validate_on_submit():
        return room_page(visit_id, status=422, terminate_form=form)
    try:
        lifecycle.terminate_visit(page_principal(), record_id(visit_id), form.reason.data, form.referral_advice.data)
    except DomainError as err:
        flash(refused(err), "error")
        return room_page(visit_id, status=err.status, terminate_form=form)
    flash(_l("The visit is ended and the patient referred to an in-person clinic."), "ok")
    return redirect(url_for("visits.room", visit_id=visit_id))


# --- the physician's workstation home: this domain's panels ---------------------------------


def _waiting(physician_id: uuid.UUID) -> list[Any]:
    return queues.waiting_visits_for(physician_id)


def _named_me(physician_id: uuid.UUID) -> list[Any]:
    return [v for v in _waiting(physician_id) if v.requested_physician_id == physician_id]


def _department_waiting(physician_id: uuid.UUID) -> list[Any]:
    return [v for v in _waiting(physician_id) if v.requested_physician_id is None]


def _proofs_to_confirm(physician_id: uuid.UUID) -> list[Any]:
    return proofs.pending_diagnoses_for(physician_id)


def _in_progress(physician_id: uuid.UUID) -> list[Any]:
    me = lifecycle.physician_account(physician_id)
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
