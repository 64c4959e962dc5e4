"""The consultation opinion (会诊意见): written by the accepting specialist, signed with their
own key, sent back as a DiagnosticReport whose signature the inviting side verifies before
it stores the opinion."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from jose import jws
from jose.exceptions import JOSEError
from sqlalchemy import select

from clinic.core import audit
from clinic.core.db import db, utcnow
from clinic.core.errors import Forbidden
from clinic.core.principal import Principal
from clinic.telemedicine import federation, partners
from clinic.telemedicine.consultations import (
    EV_OPINION,
    INVITED,
    INVITING,
    TASK_SYSTEM,
    as_physician,
    bundle_resources,
    consultation_for,
    iso,
    move,
    name_of,
    our_consultation,
    parse_time,
    task_id_of,
    task_resource,
    tell_requester,
    title_of,
)
from clinic.telemedicine.models import (
    Consultation,
    ConsultationOpinion,
    FederationMessage,
    PartnerInstitution,
)
from clinic.telemedicine.rules import (
    N_,
    TaskEvent,
    TaskStatus,
)
from identity import face_services
from identity.models import Account

SIGNER_JWK_URL = "urn:clinic:signer-jwk"
OPINION_TYP = "opinion+jws"


def _sign_opinion(physician: Account, content: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """Sign with the physician's own key (the one their prescriptions are signed with)."""
    from prescriptions import signing

    key = signing.ensure_key(physician.id)
    token = jws.sign(
        signing.canonical_json(content).encode(),
        key.private_key.decode(),
        headers={"kid": key.kid, "typ": OPINION_TYP},
        algorithm="ES256",
    )
    return str(token), key.kid, dict(key.public_jwk)


def write_opinion(who: Principal, consultation_id: uuid.UUID, opinion: str, recommendations: str) -> Consultation:
    """The accepting specialist's opinion (会诊意见), signed with their own key, sent back
    as a DiagnosticReport; the consultation is completed on both sides."""
    physician = as_physician(who)
    face_services.require_fresh_face(who)
    c = consultation_for(who, consultation_id)
    if c.role != INVITED or c.accepted_by != physician.id:
        raise Forbidden(N_("Only the specialist who accepted the consultation writes its opinion."))
    signed_at = utcnow().replace(microsecond=0)
    content: dict[str, Any] = {
        "type": "consultation_opinion",
        "task_id": c.task_id,
        "opinion": opinion,
        "recommendations": recommendations,
        "signer": {
            "name": name_of(physician),
            "title": title_of(physician),
            "department": c.department,
            "license_no": physician.staff.license_no if physician.staff else None,
        },
        "institution": partners.own_name(),
        "signed_at": iso(signed_at),
    }
    token, kid, jwk = _sign_opinion(physician, content)
    move(c, TaskEvent.COMPLETE, physician=str(physician.id), signer_kid=kid)
    c.completed_at = signed_at
    _store_opinion(c, content, token, kid, jwk, signed_at)
    report = {
        "resourceType": "DiagnosticReport",
        "id": str(uuid.uuid4()),
        "extension": [{"url": SIGNER_JWK_URL, "valueString": json.dumps(jwk, sort_keys=True)}],
        "identifier": [{"system": TASK_SYSTEM, "value": c.task_id}],
        "basedOn": [{"reference": f"ServiceRequest/{c.task_id}"}],
        "status": "final",
        "code": {"text": "远程会诊意见"},
        "issued": iso(signed_at),
        "performer": [{"display": f"{name_of(physician)}（{title_of(physician)}）"}],
        "conclusion": opinion,
        "presentedForm": [
            {"contentType": "application/jose", "data": base64.b64encode(token.encode()).decode(), "title": "会诊意见"}
        ],
    }
    federation.send(c.partner_id, EV_OPINION, [task_resource(c), report])
    return c


def _store_opinion(
    c: Consultation, content: dict[str, Any], token: str, kid: str, jwk: dict[str, Any], signed_at: datetime
) -> ConsultationOpinion:
    signer = content.get("signer") or {}
    op = ConsultationOpinion(
        consultation_id=c.id,
        opinion=str(content["opinion"]),
        recommendations=str(content.get("recommendations") or ""),
        jws=token,
        signer_kid=kid,
        signer_jwk=jwk,
        signer_name=str(signer.get("name") or "")[:100],
        signer_title=str(signer.get("title") or "")[:64],
        signed_at=signed_at,
    )
    db.session.add(op)
    db.session.flush()
    audit.record(
        db.session(),
        "consultation.opinion_signed" if c.role == INVITED else "consultation.opinion_received",
        subject_type="consultation",
        subject_id=c.id,
        detail={"task_id": c.task_id, "signer_kid": kid, "sha256": hashlib.sha256(token.encode()).hexdigest()},
    )
    return op


def verify_opinion(token: str, jwk: dict[str, Any]) -> dict[str, Any]:
    """The signed opinion's content, or BadSignature."""
    try:
        header = jws.get_unverified_header(token)
        if header.get("alg") != "ES256" or header.get("kid") != jwk.get("kid"):
            raise federation.BadSignature(N_("The opinion is not signed with the key the message names."))
        content = json.loads(jws.verify(token, jwk, algorithms=["ES256"]))
    except (JOSEError, ValueError) as exc:
        raise federation.BadSignature(N_("The opinion's signature does not verify.")) from exc
    if not isinstance(content, dict) or content.get("type") != "consultation_opinion":
        raise federation.BadSignature(N_("The signed content is not a consultation opinion."))
    return content


# --- reading and receiving the opinion -------------------------------------------------------------


def opinion_of(c: Consultation) -> ConsultationOpinion | None:
    return db.session.scalar(select(ConsultationOpinion).where(ConsultationOpinion.consultation_id == c.id))


def _on_opinion(_message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
    c = our_consultation(partner, INVITING, task_id_of(bundle))
    reports = bundle_resources(bundle, "DiagnosticReport")
    if not reports:
        raise federation.BadMessage(N_("An opinion message carries a DiagnosticReport."))
    report = reports[0]
    try:
        jwk = json.loads(
            next(e["valueString"] for e in report.get("extension") or [] if e.get("url") == SIGNER_JWK_URL)
        )
        token = base64.b64decode((report.get("presentedForm") or [{}])[0].get("data") or "").decode("ascii")
    except (StopIteration, KeyError, ValueError, TypeError):
        raise federation.BadMessage(N_("The opinion carries no signature or no signer key.")) from None
    content = verify_opinion(token, jwk)
    if content.get("task_id") != c.task_id or content.get("opinion") != report.get("conclusion"):
        raise federation.BadSignature(N_("The signed opinion is not the one the report carries."))
    signed_at = parse_time(content.get("signed_at")) or utcnow()
    if c.status in (TaskStatus.REQUESTED.value, TaskStatus.ACCEPTED.value, TaskStatus.IN_PROGRESS.value):
        if c.status == TaskStatus.REQUESTED.value:
            move(c, TaskEvent.ACCEPT)
        move(c, TaskEvent.COMPLETE, signer_kid=str(jwk.get("kid")))
    c.completed_at = signed_at
    _store_opinion(c, content, token, str(jwk.get("kid")), jwk, signed_at)
    tell_requester(c)


def register_events() -> None:
    federation.register_event(EV_OPINION, _on_opinion)
