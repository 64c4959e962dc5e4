"""Family-doctor pages of the team at a desk: the panel (urgent and overdue first), one
patient in one place, countersigning and ending contracts, follow-ups, long-term renewal,
acknowledging an urgent reading. On the family-doctor blueprint (views.py)."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from clinic.core.db import db, record_id
from clinic.core.errors import DomainError
from clinic.core.pages import bj, page_principal, physician_page
from clinic.family_doctor import contracts, followups, long_term, readings, rules, services
from clinic.family_doctor.views import bp, charts, refused

# --- the team ---------------------------------------------------------------------------------


@bp.get("/family-doctor/team")
@physician_page
def team() -> Any:
    me = page_principal()
    rows = followups.panel(me)
    return render_template(
        "family_doctor/panel.html",
        rows=rows,
        teams=services.teams_of(me.account_id),
        alerts=sum(1 for r in rows if r.open_alerts),
        overdue=sum(1 for r in rows if r.overdue),
        pending=sum(1 for r in rows if r.contract.status == rules.ContractStatus.PENDING),
    )


def _team_patient_page(patient_id: str, status: int = 200) -> Any:
    from clinic.visits.models import Visit
    from prescriptions.models import Prescription

    me = page_principal()
    view = followups.plan_for(me, record_id(patient_id), readings=60)
    visits = list(
        db.session.scalars(
            select(Visit).where(Visit.patient_id == view.patient.id).order_by(Visit.created_at.desc()).limit(20)
        ).unique()
    )
    prescriptions = list(
        db.session.scalars(
            select(Prescription)
            .where(Prescription.patient_id == view.patient.id)
            .order_by(Prescription.signed_at.desc())
            .limit(20)
        ).unique()
    )
    return render_template(
        "family_doctor/team_patient.html",
        view=view,
        charts=charts(view.readings),
        visits=visits,
        prescriptions=prescriptions,
        is_lead=view.contract is not None and view.contract.team.lead_id == me.account_id,
    ), status


@bp.get("/family-doctor/team/patients/<patient_id>")
@physician_page
def team_patient(patient_id: str) -> Any:
    return _team_patient_page(patient_id)


@bp.post("/family-doctor/team/contracts/<contract_id>/countersign")
@physician_page
def countersign(contract_id: str) -> Any:
    try:
        c = contracts.countersign(page_principal(), record_id(contract_id))
    except DomainError as err:
        flash(refused(err), "error")
        return redirect(url_for("family_doctor.team"))
    flash(_l("Countersigned: the contract runs until %(day)s.", day=bj(c.valid_until)), "ok")
    return redirect(url_for("family_doctor.team_patient", patient_id=str(c.patient_id)))


@bp.post("/family-doctor/team/contracts/<contract_id>/end")
@physician_page
def team_end(contract_id: str) -> Any:
    try:
        contracts.end_contract(page_principal(), record_id(contract_id), request.form.get("reason", ""))
    except DomainError as err:
        flash(refused(err), "error")
        return redirect(url_for("family_doctor.team"))
    flash(_l("The contract has ended."), "ok")
    return redirect(url_for("family_doctor.team"))


@bp.post("/family-doctor/team/patients/<patient_id>/followups")
@physician_page
def followup(patient_id: str) -> Any:
    f = request.form
    try:
        done = followups.record_followup(
            page_principal(), record_id(patient_id), f.get("method", ""), f.get("classification", ""), f.get("note", "")
        )
    except DomainError as err:
        flash(refused(err), "error")
        return _team_patient_page(patient_id, err.status)
    flash(_l("Follow-up recorded; the next one is due on %(day)s.", day=bj(done.next_due)), "ok")
    return redirect(url_for("family_doctor.team_patient", patient_id=patient_id))


@bp.post("/family-doctor/team/patients/<patient_id>/long-term-renewal")
@physician_page
def renew_long_term(patient_id: str) -> Any:
    try:
        long_term.renew_long_term(page_principal(), record_id(patient_id), record_id(request.form.get("visit_id", "")))
    except DomainError as err:
        flash(refused(err), "error")
        return _team_patient_page(patient_id, err.status)
    flash(_l("The long-term prescription was renewed and sent to the pharmacists for review."), "ok")
    return redirect(url_for("family_doctor.team_patient", patient_id=patient_id))


@bp.post("/family-doctor/team/alerts/<alert_id>/acknowledge")
@physician_page
def acknowledge(alert_id: str) -> Any:
    try:
        alert = readings.acknowledge_alert(page_principal(), record_id(alert_id))
    except DomainError as err:
        flash(refused(err), "error")
        return redirect(url_for("family_doctor.team"))
    return redirect(url_for("family_doctor.team_patient", patient_id=str(alert.patient_id)))
