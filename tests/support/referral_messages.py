"""A partner institution's referral request, as it would sign and send it (tests)."""

from __future__ import annotations

import uuid

from clinic.telemedicine import envelope, referrals

PARTNER_URL = "http://127.0.0.1:9"  # nobody listens: deliveries fail quietly and stay queued
OWN_URL = "http://127.0.0.1:5000"


def request_from_partner(
    key: envelope.InstitutionKey,
    name: str,
    id_number: str,
    phone: str = "+8613912345678",
    direction: str = "up",
    icd10: tuple[str, ...] = ("I10",),
) -> tuple[str, str]:
    """A referral request as a partner sends it: the signed token and its shared id."""
    shared, pid = str(uuid.uuid4()), str(uuid.uuid4())
    ident = [{"system": referrals.TASK_SYSTEM, "value": shared}]
    conditions = [
        {
            "resourceType": "Condition",
            "id": str(uuid.uuid4()),
            "code": {"coding": [{"system": referrals.ICD10, "code": code}], "text": "原发性高血压"},
            "subject": {"reference": f"Patient/{pid}"},
            "recordedDate": "2021-05-06",
            "note": [{"text": "乙区人民医院"}],
        }
        for code in icd10
    ]
    resources = [
        {
            "resourceType": "Task",
            "id": str(uuid.uuid4()),
            "identifier": ident,
            "status": "requested",
            "intent": "order",
            "for": {"reference": f"Patient/{pid}"},
        },
        {
            "resourceType": "ServiceRequest",
            "id": str(uuid.uuid4()),
            "identifier": ident,
            "status": "active",
            "intent": "order",
            "orderDetail": [{"coding": [{"system": referrals.DIRECTION_SYSTEM, "code": direction}]}],
            "subject": {"reference": f"Patient/{pid}"},
            "requester": {"display": "周医生"},
            "performerType": {"coding": [{"system": referrals.DEPARTMENT_SYSTEM, "code": "cardiology"}]},
            "reasonCode": [{"text": "血压控制不佳，需上级医院调整方案"}],
            "note": [{"text": "三种降压药联用，血压仍 170/100。"}],
        },
        {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": referrals.ID_SYSTEM, "value": id_number}],
            "name": [{"text": name}],
            "contact": [
                {
                    "relationship": [{"coding": [{"system": referrals.RELATION_SYSTEM, "code": "self"}]}],
                    "name": {"text": name},
                    "telecom": [{"system": "phone", "value": phone}],
                }
            ],
        },
        *conditions,
    ]
    bundle = envelope.build_message(referrals.REQUEST_EVENT, PARTNER_URL, "乙区社区卫生服务中心", OWN_URL, resources)
    return envelope.sign(key, bundle), shared
