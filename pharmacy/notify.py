"""SMS to patients about their prescriptions, through the outbox (job kind "sms").

With SMS_BACKEND=twilio the message goes through Twilio Messages with the real SDK
(`clinic.core.twilio.make_client`; tests point it at a local stand-in); otherwise it is
written to the app log. Each message is a `Notification` row committed with the state
change that caused it, so none is lost if Twilio is down (the job retries).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import current_app
from sqlalchemy.orm import Session

from clinic.core import jobs
from clinic.core.db import db, utcnow
from pharmacy.models import Notification

log = logging.getLogger("clinic.sms")

SMS_JOB = "sms"

# Patients read these on a phone: zh-CN by default, English when the site's default is English.
TEMPLATES: dict[str, dict[str, str]] = {
    "approved": {
        "zh_CN": "【{hospital}】您的处方（{rx}）已通过药师审核。请在“我的处方”中支付药费，支付后将为您配送。",
        "en": "[{hospital}] Your prescription ({rx}) was approved by the pharmacist. Pay the drug fee under "
        "'My prescriptions'; it is delivered after payment.",
    },
    "rejected": {
        "zh_CN": "【{hospital}】您的处方（{rx}）未通过药师审核：{reasons}。药品不会配发，也不会收取药费。"
        "请联系开方医生复诊调整处方，或到医院线下就诊。",
        "en": "[{hospital}] Your prescription ({rx}) was not approved by the pharmacist: {reasons}. Nothing will "
        "be dispensed or charged. Ask your physician for a revised prescription, or visit the hospital in person.",
    },
    "returned": {
        "zh_CN": "【{hospital}】药师已将您的处方（{rx}）退回医生修改，修改后会再次审核，请留意通知。",
        "en": "[{hospital}] The pharmacist returned your prescription ({rx}) to the physician for a change; it "
        "will be reviewed again.",
    },
    "shipped": {
        "zh_CN": "【{hospital}】您的药品（处方 {rx}）已由{partner}取件配送，可在“我的处方”中查看物流。",
        "en": "[{hospital}] Your medicines (prescription {rx}) were picked up by {partner}; track them under "
        "'My prescriptions'.",
    },
    "delivered": {
        "zh_CN": "【{hospital}】您的药品（处方 {rx}）已送达。请按医嘱用药，如有不适请及时就医。",
        "en": "[{hospital}] Your medicines (prescription {rx}) were delivered. Take them as prescribed.",
    },
    "collect": {
        "zh_CN": "【{hospital}】您的药品（处方 {rx}）暂无法配送到您的地址，请携带身份证到医院药房取药。",
        "en": "[{hospital}] Your medicines (prescription {rx}) cannot be delivered to your address; please "
        "collect them at the hospital pharmacy with your ID card.",
    },
}


def render(kind: str, locale: str, **params: Any) -> str:
    texts = TEMPLATES[kind]
    template = texts.get(locale) or texts.get(locale.split("_")[0]) or texts["zh_CN"]
    params.setdefault("hospital", "互联网医院" if locale.startswith("zh") else "Internet hospital")
    return template.format(**params)


def notify(session: Session, kind: str, phone: str | None, subject_id: uuid.UUID, **params: Any) -> Notification | None:
    """Record an SMS for the patient and put it in the outbox; nothing if no phone is known."""
    if not phone:
        log.info("no phone for %s %s: SMS not sent", kind, subject_id)
        return None
    locale = str(current_app.config.get("BABEL_DEFAULT_LOCALE", "zh_CN"))
    params.setdefault("rx", str(subject_id)[:8])
    note = Notification(kind=kind, subject_id=subject_id, to_phone=phone, body=render(kind, locale, **params))
    session.add(note)
    session.flush()
    jobs.enqueue(session, SMS_JOB, {"notification_id": str(note.id)})
    return note


def send_sms_job(payload: dict[str, Any]) -> None:
    """The outbox handler: send (or log) one Notification, once it is committed."""
    from twilio.base.exceptions import TwilioRestException

    from clinic.core.twilio import make_client

    note = db.session.get(Notification, uuid.UUID(payload["notification_id"]))
    if note is None:
        raise jobs.PermanentJobError("the notification does not exist")
    if note.status != "queued":
        return
    cfg = current_app.config
    if cfg.get("SMS_BACKEND") == "twilio":
        client = make_client(cfg["TWILIO_ACCOUNT_SID"], cfg["TWILIO_AUTH_TOKEN"], cfg.get("TWILIO_BASE_URL", ""))
        try:
            msg = client.messages.create(to=note.to_phone, from_=cfg.get("TWILIO_SMS_FROM") or None, body=note.body)
        except TwilioRestException as exc:
            if 400 <= int(exc.status or 0) < 500 and exc.status != 429:
                raise jobs.PermanentJobError(f"Twilio refused the message: {exc.code} {exc.msg}") from exc
            raise
        note.status, note.provider_ref = "sent", str(msg.sid)
    else:
        masked = "*" * max(len(note.to_phone) - 4, 0) + note.to_phone[-4:]
        log.info("SMS (log backend) to %s: %s", masked, note.body)
        note.status = "logged"
    note.sent_at = utcnow()


def register_jobs() -> None:
    jobs.register(SMS_JOB, send_sms_job)
