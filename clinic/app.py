"""The application factory: the only module that knows every package."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from flask_migrate import Migrate
from flask_wtf.csrf import CSRFProtect

from clinic.core import audit_cli, audit_sequencer, crypto, i18n, jobs, limits, pages, security, web
from clinic.core.api import build_blueprint
from clinic.core.config import PROJECT_ROOT, Config, bind
from clinic.core.db import db

csrf = CSRFProtect()
migrate = Migrate()


def load_models() -> None:
    """Import every domain's models so that the metadata is complete (Alembic, tests)."""
    import clinic.core.audit
    import clinic.core.idempotency
    import clinic.core.jobs
    import clinic.family_doctor.models
    import clinic.feedback.models
    import clinic.notifications.models
    import clinic.payments.models
    import clinic.regulator.models
    import clinic.telemedicine.models
    import clinic.visits.models  # noqa: F401
    import identity.models  # noqa: F401
    import pharmacy.models  # noqa: F401
    import prescriptions.models  # noqa: F401


def create_app(config: Config | None = None, **overrides: Any) -> Flask:
    cfg = config or Config.from_env(**overrides)
    app = Flask(
        __name__,
        instance_path=cfg.INSTANCE_PATH,
        template_folder="templates",
        static_folder="static",
    )
    bind(app, cfg)  # app.config mirrors cfg; settings() reads cfg, typed
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    db.configure(cfg.DATABASE_URL)
    crypto.configure(cfg.FIELD_KEYS, cfg.LOOKUP_KEY)
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"))
    csrf.init_app(app)
    limits.init_app(app)
    security.init_app(app)  # CSP and the other security headers on every answer
    i18n.init_app(app)
    web.init_app(app)
    pages.init_app(app)  # role decorators' hooks: the page actor, labels, Beijing time, favicon
    jobs.init_app(app)  # after web: outbox jobs run after the request's commit point
    audit_sequencer.init_app(app)  # the audit log's sequencer and checkpoints
    audit_cli.init_app(app)  # `flask audit ...`

    from clinic import payments
    from clinic.admin import api as admin_api
    from clinic.admin import audit_log
    from clinic.family_doctor import api as family_doctor_api
    from clinic.family_doctor import contract_api as fd_contract_api
    from clinic.family_doctor import followup_api as fd_followup_api
    from clinic.feedback import api as feedback_api
    from clinic.feedback import views as feedback_views
    from clinic.notifications import api as notifications_api
    from clinic.notifications import services as notifications_services
    from clinic.notifications import views as notifications_views
    from clinic.payments import api as payments_api
    from clinic.payments.services import register_purpose
    from clinic.regulator import api as regulator_api
    from clinic.regulator import cli as regulator_cli
    from clinic.regulator import incidents as regulator_incidents
    from clinic.regulator import telemedicine_fhir as regulator_telemedicine_fhir
    from clinic.telemedicine import api as telemedicine_api
    from clinic.telemedicine import consultation_api, referral_api, settlement_api
    from clinic.telemedicine import federation as telemedicine_federation
    from clinic.telemedicine import partners as telemedicine_partners
    from clinic.visits import api as visits_api
    from clinic.visits import lifecycle as visit_lifecycle
    from clinic.visits import visit_api
    from identity import api as identity_api
    from identity import cli as identity_cli
    from identity import face_api as identity_face_api
    from identity import otp, views
    from identity import reclaim_api as identity_reclaim_api
    from identity.tokens import load_principal

    otp.init_app(app)
    views.init_app(app)
    identity_cli.init_app(app)  # flask face enroll|unlock

    from clinic.visits import views as visits_views

    visits_views.init_app(app)  # return-visit pages

    from prescriptions import views as rx_views

    rx_views.init_app(app)  # prescribing pages, formulary import

    from clinic.family_doctor import views as fd_views

    fd_views.init_app(app)  # family-doctor pages: patients, the team's panel, administration

    from clinic.visits import visit_room
    from pharmacy import api as pharmacy_api
    from pharmacy import checkout as pharmacy_checkout
    from pharmacy import delivery as pharmacy_delivery
    from pharmacy import dispensing as pharmacy_dispensing
    from pharmacy import partner_api as pharmacy_partner_api
    from pharmacy import patient_api as pharmacy_patient_api
    from pharmacy import services as pharmacy_services
    from pharmacy import views as pharmacy_views
    from prescriptions import api as rx_api
    from prescriptions import cli as rx_cli
    from prescriptions import document as rx_document
    from prescriptions import events as rx_events
    from prescriptions import reads as rx_reads
    from prescriptions import services as rx_services
    from prescriptions import signing as rx_signing

    notifications_services.register_jobs()  # outbox handler: the patients' SMS
    pharmacy_delivery.register_jobs()  # outbox handler: partner dispatch
    regulator_incidents.register_jobs()  # outbox handler: the incident SMS to the regulator
    telemedicine_federation.register_jobs()  # outbox handler: signed messages to partner institutions
    from clinic.telemedicine import (
        consultation_answers,
        consultation_attachments,
        consultation_opinions,
        consultation_requests,
        consultations,
        referral_receiving,
        referral_sending,
        settlements,
    )

    for receiver in (
        telemedicine_federation,
        consultations,
        consultation_requests,
        consultation_answers,
        consultation_attachments,
        consultation_opinions,
        referral_sending,
        referral_receiving,
        settlements,
    ):
        receiver.register_events()  # what a signed message of each event from a partner does here
    pharmacy_views.init_app(app)  # review queue and screen, prescription tracking
    notifications_views.init_app(app)  # the notification centre, SMS short links
    feedback_views.init_app(app)  # physician directory, ratings, complaints
    # The patient's visit room shows the rating of a completed visit and the complaint link.
    app.extensions.setdefault("visit_room_extras", []).append(feedback_views.room_block)

    api_bp, _ = build_blueprint(
        [
            identity_api.router,
            identity_face_api.router,
            identity_reclaim_api.router,
            admin_api.router,
            visits_api.router,
            visit_api.router,
            payments_api.router,
            rx_api.router,
            rx_signing.router,
            regulator_api.router,
            audit_log.router,
            pharmacy_partner_api.router,
            pharmacy_api.router,
            pharmacy_patient_api.router,
            family_doctor_api.router,
            fd_contract_api.router,
            fd_followup_api.router,
            telemedicine_api.router,
            referral_api.router,
            consultation_api.router,
            settlement_api.router,
            notifications_api.router,
            feedback_api.router,
        ],
        load_principal,
    )
    app.register_blueprint(rx_signing.well_known)
    # The institution's own key beside the prescription keys, with its own kid
    app.extensions.setdefault("jwks_extra", []).append(telemedicine_partners.published_keys)
    rx_cli.init_app(app)
    from pharmacy import cli as pharmacy_cli

    pharmacy_cli.init_app(app)  # flask pharmacy remind-unpaid
    csrf.exempt(api_bp)  # the API takes Bearer tokens only, never cookies
    app.register_blueprint(api_bp)
    audit_log.init_app(app)  # the audit viewer (admin pages)
    regulator_cli.init_app(app)  # keys, retention, regulator scopes
    from clinic.regulator.clinic_fhir import register_clinic_resources
    from clinic.regulator.fhir import register_resource
    from pharmacy.models import Review as PharmacyReview
    from prescriptions.fhir import MedicationRequestSource

    register_clinic_resources()  # Organization, Practitioner, Patient, Condition, Encounter, AuditEvent
    register_resource("MedicationRequest", MedicationRequestSource(review_model=PharmacyReview))
    from clinic.family_doctor import fhir as fd_fhir

    fd_fhir.register()  # CarePlan (family-doctor contracts, follow-ups), Observation (home readings)
    regulator_telemedicine_fhir.register()  # ServiceRequest, Task, DiagnosticReport (between institutions)
    # GET /visits/{id} lists the visit's prescriptions: the visit domain cannot import them.
    app.extensions.setdefault("visit_extras", []).append(rx_api.visit_prescriptions)
    visit_room.on_history(app, rx_views.visit_history)  # the room's patient history shows prescriptions
    from clinic.family_doctor import services as fd_services

    # Contracted patients reach their family-doctor team first in the waiting queue.
    visit_lifecycle.on_visit_first(app, fd_services.visit_first)

    payments.init_app(app)  # PAYMENTS=stripe: the fee port; the signed webhook
    register_purpose("consultation", visit_lifecycle.mark_visit_paid)
    register_purpose("drug_fee", pharmacy_checkout.mark_drug_fee_paid)  # approved prescription, fee paid
    rx_events.on_signed(app, pharmacy_services.queue_signed)  # every signed prescription is queued for review
    rx_events.on_status_changed(app, pharmacy_services.close_unreviewed)  # expired, voided: off the queue
    rx_reads.on_approval_lookup(app, pharmacy_services.approval_of)  # the pharmacist's counter-signature
    rx_reads.on_review_read(app, pharmacy_services.outcome_of)  # the decision as the physician reads it
    rx_document.on_review_facts(app, pharmacy_dispensing.document_facts)  # reviewer, amount, dispensers
    pharmacy_delivery.on_status_change(app, pharmacy_dispensing.follow_delivery)  # the prescription follows

    from clinic.admin import labels as admin_labels
    from clinic.admin import reclaims as admin_reclaims
    from clinic.admin import views as admin_views
    from clinic.family_doctor import labels as fd_labels
    from clinic.visits import labels as visit_labels
    from identity import labels as identity_labels
    from pharmacy import labels as pharmacy_labels
    from prescriptions import labels as rx_labels

    admin_views.init_app(app)  # the administrator's console
    admin_reclaims.init_app(app)  # the staff check of ID number reclaims
    from clinic.admin import services as admin_services
    from identity import reclaims as identity_reclaims

    identity_reclaims.set_teller(app, admin_services.tell_reclaim_decision)  # the claimant is told of a decision
    identity_reclaims.add_records_follow(app, "visits", visit_lifecycle.visits_follow_patient)
    identity_reclaims.add_records_follow(app, "prescriptions", rx_services.prescriptions_follow_patient)
    for domain in (identity_labels, visit_labels, rx_labels, pharmacy_labels, fd_labels, admin_labels):
        domain.register()  # one mapping of codes to words per domain

    from clinic import cli
    from clinic.family_doctor import cli as family_doctor_cli

    cli.init_app(app)
    family_doctor_cli.init_app(app)  # `flask family-doctor remind` (daily), `... level`
    from clinic.telemedicine import cli as telemedicine_cli

    telemedicine_cli.init_app(app)  # `flask partners link|ping|resend`
    from clinic.telemedicine import views as telemedicine_views

    telemedicine_views.init_app(app)  # the administrator's partner institutions page
    return app
