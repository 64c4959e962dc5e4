"""Family-doctor pages of patients on a phone (sign, readings, chart, next follow-up), and
the blueprint with what every family-doctor page shares (charts, the words of a reading,
refusals). The team's pages are in team_views.py, the administrator's in admin_views.py,
on this blueprint. Each action calls one service and answers POST/redirect/GET; refusals
are flashed in the user's language."""

from __future__ import annotations

import importlib
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from markupsafe import Markup

from clinic.core.db import as_uuid, record_id
from clinic.core.errors import DomainError, RuleRefusal
from clinic.core.pages import bj, page_principal, patient_page
from clinic.core.web import handle_refusal, localized
from clinic.family_doctor import chart, contracts, followups, readings, rules, services
from clinic.family_doctor.models import HomeReading
from clinic.visits.views import consent_html
from identity.models import Account

bp = Blueprint(
    "family_doctor",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/family-doctor/static",
)


def _me() -> Account:
    account: Account = current_user._get_current_object()
    return account


def _english() -> bool:
    return str(get_locale()) == "en"


def refused(err: DomainError) -> str:
    """A refusal as the page flashes it: every broken rule when there are several."""
    message = handle_refusal(err)
    if isinstance(err, RuleRefusal) and len(err.violations) > 1:
        return " ".join(localized(v.message) for v in err.violations)
    return message


def yuan(fen: int) -> str:
    return f"¥{fen // 100}.{fen % 100:02d}"


def form_decimal(value: str | None) -> Decimal | None:
    """A decimal typed into a form; None when empty, malformed or not finite."""
    if value is None or not value.strip():
        return None
    try:
        d = Decimal(value.strip())
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


# --- charts -----------------------------------------------------------------------------------


def charts(readings: list[HomeReading]) -> dict[str, Markup]:
    """Blood pressure and glucose charts of the recent readings (oldest left)."""
    out: dict[str, Markup] = {}
    ordered = list(reversed(readings))
    bps = [r for r in ordered if r.kind == "bp"][-20:]
    if bps:
        out["bp"] = chart.svg(
            str(_l("Blood pressure (mmHg), recent readings")),
            [r.measured_at for r in bps],
            [
                chart.Series(str(_l("Systolic")), [float(r.systolic or 0) for r in bps], "sys", "#1565c0"),
                chart.Series(str(_l("Diastolic")), [float(r.diastolic or 0) for r in bps], "dia", "#6a1b9a"),
            ],
            [
                chart.Threshold(180, "180", "urgent"),
                chart.Threshold(140, "140", "target"),
                chart.Threshold(110, "110", "urgent"),
                chart.Threshold(90, "90", "target"),
            ],
            40,
            220,
            [bj(r.measured_at, "%m-%d") for r in bps],
            [r.classification == rules.Classification.URGENT for r in bps],
        )
    glus = [r for r in ordered if r.kind == "glucose"][-20:]
    if glus:
        out["glucose"] = chart.svg(
            str(_l("Blood glucose (mmol/L), recent readings")),
            [r.measured_at for r in glus],
            [chart.Series(str(_l("Glucose")), [float(r.glucose_mmol or 0) for r in glus], "glu", "#ef6c00")],
            [
                chart.Threshold(16.7, "16.7", "urgent"),
                chart.Threshold(7.0, "7.0", "target"),
                chart.Threshold(3.9, "3.9", "urgent"),
            ],
            0,
            25,
            [bj(r.measured_at, "%m-%d") for r in glus],
            [r.classification == rules.Classification.URGENT for r in glus],
        )
    return out


def value_text(r: HomeReading) -> str:
    if r.kind == "bp":
        return f"{r.systolic}/{r.diastolic} mmHg"
    if r.kind == "glucose":
        when = _l("fasting") if r.fasting else _l("not fasting")
        return f"{r.glucose_mmol} mmol/L（{when}）" if not _english() else f"{r.glucose_mmol} mmol/L ({when})"
    return f"{r.weight_kg} kg"


@bp.app_context_processor
def _helpers() -> dict[str, Any]:
    return {"fd_value": value_text, "fd_yuan": yuan, "fd_today": services.today}


# --- patients ---------------------------------------------------------------------------------


@bp.get("/family-doctor")
@patient_page
def home() -> Any:
    account = _me()
    people = []
    for p in account.patients:
        contract = contracts.contract_in_force(p.id)
        people.append((p, contract, contracts.active_plan(p.id)))
    return render_template(
        "family_doctor/home.html", people=people, offers=services.offers_signing(), level=services.institution_level()
    )


def _sign_page(patient_id: str, status: int = 200) -> Any:
    account = _me()
    from identity import services as identity

    person = identity.patient_of_account(account, record_id(patient_id))
    text = contracts.current_agreement()
    return render_template(
        "family_doctor/sign.html",
        person=person,
        teams=services.list_teams(),
        agreement=text,
        body=consent_html(text.text_en if _english() else text.text_zh),
        offers=services.offers_signing(),
    ), status


@bp.get("/family-doctor/sign/<patient_id>")
@patient_page
def sign(patient_id: str) -> Any:
    return _sign_page(patient_id)


@bp.post("/family-doctor/sign/<patient_id>")
@patient_page
def sign_post(patient_id: str) -> Any:
    choice = request.form.get("choice", "")
    team_id, _, package_id = choice.partition("/")
    if not request.form.get("read"):
        flash(_l("Tick the box to confirm that you have read the agreement."), "error")
        return _sign_page(patient_id, 422)
    try:
        contracts.sign_contract(
            page_principal(),
            record_id(patient_id),
            record_id(team_id),
            record_id(package_id),
            request.form.get("version", ""),
        )
    except DomainError as err:
        flash(refused(err), "error")
        return _sign_page(patient_id, err.status)
    flash(_l("Signed. The team's lead physician will confirm the contract."), "ok")
    return redirect(url_for("family_doctor.person", patient_id=patient_id))


def _person_page(patient_id: str, status: int = 200) -> Any:
    view = followups.plan_for(page_principal(), record_id(patient_id))
    just = None
    rid = as_uuid(request.args.get("r"))
    if rid is not None:
        just = next((r for r in view.readings if r.id == rid), None)
    return render_template(
        "family_doctor/person.html",
        view=view,
        just=just,
        advice=localized(rules.ADVICE[just.classification]) if just else None,
        charts=charts(view.readings),
        renewable=bool(
            view.contract
            and view.contract.valid_until
            and rules.renewal_term(view.contract.valid_until, services.today()) is not None
        ),
        agreement=contracts.current_agreement(),
        now=bj(datetime.now().astimezone(), "%Y-%m-%d %H:%M"),
    ), status


@bp.get("/family-doctor/people/<patient_id>")
@patient_page
def person(patient_id: str) -> Any:
    return _person_page(patient_id)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value and value.strip() else None
    except ValueError:
        return None


@bp.post("/family-doctor/people/<patient_id>/readings")
@patient_page
def add_reading(patient_id: str) -> Any:
    f = request.form
    kind = f.get("kind", "")
    at = None
    if f.get("at", "").strip():
        try:
            at = datetime.fromisoformat(f["at"].strip().replace("T", " ")).replace(tzinfo=services.CHINA)
        except ValueError:
            flash(_l("Write the time as 2026-03-01 08:30."), "error")
            return _person_page(patient_id, 422)
    try:
        result = readings.record_reading(
            page_principal(),
            record_id(patient_id),
            kind,
            systolic=_int(f.get("systolic")),
            diastolic=_int(f.get("diastolic")),
            glucose_mmol=form_decimal(f.get("glucose_mmol")),
            fasting=f.get("fasting") == "1",
            weight_kg=form_decimal(f.get("weight_kg")),
            at=at,
        )
    except DomainError as err:
        flash(refused(err), "error")
        return _person_page(patient_id, err.status)
    return redirect(url_for("family_doctor.person", patient_id=patient_id, r=str(result.reading.id)) + "#result")


@bp.post("/family-doctor/contracts/<contract_id>/end")
@patient_page
def end(contract_id: str) -> Any:
    try:
        c = contracts.end_contract(page_principal(), record_id(contract_id), request.form.get("reason", ""))
    except DomainError as err:
        flash(refused(err), "error")
        return redirect(url_for("family_doctor.home"))
    flash(_l("The contract has ended."), "ok")
    return redirect(url_for("family_doctor.person", patient_id=str(c.patient_id)))


@bp.post("/family-doctor/contracts/<contract_id>/renew")
@patient_page
def renew(contract_id: str) -> Any:
    try:
        c = contracts.renew_contract(page_principal(), record_id(contract_id), request.form.get("version", ""))
    except DomainError as err:
        flash(refused(err), "error")
        return redirect(url_for("family_doctor.home"))
    flash(_l("Renewed until %(day)s.", day=bj(c.valid_until)), "ok")
    return redirect(url_for("family_doctor.person", patient_id=str(c.patient_id)))


def init_app(app: Flask) -> None:
    # The team's and the administrator's pages are on this blueprint too (same endpoint names):
    # their modules add their routes to `bp` when imported, so import them before registering.
    for module in ("admin_views", "team_views"):
        importlib.import_module(f"clinic.family_doctor.{module}")

    app.register_blueprint(bp)
