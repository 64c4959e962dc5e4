"""A remote consultation asked of this institution (the invited side): the partner's signed
request arrives and waits for the department; a physician of the invited department,
face-fresh, qualified there and of the agreement's title (Jilin measures Art. 14) accepts
it, or declines it saying why; the partner may withdraw it. Writing the opinion is in
`consultation_opinions`; asking for a consultation (the inviting side) in
`consultation_requests`.

Use cases load, apply the rules, change state, audit and enqueue; none commits."""

from __future__ import annotations

import json
import uuid
from typing import Any

from clinic.core import audit
from clinic.core.db import db, utcnow
from clinic.core.errors import DomainError, Forbidden, RuleRefusal, Violation
from clinic.core.principal import Principal
from clinic.telemedicine import federation
from clinic.telemedicine.consultations import (
    DEPARTMENT_SYSTEM,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_REJECTED,
    EV_REQUEST,
    INVITED,
    URGENCIES,
    as_physician,
    bundle_resources,
    closed_by_partner,
    consultation_for,
    department_of,
    iso,
    move,
    name_of,
    parse_time,
    reason_given,
    refuse,
    require_agreement,
    task_id_of,
    task_resource,
    tell_department,
    title_of,
)
from clinic.telemedicine.models import Consultation, FederationMessage, PartnerInstitution
from clinic.telemedicine.rules import N_, TaskEvent, TaskStatus, meets_title
from identity import face_services
from identity import services as identity


def accept(who: Principal, consultation_id: uuid.UUID) -> Consultation:
    """A physician of the invited department takes the consultation: face-fresh, qualified
    there, and of at least the title the agreement requires (Jilin Art. 14)."""
    physician = as_physician(who)
    face_services.require_fresh_face(who)
    c = consultation_for(who, consultation_id)
    if c.role != INVITED:
        raise Forbidden(N_("The invited institution's physicians accept consultations."))
    try:
        identity.require_qualified_physician(physician, department=c.department)
    except DomainError as err:
        raise refuse(err, c, physician=str(physician.id)) from None
    required = c.partner.consult_min_title
    if not meets_title(title_of(physician), required):
        raise refuse(
            RuleRefusal(
                "not_qualified",
                [
                    Violation(
                        "title_below_requirement",
                        N_("The agreement requires a %(required)s or above to answer its consultations."),
                        detail={"required": required, "title": title_of(physician)},
                    )
                ],
                lead=N_("The physician may not answer this consultation:"),
            ).with_status(403),
            c,
            physician=str(physician.id),
            title=title_of(physician),
            required=required,
        ) from None
    move(c, TaskEvent.ACCEPT, physician=str(physician.id))
    c.accepted_by, c.accepted_at = physician.id, utcnow()
    c.specialist_name, c.specialist_title = name_of(physician), title_of(physician)
    task = task_resource(c)
    task["owner"] = {"display": f"{c.specialist_name}（{c.specialist_title}）"}
    task["lastModified"] = iso(c.accepted_at)
    federation.send(c.partner_id, EV_ACCEPTED, [task])
    return c


def decline(who: Principal, consultation_id: uuid.UUID, reason: str) -> Consultation:
    physician = as_physician(who)
    c = consultation_for(who, consultation_id)
    if c.role != INVITED or department_of(physician) != c.department:
        raise Forbidden(N_("A physician of the invited department declines consultations."))
    reason = reason_given(reason)
    move(c, TaskEvent.REJECT, reason=reason)
    federation.send(c.partner_id, EV_REJECTED, [{**task_resource(c), "statusReason": {"text": reason}}])
    return c


# --- received messages: the partner's request, its withdrawal ------------------------------------


def _on_request(_message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
    requests_ = bundle_resources(bundle, "ServiceRequest")
    sr = requests_[0] if requests_ else None
    tasks = bundle_resources(bundle, "Task")
    patients = bundle_resources(bundle, "Patient")
    if sr is None or not tasks or not patients:
        raise federation.BadMessage(N_("A consultation request carries a Task, a ServiceRequest and a Patient."))
    task_id = task_id_of(bundle)
    codings = (sr.get("performerType") or {}).get("coding") or []
    department = next((str(c.get("code")) for c in codings if c.get("system") == DEPARTMENT_SYSTEM), "")
    if not department:
        raise federation.BadMessage(N_("The consultation request names no department."))
    require_agreement(partner, department)
    task, pat = tasks[0], patients[0]
    priority = str(sr.get("priority") or "routine")
    notes = sr.get("note") or [{}]
    present = next((n.get("text", "") for n in task.get("note") or []), "")
    c = Consultation(
        task_id=task_id,
        role=INVITED,
        partner_id=partner.id,
        status=TaskStatus.REQUESTED.value,
        department=department[:64],
        urgency=priority if priority in URGENCIES else "routine",
        question=str(task.get("description") or next((r.get("text") for r in sr.get("reasonCode") or []), "")),
        summary=str(notes[0].get("text") or ""),
        patient_json=json.dumps(
            {
                "name": next((n.get("text") for n in pat.get("name") or []), ""),
                "sex": pat.get("gender", ""),
                "birth_date": pat.get("birthDate", ""),
            },
            ensure_ascii=False,
        ),
        conditions=[
            {
                "icd10": next((cd.get("code") for cd in (cond.get("code") or {}).get("coding") or []), ""),
                "name": (cond.get("code") or {}).get("text", ""),
            }
            for cond in bundle_resources(bundle, "Condition")
        ],
        requester_name=str((sr.get("requester") or {}).get("display") or "")[:100],
        present_physicians=[{"name": present.removeprefix("在场医师：")}] if present else [],
        fee_fen=partner.fee_fen,
        split_inviting=partner.split_inviting,
        split_invited=partner.split_invited,
        requested_at=parse_time(sr.get("authoredOn")) or utcnow(),
    )
    db.session.add(c)
    db.session.flush()
    audit.record(
        db.session(),
        "consultation.received",
        subject_type="consultation",
        subject_id=c.id,
        detail={"task_id": task_id, "partner_id": str(partner.id), "department": department},
    )
    tell_department(c)


def register_events() -> None:
    federation.register_event(EV_REQUEST, _on_request)
    federation.register_event(EV_CANCELLED, closed_by_partner(TaskEvent.CANCEL, INVITED))
