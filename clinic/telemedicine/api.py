"""Endpoints between institutions (API.md "Between institutions"): the cooperation
agreements (admin) and the signed federation inbox (a partner institution; the JWS is the
authentication)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Literal

from flask import Response, current_app, request
from pydantic import Field, model_validator
from werkzeug.datastructures import FileStorage

from clinic.core.api import ApiRouter, FilePart, Principal, RawBody, RequestModel, ResponseModel
from clinic.core.errors import Invalid
from clinic.telemedicine import consultations, envelope, referrals, rules, services
from clinic.telemedicine.models import Consultation, PartnerInstitution, Referral
from identity import services as identity

router = ApiRouter("telemedicine")
ADMIN = ["admin"]


class PartnerFeeSplit(RequestModel):
    inviting: int = Field(ge=0, le=100, description="The inviting institution's share, percent")
    invited: int = Field(ge=0, le=100, description="The invited institution's share, percent")

    @model_validator(mode="after")
    def _sums_to_100(self) -> PartnerFeeSplit:
        if self.inviting + self.invited != 100:
            raise ValueError("the inviting and invited shares must sum to 100")
        return self


class PartnerPublicJwk(RequestModel):
    kty: Literal["EC"]
    crv: Literal["P-256"]
    x: str = Field(min_length=40, max_length=64)
    y: str = Field(min_length=40, max_length=64)
    kid: str = Field(min_length=1, max_length=128)
    alg: Literal["ES256"] | None = None
    use: Literal["sig"] | None = None


class PartnerInstitutionIn(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    license_no: str = Field(min_length=1, max_length=64)
    level: Literal["三级", "二级", "一级", "基层"]
    base_url: str = Field(min_length=8, max_length=300)
    public_jwk: PartnerPublicJwk
    services: list[Literal["consultation", "remote_diagnosis", "referral"]] = Field(min_length=1, max_length=3)
    departments: list[str] = Field(default_factory=list, max_length=100)
    fee_fen: int = Field(ge=0, le=rules.MAX_FEE_FEN)
    fee_split: PartnerFeeSplit
    valid_from: date
    valid_until: date
    consult_min_title: Literal["住院医师", "主治医师", "副主任医师", "主任医师"] | None = Field(
        default="副主任医师",
        description="The lowest title that may answer this partner's consultations (Jilin measures Art. 14)",
    )


class PartnerInstitutionOut(ResponseModel):
    id: uuid.UUID
    name: str
    license_no: str
    level: str
    base_url: str
    public_jwk: dict[str, Any]
    kid: str
    services: list[str]
    departments: list[str]
    fee_fen: int
    fee_split: dict[str, int]
    valid_from: date
    valid_until: date
    in_force: bool
    created_at: datetime
    key_rotated_at: datetime | None
    consult_min_title: str | None


class PartnerInstitutionsOut(ResponseModel):
    items: list[PartnerInstitutionOut]


class PartnerCreated(ResponseModel):
    id: uuid.UUID


def partner_out(p: PartnerInstitution) -> PartnerInstitutionOut:
    return PartnerInstitutionOut(
        id=p.id,
        name=p.name,
        license_no=p.license_no,
        level=p.level,
        base_url=p.base_url,
        public_jwk=dict(p.public_jwk),
        kid=p.kid,
        services=list(p.services),
        departments=list(p.departments),
        fee_fen=p.fee_fen,
        fee_split={"inviting": p.split_inviting, "invited": p.split_invited},
        valid_from=p.valid_from,
        valid_until=p.valid_until,
        in_force=services.agreement_in_force(p),
        created_at=p.created_at,
        key_rotated_at=p.key_rotated_at,
        consult_min_title=p.consult_min_title or None,
    )


def terms_of(body: PartnerInstitutionIn) -> rules.AgreementTerms:
    return rules.AgreementTerms(
        name=body.name,
        license_no=body.license_no,
        level=body.level,
        base_url=body.base_url,
        public_jwk=body.public_jwk.model_dump(exclude_none=True),
        services=tuple(dict.fromkeys(body.services)),
        departments=tuple(d.strip() for d in body.departments if d.strip()),
        fee_fen=body.fee_fen,
        split_inviting=body.fee_split.inviting,
        split_invited=body.fee_split.invited,
        valid_from=body.valid_from,
        valid_until=body.valid_until,
    )


@router.post(
    "/admin/partner-institutions",
    summary="Register a partner institution under a cooperation agreement (合作协议): its pinned "
    "institution key, services, departments, fee and split, validity",
    body=PartnerInstitutionIn,
    response=PartnerCreated,
    status=201,
    roles=ADMIN,
    errors={409: ["partner_exists"], 422: ["invalid"]},
)
def create_partner(body: PartnerInstitutionIn, principal: Principal) -> PartnerCreated:
    partner = services.register_partner(terms_of(body))
    partner.consult_min_title = body.consult_min_title or ""
    return PartnerCreated(id=partner.id)


@router.get(
    "/admin/partner-institutions",
    summary="The partner institutions and their agreements",
    response=PartnerInstitutionsOut,
    roles=ADMIN,
)
def partners(principal: Principal) -> PartnerInstitutionsOut:
    return PartnerInstitutionsOut(items=[partner_out(p) for p in services.list_partners()])


class PartnerKeyIn(RequestModel):
    public_jwk: PartnerPublicJwk


@router.post(
    "/admin/partner-institutions/<partner_id>/key",
    summary="Pin a partner institution's new key (the explicit act of key rotation); audited",
    body=PartnerKeyIn,
    response=PartnerInstitutionOut,
    roles=ADMIN,
    errors={404: ["not_found"], 409: ["partner_exists"], 422: ["invalid"]},
)
def rotate_key(partner_id: str, body: PartnerKeyIn, principal: Principal) -> PartnerInstitutionOut:
    return partner_out(services.rotate_partner_key(partner_id, body.public_jwk.model_dump(exclude_none=True)))


class FederationAccepted(ResponseModel):
    id: str  # the MessageHeader id
    duplicate: bool


SIGNED_MESSAGE = RawBody(
    media_type="application/jose",
    schema={
        "type": "string",
        "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
        "maxLength": envelope.MAX_MESSAGE_BYTES,
        "description": "Compact JWS serialization (RFC 7515 §7.1): BASE64URL(header).BASE64URL(payload)."
        "BASE64URL(signature). Header: alg ES256, kid the sender's institution key (as in its "
        "/.well-known/jwks.json and pinned here by the cooperation agreement), typ fhir+jws. Payload: "
        "a FHIR R4 Bundle of type message whose first entry is a MessageHeader (its id makes a "
        "repeated delivery a no-op; eventCoding.code names the event; source.endpoint the sender).",
    },
    description="The signed message, as the text of a compact JWS (no JSON wrapper)",
)


@router.post(
    "/federation/messages",
    summary="A partner institution's signed message: a compact JWS (ES256, Content-Type "
    "application/jose) whose payload is a FHIR R4 message Bundle, MessageHeader first; "
    "verified with the sender's pinned key; the same MessageHeader id again changes nothing",
    response=FederationAccepted,
    status=202,
    auth="none",
    raw_body=SIGNED_MESSAGE,
    errors={
        401: ["bad_signature"],
        403: ["no_agreement"],
        409: ["illegal_transition"],  # e.g. a referral's outcome before its acceptance
        415: ["unsupported_media_type"],
        422: ["invalid_message", "unknown_event", "bad_direction", "unknown_referral"],
    },
)
def federation_inbox() -> FederationAccepted:
    if request.mimetype != "application/jose":
        raise Invalid("The message must be sent as application/jose.", code="unsupported_media_type").with_status(415)
    raw = request.get_data(cache=False)
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise services.BadSignature("The message is not a compact JWS.") from None
    received = services.receive(token)
    return FederationAccepted(id=received.message.message_id, duplicate=received.duplicate)


# --- two-way referral (双向转诊) -------------------------------------------------------------

REFERRAL_READERS = ["physician", "admin", "patient"]


class ReferralIn(RequestModel):
    patient_id: uuid.UUID
    institution_id: uuid.UUID = Field(description="The partner institution (its id in the agreements)")
    direction: Literal["up", "down"] = Field(description="up: to a higher level (基层 → 上级); down: to a lower one")
    department: str = Field(min_length=1, max_length=64, description="The receiving department asked for")
    reason: str = Field(min_length=2, max_length=2000)
    summary: str = Field(min_length=2, max_length=20000, description="The clinical summary sent with the patient")
    visit_id: uuid.UUID | None = Field(default=None, description="The visit the referral is made from, if any")


class ReferralCreated(ResponseModel):
    id: uuid.UUID
    status: str


class ReferralDiagnosisOut(ResponseModel):
    id: uuid.UUID
    icd10: str
    name: str
    institution: str
    diagnosed_on: date
    confirmed: bool
    diagnosis_id: uuid.UUID | None
    confirmed_at: datetime | None


class ReferralOut(ResponseModel):
    id: uuid.UUID
    shared_id: str
    role: Literal["sending", "receiving"]
    institution_id: uuid.UUID
    institution_name: str
    direction: str
    status: str
    department: str
    reason: str
    summary: str
    patient_id: uuid.UUID | None
    patient_name: str
    identity_match: str
    requester_name: str
    appointment_at: datetime | None
    place: str | None
    decline_reason: str | None
    outcome: dict[str, Any] | None
    responder_name: str
    created_at: datetime
    responded_at: datetime | None
    closed_at: datetime | None
    diagnoses: list[ReferralDiagnosisOut]


class ReferralsOut(ResponseModel):
    items: list[ReferralOut]


def referral_out(r: Referral) -> ReferralOut:
    return ReferralOut(
        id=r.id,
        shared_id=r.shared_id,
        role="sending" if r.role == referrals.SENDING else "receiving",
        institution_id=r.partner_id,
        institution_name=r.partner.name,
        direction=r.direction,
        status=r.status,
        department=r.department,
        reason=r.reason,
        summary=r.summary,
        patient_id=r.patient_id,
        patient_name=r.patient_name,
        identity_match=r.identity_match,
        requester_name=r.requester_name,
        appointment_at=r.appointment_at,
        place=r.place,
        decline_reason=r.decline_reason,
        outcome=(
            {"summary": r.outcome_summary, "by": r.outcome_by_name, "at": r.closed_at}
            if r.outcome_summary is not None
            else None
        ),
        responder_name=r.responder_name,
        created_at=r.created_at,
        responded_at=r.responded_at,
        closed_at=r.closed_at,
        diagnoses=[
            ReferralDiagnosisOut(
                id=d.id,
                icd10=d.icd10,
                name=d.name,
                institution=d.institution,
                diagnosed_on=d.diagnosed_on,
                confirmed=d.diagnosis_id is not None,
                diagnosis_id=d.diagnosis_id,
                confirmed_at=d.confirmed_at,
            )
            for d in r.diagnoses
        ],
    )


@router.post(
    "/referrals",
    summary="Refer a patient to a partner institution, up (基层 → 上级) or down (三级 → 基层); sent as a "
    "signed FHIR message with the patient's confirmed diagnoses",
    body=ReferralIn,
    response=ReferralCreated,
    status=201,
    roles=["physician"],
    errors={
        403: ["no_agreement", "not_qualified"],
        404: ["not_found"],
        422: ["bad_direction", "invalid"],
    },
)
def create_referral(body: ReferralIn, principal: Principal) -> ReferralCreated:
    referral = referrals.send_referral(
        principal.id,
        referrals.ReferralRequest(
            patient_id=str(body.patient_id),
            institution_id=str(body.institution_id),
            direction=body.direction,
            department=body.department,
            reason=body.reason,
            summary=body.summary,
            visit_id=str(body.visit_id) if body.visit_id else None,
        ),
    )
    return ReferralCreated(id=referral.id, status=referral.status)


@router.get(
    "/referrals",
    summary="The institution's referrals: sent (role=sending) or to answer (role=receiving), by status",
    response=ReferralsOut,
    roles=["physician", "admin"],
    errors={422: ["invalid"]},
)
def list_referrals(principal: Principal) -> ReferralsOut:
    role = request.args.get("role") or None
    status = request.args.get("status") or None
    return ReferralsOut(items=[referral_out(r) for r in referrals.list_referrals(principal.id, role, status)])


@router.get(
    "/referrals/<referral_id>",
    summary="One referral with its status, appointment, outcome and carried diagnoses",
    response=ReferralOut,
    roles=REFERRAL_READERS,
    errors={404: ["not_found"]},
)
def get_referral(referral_id: str, principal: Principal) -> ReferralOut:
    return referral_out(referrals.referral_for(principal.id, referral_id))


class ReferralAcceptIn(RequestModel):
    appointment_at: datetime = Field(description="When the patient comes (a time without a zone is Beijing time)")
    place: str = Field(min_length=2, max_length=300, description="Where: the building, floor, clinic room")


class ReferralStatusOut(ResponseModel):
    status: str


@router.post(
    "/referrals/<referral_id>/accept",
    summary="The receiving institution accepts the referral with an appointment; the patient is told where and when",
    body=ReferralAcceptIn,
    response=ReferralStatusOut,
    roles=["physician"],
    errors={403: ["not_qualified", "not_receiving"], 404: ["not_found"], 409: ["illegal_transition"], 422: ["invalid"]},
)
def accept_referral(referral_id: str, body: ReferralAcceptIn, principal: Principal) -> ReferralStatusOut:
    return ReferralStatusOut(status=referrals.accept(principal.id, referral_id, body.appointment_at, body.place).status)


class ReferralDeclineIn(RequestModel):
    reason: str = Field(min_length=2, max_length=2000)


@router.post(
    "/referrals/<referral_id>/decline",
    summary="The receiving institution declines the referral, saying why",
    body=ReferralDeclineIn,
    response=ReferralStatusOut,
    roles=["physician"],
    errors={403: ["not_qualified", "not_receiving"], 404: ["not_found"], 409: ["illegal_transition"], 422: ["invalid"]},
)
def decline_referral(referral_id: str, body: ReferralDeclineIn, principal: Principal) -> ReferralStatusOut:
    return ReferralStatusOut(status=referrals.decline(principal.id, referral_id, body.reason).status)


class ReferralOutcomeIn(RequestModel):
    summary: str = Field(min_length=2, max_length=20000)


@router.post(
    "/referrals/<referral_id>/outcome",
    summary="The receiving institution reports the outcome back (the closed loop); the referral completes on both sides",
    body=ReferralOutcomeIn,
    response=ReferralStatusOut,
    roles=["physician"],
    errors={403: ["not_qualified", "not_receiving"], 404: ["not_found"], 409: ["illegal_transition"], 422: ["invalid"]},
)
def referral_outcome(referral_id: str, body: ReferralOutcomeIn, principal: Principal) -> ReferralStatusOut:
    return ReferralStatusOut(status=referrals.report_outcome(principal.id, referral_id, body.summary).status)


@router.post(
    "/referrals/<referral_id>/diagnoses/<carried_id>/confirm",
    summary="A physician here confirms a diagnosis the referred patient arrived with (face-verified): the "
    "patient's online return visits pass on it",
    response=ReferralStatusOut,
    roles=["physician"],
    errors={
        403: ["face_verification_required", "not_qualified", "not_receiving"],
        404: ["not_found"],
        409: ["illegal_transition", "already_reviewed"],
        422: ["not_eligible_condition", "identity_mismatch"],
    },
)
def confirm_carried_diagnosis(referral_id: str, carried_id: str, principal: Principal) -> ReferralStatusOut:
    referrals.confirm_carried(principal, referral_id, carried_id)
    return ReferralStatusOut(status="confirmed")


# --- remote consultation (tm-consult's section) ---------------------------------------------

PHYSICIAN = ["physician"]


class ConsultConsentOut(ResponseModel):
    version: str
    sha256: str
    text_zh: str
    text_en: str


class ConsultConsentIn(RequestModel):
    patient_id: uuid.UUID
    version: str = Field(min_length=1, max_length=32)


class ConsultConsentAccepted(ResponseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    version: str
    accepted_at: datetime


@router.get(
    "/consultations/consent",
    summary="The current remote-consultation consent text (what is shared with whom, the fee, "
    "that the inviting institution stays responsible) and its version",
    response=ConsultConsentOut,
    auth="none",
)
def consultation_consent_text() -> ConsultConsentOut:
    text = consultations.current_consent()
    return ConsultConsentOut(version=text.version, sha256=text.sha256, text_zh=text.text_zh, text_en=text.text_en)


@router.post(
    "/consultations/consent",
    summary="A patient (or the guardian holding the account) accepts the current remote-consultation consent",
    body=ConsultConsentIn,
    response=ConsultConsentAccepted,
    status=201,
    roles=["patient"],
    errors={404: ["not_found"], 409: ["stale_version"]},
)
def accept_consultation_consent(body: ConsultConsentIn, principal: Principal) -> ConsultConsentAccepted:
    acc = consultations.accept_consent(identity.get_account(principal.id), str(body.patient_id), body.version)
    return ConsultConsentAccepted(
        id=acc.id, patient_id=acc.patient_id, version=acc.version, accepted_at=acc.accepted_at
    )


class ConsultationIn(RequestModel):
    patient_id: uuid.UUID
    institution_id: uuid.UUID
    department: str = Field(min_length=1, max_length=64)
    question: str = Field(min_length=1, max_length=2000)
    summary: str = Field(min_length=1, max_length=8000)
    urgency: Literal["routine", "urgent"] = "routine"
    present_physician_ids: list[uuid.UUID] = Field(min_length=1, max_length=10)
    visit_id: uuid.UUID | None = None


class ConsultationCreated(ResponseModel):
    id: uuid.UUID
    task_id: str
    status: str


class AttachmentOut(ResponseModel):
    id: uuid.UUID
    filename: str
    media_type: str
    size: int
    sha256: str
    created_at: datetime


class ConsultNoteOut(ResponseModel):
    id: uuid.UUID
    side: str
    author: str
    text: str
    at: datetime


class OpinionOut(ResponseModel):
    opinion: str
    recommendations: str
    jws: str
    signer_kid: str
    signer_jwk: dict[str, Any]
    signer: str
    signer_title: str
    signed_at: datetime


class ConsultationOut(ResponseModel):
    id: uuid.UUID
    task_id: str
    role: str
    status: str
    partner: dict[str, Any]
    department: str
    urgency: str
    question: str
    summary: str
    patient_id: uuid.UUID | None
    patient: dict[str, Any]
    conditions: list[dict[str, Any]]
    requester: str
    present_physicians: list[dict[str, Any]]
    specialist: str | None
    specialist_title: str | None
    fee_fen: int
    fee_split: dict[str, int]
    requested_at: datetime
    accepted_at: datetime | None
    completed_at: datetime | None
    acknowledged_at: datetime | None
    attachments: list[AttachmentOut] | None = None
    messages: list[ConsultNoteOut] | None = None
    opinion: OpinionOut | None = None


class ConsultationsOut(ResponseModel):
    items: list[ConsultationOut]


def consultation_out(c: Consultation, detail: bool = True) -> ConsultationOut:
    out = ConsultationOut(
        id=c.id,
        task_id=c.task_id,
        role=c.role,
        status=c.status,
        partner={"id": str(c.partner.id), "name": c.partner.name, "level": c.partner.level},
        department=c.department,
        urgency=c.urgency,
        question=c.question,
        summary=c.summary,
        patient_id=c.patient_id,
        patient=consultations.patient_of(c),
        conditions=list(c.conditions or []),
        requester=c.requester_name,
        present_physicians=list(c.present_physicians or []),
        specialist=c.specialist_name or None,
        specialist_title=c.specialist_title or None,
        fee_fen=c.fee_fen,
        fee_split={"inviting": c.split_inviting, "invited": c.split_invited},
        requested_at=c.requested_at,
        accepted_at=c.accepted_at,
        completed_at=c.completed_at,
        acknowledged_at=c.acknowledged_at,
    )
    if detail:
        out.attachments = [
            AttachmentOut(
                id=a.id,
                filename=a.filename,
                media_type=a.media_type,
                size=a.size,
                sha256=a.sha256,
                created_at=a.created_at,
            )
            for a in consultations.attachments_of(c)
        ]
        out.messages = [
            ConsultNoteOut(id=n.id, side=n.side, author=n.author_name, text=n.text, at=n.created_at)
            for n in consultations.notes_of(c)
        ]
        op = consultations.opinion_of(c)
        if op is not None:
            out.opinion = OpinionOut(
                opinion=op.opinion,
                recommendations=op.recommendations,
                jws=op.jws,
                signer_kid=op.signer_kid,
                signer_jwk=dict(op.signer_jwk),
                signer=op.signer_name,
                signer_title=op.signer_title,
                signed_at=op.signed_at,
            )
    return out


@router.post(
    "/consultations",
    summary="Request a remote consultation from a partner institution's department for your patient "
    "(face-verified physician; the patient's remote-consultation consent first); sent as a signed FHIR message",
    body=ConsultationIn,
    response=ConsultationCreated,
    status=201,
    roles=PHYSICIAN,
    errors={
        403: ["face_verification_required", "not_qualified", "no_agreement"],
        404: ["not_found"],
        422: ["consent_required", "invalid"],
    },
)
def request_consultation(body: ConsultationIn, principal: Principal) -> ConsultationCreated:
    c = consultations.request_consultation(
        principal,
        consultations.ConsultationRequest(
            patient_id=str(body.patient_id),
            institution_id=str(body.institution_id),
            department=body.department,
            question=body.question,
            summary=body.summary,
            urgency=body.urgency,
            present_physician_ids=tuple(str(p) for p in body.present_physician_ids),
            visit_id=str(body.visit_id) if body.visit_id else None,
        ),
    )
    return ConsultationCreated(id=c.id, task_id=c.task_id, status=c.status)


@router.post(
    "/consultations/<consultation_id>/attachments",
    summary="Attach a record, image or ECG/lab report (multipart `file`: PDF, JPEG or PNG, size-checked); "
    "it follows the request to the partner",
    files=[FilePart("file", description="PDF, JPEG or PNG")],
    response=AttachmentOut,
    status=201,
    roles=PHYSICIAN,
    errors={
        403: ["forbidden"],
        404: ["not_found"],
        409: ["consultation_closed"],
        413: ["too_large"],
        422: ["invalid_upload"],
    },
)
def add_attachment(consultation_id: str, files: dict[str, FileStorage | None], principal: Principal) -> AttachmentOut:
    upload = files["file"]
    limit = int(current_app.config.get("CONSULT_MAX_ATTACHMENT_BYTES", consultations.DEFAULT_MAX_ATTACHMENT_BYTES))
    data = upload.stream.read(limit + 1) if upload is not None else b""
    a = consultations.add_attachment(principal.id, consultation_id, upload.filename or "" if upload else "", data)
    return AttachmentOut(
        id=a.id, filename=a.filename, media_type=a.media_type, size=a.size, sha256=a.sha256, created_at=a.created_at
    )


@router.get(
    "/consultations/<consultation_id>/attachments/<attachment_id>",
    summary="An attachment of a consultation (its physicians, administrators)",
    roles=["physician", "admin"],
    raw_response="application/octet-stream",
)
def attachment_file(consultation_id: str, attachment_id: str, principal: Principal) -> Response:
    att, data = consultations.attachment_bytes(identity.get_account(principal.id), consultation_id, attachment_id)
    return Response(
        data,
        mimetype=att.media_type,
        headers={
            "Cache-Control": "private, no-store",
            "Content-Disposition": "attachment",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


class ConsultationsQuery(RequestModel):
    role: Literal["inviting", "invited"] | None = None
    status: Literal["requested", "accepted", "in-progress", "completed", "rejected", "cancelled", "failed"] | None = (
        None
    )


@router.get(
    "/consultations",
    summary="Consultations this institution asked for (role=inviting) or was asked (role=invited): "
    "a physician sees their own and their department's queue, an administrator all",
    query=ConsultationsQuery,
    response=ConsultationsOut,
    roles=["physician", "admin"],
)
def list_consultations(query: ConsultationsQuery, principal: Principal) -> ConsultationsOut:
    rows = consultations.consultations_of(identity.get_account(principal.id), query.role, query.status)
    return ConsultationsOut(items=[consultation_out(c, detail=False) for c in rows])


@router.get(
    "/consultations/<consultation_id>",
    summary="A consultation with its attachments, messages and the signed opinion (`opinion.jws`)",
    response=ConsultationOut,
    roles=["physician", "admin"],
    errors={404: ["not_found"]},
)
def get_consultation(consultation_id: str, principal: Principal) -> ConsultationOut:
    return consultation_out(consultations.consultation_for(identity.get_account(principal.id), consultation_id))


class ConsultStatusOut(ResponseModel):
    status: str


@router.post(
    "/consultations/<consultation_id>/accept",
    summary="Take a consultation asked of this institution (face-verified, qualified in its department, "
    "title at or above the agreement's requirement)",
    response=ConsultStatusOut,
    roles=PHYSICIAN,
    errors={403: ["face_verification_required", "not_qualified"], 404: ["not_found"], 409: ["illegal_transition"]},
)
def accept_consultation(consultation_id: str, principal: Principal) -> ConsultStatusOut:
    return ConsultStatusOut(status=consultations.accept(principal, consultation_id).status)


class ConsultReasonIn(RequestModel):
    reason: str = Field(min_length=1, max_length=1000)


@router.post(
    "/consultations/<consultation_id>/decline",
    summary="Decline a consultation asked of this department (FHIR Task rejected)",
    body=ConsultReasonIn,
    response=ConsultStatusOut,
    roles=PHYSICIAN,
    errors={403: ["forbidden"], 404: ["not_found"], 409: ["illegal_transition"]},
)
def decline_consultation(consultation_id: str, body: ConsultReasonIn, principal: Principal) -> ConsultStatusOut:
    return ConsultStatusOut(status=consultations.decline(principal.id, consultation_id, body.reason).status)


@router.post(
    "/consultations/<consultation_id>/cancel",
    summary="Withdraw a consultation request (the requesting physician; FHIR Task cancelled)",
    body=ConsultReasonIn,
    response=ConsultStatusOut,
    roles=PHYSICIAN,
    errors={403: ["forbidden"], 404: ["not_found"], 409: ["illegal_transition"]},
)
def cancel_consultation(consultation_id: str, body: ConsultReasonIn, principal: Principal) -> ConsultStatusOut:
    return ConsultStatusOut(status=consultations.cancel(principal.id, consultation_id, body.reason).status)


class NoteIn(RequestModel):
    text: str = Field(min_length=1, max_length=4000)


@router.post(
    "/consultations/<consultation_id>/messages",
    summary="Ask back (the accepting specialist) or answer (the inviting physician); sent to the other side",
    body=NoteIn,
    response=ConsultNoteOut,
    status=201,
    roles=PHYSICIAN,
    errors={403: ["forbidden"], 404: ["not_found"], 409: ["consultation_closed", "illegal_transition"]},
)
def write_note(consultation_id: str, body: NoteIn, principal: Principal) -> ConsultNoteOut:
    n = consultations.write_note(principal.id, consultation_id, body.text)
    return ConsultNoteOut(id=n.id, side=n.side, author=n.author_name, text=n.text, at=n.created_at)


class OpinionIn(RequestModel):
    opinion: str = Field(min_length=1, max_length=8000)
    recommendations: str = Field(default="", max_length=8000)


@router.post(
    "/consultations/<consultation_id>/opinion",
    summary="The consultation opinion (会诊意见) of the accepting specialist, signed with their own key and "
    "sent back to the inviting institution as a signed DiagnosticReport",
    body=OpinionIn,
    response=ConsultStatusOut,
    roles=PHYSICIAN,
    errors={403: ["face_verification_required", "forbidden"], 404: ["not_found"], 409: ["illegal_transition"]},
)
def write_opinion(consultation_id: str, body: OpinionIn, principal: Principal) -> ConsultStatusOut:
    c = consultations.write_opinion(principal, consultation_id, body.opinion, body.recommendations)
    return ConsultStatusOut(status=c.status)


class AcknowledgedOut(ResponseModel):
    status: str
    acknowledged_at: datetime


@router.post(
    "/consultations/<consultation_id>/acknowledge",
    summary="The inviting physician acknowledges the opinion (it is in the patient's record)",
    response=AcknowledgedOut,
    roles=PHYSICIAN,
    errors={403: ["forbidden"], 404: ["not_found"], 409: ["no_opinion"]},
)
def acknowledge_consultation(consultation_id: str, principal: Principal) -> AcknowledgedOut:
    c = consultations.acknowledge(principal.id, consultation_id)
    assert c.acknowledged_at is not None
    return AcknowledgedOut(status=c.status, acknowledged_at=c.acknowledged_at)


# --- settlements between institutions (tm-consult's section) ------------------------------------


class SettlementQuery(RequestModel):
    partner_id: uuid.UUID | None = None
    month: str | None = Field(default=None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM (Beijing)")


class StatementOut(ResponseModel):
    count: int
    total_fen: int
    inviting_share_fen: int
    invited_share_fen: int
    at: datetime


class DifferenceOut(ResponseModel):
    count: int
    total_fen: int
    inviting_share_fen: int
    invited_share_fen: int
    only_here: list[str]
    only_partner: list[str]
    differing: list[str]


class SettlementOut(ResponseModel):
    partner_id: uuid.UUID
    partner_name: str
    month: str
    count: int
    total_fen: int
    inviting_share_fen: int
    invited_share_fen: int
    owed_to_partner_fen: int
    owed_by_partner_fen: int
    matches_partner: bool | None
    partner_statement: StatementOut | None
    sent_statement: StatementOut | None
    difference: DifferenceOut | None
    lines: list[dict[str, Any]]


def _statement_out(row: Any) -> StatementOut | None:
    if row is None:
        return None
    return StatementOut(
        count=row.count,
        total_fen=row.total_fen,
        inviting_share_fen=row.inviting_share_fen,
        invited_share_fen=row.invited_share_fen,
        at=row.created_at,
    )


def settlement_out(s: consultations.Settlement) -> SettlementOut:
    r = s.reconciliation
    return SettlementOut(
        partner_id=s.partner.id,
        partner_name=s.partner.name,
        month=s.month,
        count=s.ours.count,
        total_fen=s.ours.total_fen,
        inviting_share_fen=s.ours.inviting_share_fen,
        invited_share_fen=s.ours.invited_share_fen,
        owed_to_partner_fen=s.ours.owed_to_partner_fen,
        owed_by_partner_fen=s.ours.owed_by_partner_fen,
        matches_partner=s.matches_partner,
        partner_statement=_statement_out(s.theirs),
        sent_statement=_statement_out(s.sent),
        difference=None
        if r is None
        else DifferenceOut(
            count=r.count,
            total_fen=r.total_fen,
            inviting_share_fen=r.inviting_share_fen,
            invited_share_fen=r.invited_share_fen,
            only_here=r.only_here,
            only_partner=r.only_partner,
            differing=r.differing,
        ),
        lines=[
            {
                "task_id": line.task_id,
                "role": "inviting" if line.we_invited else "invited",
                "fee_fen": line.fee_fen,
                "inviting_share_fen": line.inviting_share_fen,
                "invited_share_fen": line.invited_share_fen,
            }
            for line in s.ours.lines
        ],
    )


def _partner_for_settlement(partner_id: uuid.UUID | None) -> str:
    if partner_id is not None:
        return str(partner_id)
    partners = services.list_partners()
    if len(partners) != 1:
        raise Invalid(
            "Name the partner institution (partner_id).", fields=[{"loc": "partner_id", "message": "required"}]
        )
    return str(partners[0].id)


@router.get(
    "/admin/settlements",
    summary="The month's settlement with a partner institution (Jilin Art. 41–44): count, total and each "
    "side's share in fen, reconciled against the partner's signed statement (matches_partner null until "
    "one has arrived) with the difference",
    query=SettlementQuery,
    response=SettlementOut,
    roles=ADMIN,
    errors={404: ["not_found"], 422: ["invalid"]},
)
def settlements(query: SettlementQuery, principal: Principal) -> SettlementOut:
    month = query.month or consultations.current_month()
    return settlement_out(consultations.settlement(_partner_for_settlement(query.partner_id), month))


class StatementIn(RequestModel):
    partner_id: uuid.UUID
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM (Beijing)")


@router.post(
    "/admin/settlements/statements",
    summary="Send this institution's statement of the month to the partner as a signed message; the partner "
    "records it and answers with its own, so both sides can reconcile",
    body=StatementIn,
    response=SettlementOut,
    status=202,
    roles=ADMIN,
    errors={403: ["no_agreement"], 404: ["not_found"], 422: ["invalid"]},
)
def send_statement(body: StatementIn, principal: Principal) -> tuple[SettlementOut, int]:
    consultations.send_statement(body.partner_id, body.month)
    return settlement_out(consultations.settlement(body.partner_id, body.month)), 202
