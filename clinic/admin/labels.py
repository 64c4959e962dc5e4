"""The audit trail's actions and subjects in words (one mapping; the viewer shows these)."""

from __future__ import annotations

from clinic.core.pages import register_labels, words

ACTION = words(
    {
        "audit.exported": ("导出审计日志", "Audit log exported"),
        "audit.verified": ("校验审计日志", "Audit log verified"),
        "audit.viewed": ("查看审计日志", "Audit log viewed"),
        "auth.login": ("登录", "Logged in"),
        "auth.login_failed": ("登录失败", "Login failed"),
        "catalog.import_failed": ("药品目录导入失败", "Formulary import failed"),
        "catalog.import_started": ("开始导入药品目录", "Formulary import started"),
        "catalog.imported": ("导入药品目录", "Formulary imported"),
        "catalog.seeded": ("初始化药品目录", "Catalog seeded"),
        "catalog.classified": ("药品管制分类", "Drug classified"),
        "condition.saved": ("保存病种目录", "Condition saved"),
        "condition.updated": ("修改病种目录", "Condition changed"),
        "consent.accepted": ("签署知情同意", "Consent accepted"),
        "delivery.dispatched": ("配送单已发出", "Delivery dispatched"),
        "delivery.routed": ("分配配送企业", "Delivery routed"),
        "diagnosis.confirmed": ("确认线下诊断", "Diagnosis confirmed"),
        "diagnosis.rejected": ("驳回线下诊断", "Diagnosis declined"),
        "diagnosis.submitted": ("上传线下诊断", "Diagnosis submitted"),
        "face.check_locked": ("人脸核验被锁定", "Face check locked"),
        "face.enrolled": ("录入人脸", "Face enrolled"),
        "face.locked": ("人脸核验锁定", "Face locked"),
        "face.mismatch": ("人脸不匹配", "Face mismatch"),
        "face.photo_viewed": ("查看人脸照片", "Face photo viewed"),
        "face.replay_refused": ("拒绝重放照片", "Replayed photo refused"),
        "face.unlocked": ("解除人脸锁定", "Face unlocked"),
        "face.verified": ("人脸核验通过", "Face verified"),
        "incident.notification_failed": ("事件通知发送失败", "Incident notice failed"),
        "incident.notification_skipped": ("未发送事件通知", "Incident notice skipped"),
        "incident.recorded": ("登记安全事件", "Incident recorded"),
        "incident.regulator_notified": ("已通知监管部门", "Regulator notified"),
        "job.dead": ("后台任务失败", "Job failed"),
        "keys.rehashed": ("重算索引哈希", "Lookup hashes recomputed"),
        "keys.rotated": ("轮换密钥", "Keys rotated"),
        "partner.created": ("登记配送企业", "Delivery partner registered"),
        "partner.updated": ("修改配送企业", "Delivery partner changed"),
        "patient.family_added": ("添加家庭成员", "Family member added"),
        "patient.registered": ("患者注册", "Patient registered"),
        "payment.cancelled": ("支付取消", "Payment cancelled"),
        "payment.event_unmatched": ("支付事件未匹配", "Payment event unmatched"),
        "payment.failed": ("支付失败", "Payment failed"),
        "payment.mismatch": ("支付金额不符", "Payment mismatch"),
        "payment.refunded": ("已退款", "Refunded"),
        "payment.started": ("发起支付", "Payment started"),
        "payment.succeeded": ("支付成功", "Payment succeeded"),
        "phone.code_rejected": ("短信验证码错误", "SMS code rejected"),
        "phone.code_sent": ("发送短信验证码", "SMS code sent"),
        "phone.verified": ("手机号已验证", "Phone verified"),
        "prescription.checkout": ("填写收货方式", "Delivery chosen"),
        "prescription.claimed": ("药师领取处方", "Prescription claimed"),
        "prescription.drug_fee_paid": ("药费已付", "Drug fee paid"),
        "prescription.review_refused": ("审方操作被拒", "Review refused"),
        "prescription.reviewed": ("药师审方", "Prescription reviewed"),
        "prescription.signed": ("签署处方", "Prescription signed"),
        "prescription.approved": ("处方审核通过", "Prescription approved"),
        "prescription.rejected": ("处方被驳回", "Prescription rejected"),
        "prescription.returned": ("处方被退回", "Prescription returned"),
        "prescription.dispensed": ("发药", "Dispensed"),
        "prescription.out_for_delivery": ("处方配送中", "Out for delivery"),
        "prescription.delivered": ("处方已送达", "Delivered"),
        "prescription.expired": ("处方失效", "Prescription expired"),
        "prescription.cancelled": ("处方作废", "Prescription voided"),
        "regulator.read": ("监管部门读取数据", "Regulator read"),
        "regulator.scopes_set": ("设置监管权限", "Regulator scopes set"),
        "regulator.token_issued": ("签发监管令牌", "Regulator token issued"),
        "regulator.token_refused": ("拒绝监管令牌", "Regulator token refused"),
        "request.refused": ("请求被拒绝", "Request refused"),
        "retention.purged": ("按保存期限清理", "Purged by retention"),
        "service.resumed": ("恢复在线服务", "Services resumed"),
        "service.suspended": ("暂停在线服务", "Services suspended"),
        "signing_key.created": ("生成签名密钥", "Signing key created"),
        "signing_key.retired": ("停用签名密钥", "Signing key retired"),
        "staff.created": ("创建员工账号", "Staff account created"),
        "staff.deactivated": ("停用员工账号", "Staff account deactivated"),
        "visit.accepted": ("医师接诊", "Visit accepted"),
        "visit.cancelled": ("取消复诊", "Visit cancelled"),
        "visit.completed": ("完成复诊", "Visit completed"),
        "visit.message": ("复诊消息", "Visit message"),
        "visit.paid": ("复诊已支付", "Visit paid"),
        "visit.referred": ("转线下就诊", "Referred"),
        "visit.requested": ("申请复诊", "Visit requested"),
        "visit.video_token": ("视频问诊入场", "Video joined"),
    }
)
FAMILY = words(
    {
        "audit": ("审计", "Audit"),
        "auth": ("登录", "Login"),
        "catalog": ("药品目录", "Catalog"),
        "condition": ("病种目录", "Conditions"),
        "consent": ("知情同意", "Consent"),
        "delivery": ("配送", "Delivery"),
        "diagnosis": ("线下诊断", "Diagnosis"),
        "face": ("人脸核验", "Face"),
        "incident": ("安全事件", "Incident"),
        "job": ("后台任务", "Job"),
        "keys": ("密钥", "Keys"),
        "partner": ("配送企业", "Partner"),
        "patient": ("患者", "Patient"),
        "payment": ("支付", "Payment"),
        "phone": ("手机号", "Phone"),
        "prescription": ("处方", "Prescription"),
        "regulator": ("监管", "Regulator"),
        "request": ("请求", "Request"),
        "retention": ("保存期限", "Retention"),
        "service": ("在线服务", "Service"),
        "signing_key": ("签名密钥", "Signing key"),
        "staff": ("员工", "Staff"),
        "visit": ("复诊", "Visit"),
    }
)
SUBJECT = words(
    {
        "account": ("账号", "Account"),
        "patient": ("患者", "Patient"),
        "visit": ("复诊", "Visit"),
        "diagnosis": ("线下诊断", "Diagnosis"),
        "prescription": ("处方", "Prescription"),
        "delivery": ("配送", "Delivery"),
        "partner": ("配送企业", "Partner"),
        "incident": ("安全事件", "Incident"),
        "endpoint": ("接口", "Endpoint"),
        "drug": ("药品", "Drug"),
        "condition": ("病种", "Condition"),
        "service": ("在线服务", "Service"),
        "payment": ("支付", "Payment"),
        "job": ("后台任务", "Job"),
        "signing_key": ("签名密钥", "Signing key"),
        "formulary_import": ("药品目录导入", "Formulary import"),
    }
)
INCIDENT_KIND = words(
    {"data_security": ("数据安全事件", "Data security"), "adverse_event": ("医疗不良事件", "Adverse event")}
)
SEVERITY = words(
    {"low": ("低", "Low"), "medium": ("中", "Medium"), "high": ("高", "High"), "critical": ("严重", "Critical")}
)
# The SMS to the regulator, as the incidents page follows it (clinic.regulator.incidents.NOTICE_STATES)
REGULATOR_SMS = words(
    {
        "queued": ("排队待发送", "Queued"),
        "retrying": ("发送失败，正在重试", "Failed; retrying"),
        "sent": ("已由短信平台发出", "Sent by the SMS provider"),
        "logged": ("仅写入应用日志（开发环境，未真正发出）", "Written to the app log only (development; not sent)"),
        "failed": ("多次重试后放弃，请电话报告监管部门", "Given up after retries; report to the regulator by phone"),
        "not_configured": ("未发送：未配置监管部门联系电话", "Not sent: no regulator contact configured"),
        "not_kept": ("已发送（短信内容在留存功能上线前发出，未留存）", "Sent (before SMS texts were kept)"),
    }
)


def action_words(action: str) -> str:
    """An audit action in words; an action nobody labelled yet shows its family's name."""
    found = ACTION.get(action)
    if found is not None:
        return str(found)
    family = FAMILY.get(action.split(".", 1)[0])
    return f"{family}事件" if family is not None and str(family) == family.zh else (str(family) if family else "—")


def register() -> None:
    register_labels("audit_action", ACTION)
    register_labels("audit_subject", SUBJECT)
    register_labels("incident_kind", INCIDENT_KIND)
    register_labels("severity", SEVERITY)
    register_labels("regulator_sms", REGULATOR_SMS)
