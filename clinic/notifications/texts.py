"""What each notification says, in zh-CN (default) and English.

One text per kind, used both in the app (the notification centre, in the reader's
language) and in the SMS (the institution's default language, with the hospital's name
in front and a short link behind). `{name}` placeholders are filled from the params the
caller gave `notify(...)`; words among them (statuses) are already in the right language.
"""

from __future__ import annotations

from typing import Any

TEXTS: dict[str, dict[str, str]] = {
    # proofs of in-person diagnoses
    "proof_confirmed": {
        "zh_CN": "您提交的线下诊断证明（{condition}）已由医生确认，现在可以申请在线复诊。",
        "en": "Your proof of an in-person diagnosis ({condition}) was confirmed; you may now request a return visit.",
    },
    "proof_rejected": {
        "zh_CN": "您提交的线下诊断证明未被接受，原因：{reason}。",
        "en": "Your proof of an in-person diagnosis was not accepted: {reason}.",
    },
    # visits
    "visit_accepted": {
        "zh_CN": "{physician}医生已接诊您的复诊，请进入诊室与医生交流。",
        "en": "Dr {physician} has taken your return visit; please enter the visit room.",
    },
    "visit_message": {
        "zh_CN": "{physician}医生在复诊中给您发来了新消息，请进入诊室查看。",
        "en": "Dr {physician} sent you a message in your return visit; open the visit room to read it.",
    },
    "visit_completed": {
        "zh_CN": "您的复诊已结束，可查看诊疗记录和处方，并为本次复诊评价。",
        "en": "Your return visit is completed: see its record and prescriptions, and rate it.",
    },
    "visit_referred": {
        "zh_CN": "医生已结束在线诊疗，建议您到线下医院就诊：{advice}",
        "en": "The physician ended online care and advises an in-person visit: {advice}",
    },
    # prescriptions (the pharmacy's decisions and the delivery)
    "approved": {
        "zh_CN": "您的处方（{rx}）已通过药师审核。请在“我的处方”中支付药费，支付后将为您配送。",
        "en": "Your prescription ({rx}) was approved by the pharmacist. Pay the drug fee under "
        "'My prescriptions'; it is delivered after payment.",
    },
    "rejected": {
        "zh_CN": "您的处方（{rx}）未通过药师审核：{reasons}。药品不会配发，也不会收取药费。"
        "请联系开方医生复诊调整处方，或到医院线下就诊。",
        "en": "Your prescription ({rx}) was not approved by the pharmacist: {reasons}. Nothing will "
        "be dispensed or charged. Ask your physician for a revised prescription, or visit the hospital in person.",
    },
    "returned": {
        "zh_CN": "药师已将您的处方（{rx}）退回医生修改，修改后会再次审核，请留意通知。",
        "en": "The pharmacist returned your prescription ({rx}) to the physician for a change; it "
        "will be reviewed again.",
    },
    "shipped": {
        "zh_CN": "您的药品（处方 {rx}）已由{partner}取件配送，可在“我的处方”中查看物流。",
        "en": "Your medicines (prescription {rx}) were picked up by {partner}; track them under 'My prescriptions'.",
    },
    "delivered": {
        "zh_CN": "您的药品（处方 {rx}）已送达。请按医嘱用药，如有不适请及时就医。",
        "en": "Your medicines (prescription {rx}) were delivered. Take them as prescribed.",
    },
    "collect": {
        "zh_CN": "您的药品（处方 {rx}）暂无法配送到您的地址，请携带身份证到医院药房取药。",
        "en": "Your medicines (prescription {rx}) cannot be delivered to your address; please "
        "collect them at the hospital pharmacy with your ID card.",
    },
    "expiring": {
        "zh_CN": "您的处方（{rx}）药费尚未支付，将于{until}失效，请及时在“我的处方”中支付。",
        "en": "The drug fee of your prescription ({rx}) is unpaid; the prescription expires {until}. "
        "Pay it under 'My prescriptions'.",
    },
    # family-doctor contracts (clinic/family_doctor)
    "fd_followup_before": {
        "zh_CN": "{name}，您的家庭医生随访将于{due}到期，请提前测量血压/血糖并在线提交，团队会与您联系。",
        "en": "{name}, your family-doctor follow-up is due on {due}. Please measure and enter your readings "
        "beforehand; the team will contact you.",
    },
    "fd_followup_due_day": {
        "zh_CN": "{name}，今天是您的家庭医生随访日，请测量血压/血糖并在线提交，或联系您的家庭医生团队。",
        "en": "{name}, your family-doctor follow-up is due today. Please measure and enter your readings, or "
        "contact your family doctor team.",
    },
    "fd_urgent_reading": {
        "zh_CN": "签约居民{name}提交了危急读数（{summary}），已提示其立即线下就医，请尽快电话联系。",
        "en": "Contracted resident {name} entered an urgent reading ({summary}) and was told to go to a hospital "
        "in person; please call them soon.",
    },
    # two-way referral between institutions (clinic/telemedicine/referrals.py)
    "referral_accepted": {
        "zh_CN": "{name}，您的转诊已被{institution}接收，请于{when}（北京时间）到{place}就诊，请携带身份证。",
        "en": "{name}, your referral was accepted by {institution}: please come on {when} (Beijing time) to "
        "{place}, with your ID card.",
    },
    "referral_answered": {
        "zh_CN": "您为{patient}发起的转诊（{institution}）有新进展：{status}。",
        "en": "Your referral of {patient} to {institution} has moved on: {status}.",
    },
    # remote consultation between institutions (clinic/telemedicine/consultations.py)
    "consultation_received": {
        "zh_CN": "{institution}邀请本科室远程会诊（{urgency}），请在远程会诊中查看并接受。",
        "en": "{institution} asks your department for a remote consultation ({urgency}); open Remote consultations to take it.",
    },
    "consultation_answered": {
        "zh_CN": "您为{patient}申请的远程会诊（{institution}）有新进展：{status}。",
        "en": "Your remote consultation for {patient} at {institution} has moved on: {status}.",
    },
    # reclaiming an ID number registered by someone else (identity/reclaims.py)
    "reclaim_approved": {
        "zh_CN": "您找回身份证号（{id_number}）的申请已核实通过，已为您开通账号，请用手机号{mobile}和申请时设置的密码登录。",
        "en": "Your request to reclaim your ID number ({id_number}) was approved: log in with the mobile number "
        "{mobile} and the password you chose.",
    },
    "reclaim_rejected": {
        "zh_CN": "您找回身份证号（{id_number}）的申请未通过核实，原因：{reason}。如有疑问请携带身份证到医院窗口咨询。",
        "en": "Your request to reclaim your ID number ({id_number}) was not approved: {reason}. Bring your ID "
        "card to the hospital's service desk if you have questions.",
    },
    "reclaim_lost": {
        "zh_CN": "经医院核实，身份证号{id_number}属于他人，已按其本人申请从您的账号转出，您的账号已退出登录。如有异议请联系医院。",
        "en": "After a check by the hospital, the ID number {id_number} belongs to someone else and was moved "
        "from your account at their request; your account was logged out. Contact the hospital if you disagree.",
    },
}

HOSPITAL = {"zh_CN": "互联网医院", "en": "Internet hospital"}


def _pick(texts: dict[str, str], locale: str) -> tuple[str, str]:
    for key in (locale, locale.split("_")[0]):
        if key in texts:
            return key, texts[key]
    return "zh_CN", texts["zh_CN"]


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "—"


def render(kind: str, locale: str, params: dict[str, Any]) -> str:
    """The text of one notification in `locale` (zh-CN when that language has none)."""
    _, template = _pick(TEXTS[kind], locale)
    return template.format_map(_Blank(params))


def sms_body(kind: str, locale: str, params: dict[str, Any], link: str, hospital: str | None = None) -> str:
    key, _ = _pick(HOSPITAL, locale)
    name = hospital or HOSPITAL[key]
    return f"【{name}】{render(kind, locale, params)} {link}".strip()
