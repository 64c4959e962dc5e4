"""The printable prescription (处方笺) per 处方管理办法 (2007) and its 处方标准 (附件1).

What the standard asks for, and where it is on the page:
- 前记: institution, 费别, 门诊/病历号, 科别, patient name, sex, age (days/months for an
  infant), weight for a child, clinical diagnosis in words, date (Beijing time);
- 正文: "Rp" and per item the drug, strength, dosage form, dose, frequency, route and
  quantity with its unit;
- 后记: the physician's name, licence number and electronic-signature mark, the amount,
  the reviewing pharmacist and the dispensing / checking pharmacists, the validity;
- a child's prescription is marked 儿科 in the corner and printed on the standard's pale
  green (an ordinary one is white).

The font is a TrueType CJK font embedded (subset) in the PDF, so the page reads the same
on any viewer; reportlab (open source) writes no PDF/A, so the document is plain PDF 1.4
with every font embedded. Without the font file (a bare machine) the built-in CID font
STSong-Light is used, which viewers substitute: the log says so.

The QR code (error correction M, drawn as vectors on a module grid that stays readable
at 100 dpi) holds `{"rx": id, "jws": ..., "approval_jws": ...}` with both signatures
detached (RFC 7515 Appendix F: `header..signature`): the physician's and, once
approved, the pharmacist's. Put each payload back (from GET /api/v1/prescriptions/{id})
and verify against /.well-known/jwks.json; a full JWS would not fit a QR code a phone
or zbar reads off paper.

`document_for(rx)` fills the page from a stored prescription: its signed content, the
diagnosis in words (the national code's name), the department, and what the pharmacy
registers through `on_review_facts` (reviewer, dispensing pharmacists, amount).
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import qrcode
from flask import Flask, current_app
from qrcode.constants import ERROR_CORRECT_M
from reportlab.lib.pagesizes import A5
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas
from sqlalchemy import select

from clinic.core.db import db
from clinic.visits import rules as visit_rules
from clinic.visits.models import Condition, Visit
from identity.models import Department, Institution
from prescriptions import dosing, reads, rules
from prescriptions.models import Prescription

log = logging.getLogger(__name__)
CHINA = ZoneInfo("Asia/Shanghai")
FONT_FILES = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),  # Debian fonts-wqy-microhei (Makefile)
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),
)
CID_FONT = "STSong-Light"
PALE_GREEN = (0.89, 0.96, 0.87)  # 儿科处方: 淡绿色
QR_MODULE = 2.5 * 72 / 100  # points per QR module: 2.5 pixels at 100 dpi
QR_BORDER = 4


def _font() -> tuple[str, bool]:
    """The font name to draw with, and whether it is embedded."""
    for path in FONT_FILES:
        if path.exists():
            name = "RxCJK-" + path.stem
            if name not in pdfmetrics.getRegisteredFontNames():
                pdfmetrics.registerFont(TTFont(name, str(path), subfontIndex=0))
            return name, True
    if CID_FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(CID_FONT))
    log.warning("No CJK TrueType font found (%s): the prescription uses a non-embedded CID font", FONT_FILES[0])
    return CID_FONT, False


REVIEW_ZH = {
    "pending_review": "待审核",
    "approved": "审核通过",
    "rejected": "审核不通过",
    "returned": "退回修改",
    "dispensed": "已调配",
    "out_for_delivery": "配送中",
    "delivered": "已送达",
    "expired": "已过期",
    "cancelled": "已作废",
}


@dataclass(frozen=True)
class DocumentLine:
    name: str
    strength: str
    form: str
    dose: str
    unit: str
    frequency: str
    route: str
    days: int
    quantity: str
    quantity_unit: str = ""


@dataclass(frozen=True)
class PrescriptionDocument:
    prescription_id: str
    institution: str
    patient_name: str
    sex: str
    age: str
    weight_kg: str | None
    diagnosis: str
    department: str
    items: list[DocumentLine]
    physician_name: str
    signed_at: datetime
    review_status: str
    jws: str
    kid: str = ""
    fee_category: str = "自费"
    record_no: str = ""
    physician_license_no: str | None = None
    expires_at: datetime | None = None
    pediatric: bool = False
    reviewer: str | None = None
    dispenser: str | None = None
    checker: str | None = None
    amount_fen: int | None = None
    approval_jws: str | None = None
    long_term: bool = False
    guardian: str | None = None
    accompanying_physician: str | None = None
    notes: list[str] = field(default_factory=list)


def _detached(token: str) -> str:
    parts = token.split(".")
    return f"{parts[0]}..{parts[2]}" if len(parts) == 3 else token


def qr_payload(prescription_id: str, jws: str, approval_jws: str | None = None) -> str:
    data = {
        "rx": prescription_id,
        "jws": _detached(jws),
        "approval_jws": _detached(approval_jws) if approval_jws else None,
    }
    return json.dumps(data, separators=(",", ":"))


def qr_matrix(data: str) -> list[list[bool]]:
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=QR_BORDER)
    qr.add_data(data.encode())
    qr.make(fit=True)
    return [list(row) for row in qr.get_matrix()]


def qr_png(data: str) -> bytes:
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=4, border=QR_BORDER)
    qr.add_data(data.encode())
    qr.make(fit=True)
    buf = io.BytesIO()
    qr.make_image(fill_color="black", back_color="white").save(buf, format="PNG")
    return buf.getvalue()


def _draw_qr(c: canvas.Canvas, data: str, right: float, bottom: float) -> float:
    """Draw the QR code as vector runs (one rectangle per dark run of a row); its size."""
    m = qr_matrix(data)
    n = len(m)
    size = n * QR_MODULE
    x0, y0 = right - size, bottom
    c.setFillColorRGB(1, 1, 1)
    c.rect(x0, y0, size, size, stroke=0, fill=1)
    c.setFillColorRGB(0, 0, 0)
    for r, row in enumerate(m):
        col = 0
        while col < n:
            if row[col]:
                start = col
                while col < n and row[col]:
                    col += 1
                c.rect(x0 + start * QR_MODULE, y0 + (n - 1 - r) * QR_MODULE, (col - start) * QR_MODULE, QR_MODULE, 0, 1)
            else:
                col += 1
    return size


def _fit(font: str, text: str, size: float, width: float) -> str:
    while text and pdfmetrics.stringWidth(text, font, size) > width:
        text = text[:-1]
    return text


def _beijing(t: datetime) -> str:
    return t.astimezone(CHINA).strftime("%Y年%m月%d日 %H:%M")


def _yuan(fen: int | None) -> str:
    return f"{fen / 100:.2f} 元" if fen is not None else "—"


def render_pdf(doc: PrescriptionDocument) -> bytes:
    font, embedded = _font()
    buf = io.BytesIO()
    page_w, page_h = A5
    c = canvas.Canvas(buf, pagesize=A5, pageCompression=1, initialFontName=font, initialFontSize=9)
    c.setTitle(f"处方笺 {doc.prescription_id}")
    c.setAuthor(doc.institution)
    c.setSubject("处方笺（互联网诊疗）")
    c.setCreator(doc.institution)
    c.setProducer(doc.institution)
    if doc.pediatric:
        c.setFillColorRGB(*PALE_GREEN)
        c.rect(0, 0, page_w, page_h, stroke=0, fill=1)
        c.setFillColorRGB(0, 0, 0)
    left, right = 10 * mm, page_w - 10 * mm
    width = right - left
    y = page_h - 14 * mm

    # 前记
    c.setFont(font, 13)
    c.drawCentredString(page_w / 2, y, _fit(font, doc.institution, 13, width - 30 * mm))
    mark = "儿科" if doc.pediatric else "普通"
    c.setLineWidth(0.8)
    c.rect(right - 14 * mm, y - 2 * mm, 14 * mm, 7 * mm, stroke=1, fill=0)
    c.setFont(font, 10)
    c.drawCentredString(right - 7 * mm, y, mark)
    y -= 7 * mm
    c.setFont(font, 12)
    c.drawCentredString(page_w / 2, y, "处 方 笺" + ("（长期处方）" if doc.long_term else ""))
    c.setFont(font, 7.5)
    c.drawRightString(right, y, "互联网诊疗")
    y -= 6 * mm
    c.setFont(font, 8)
    c.drawString(left, y, f"处方编号：{doc.prescription_id}")
    y -= 2.5 * mm
    c.line(left, y, right, y)
    y -= 4.5 * mm
    c.setFont(font, 8.5)
    c.drawString(
        left,
        y,
        _fit(font, f"费别：{doc.fee_category}    门诊/病历号：{doc.record_no}    科别：{doc.department}", 8.5, width),
    )
    y -= 5 * mm
    weight = f"    体重：{doc.weight_kg} kg" if doc.weight_kg else ""
    c.drawString(
        left, y, _fit(font, f"姓名：{doc.patient_name}    性别：{doc.sex}    年龄：{doc.age}{weight}", 8.5, width)
    )
    y -= 5 * mm
    c.drawString(left, y, _fit(font, f"临床诊断：{doc.diagnosis}", 8.5, width))
    y -= 5 * mm
    c.drawString(left, y, f"开具日期：{_beijing(doc.signed_at)}（北京时间）")
    if doc.guardian or doc.accompanying_physician:
        c.setFont(font, 8)
        if doc.guardian:
            y -= 4.5 * mm
            c.drawString(left, y, _fit(font, f"监护人：{doc.guardian}", 8, width))
        if doc.accompanying_physician:
            y -= 4.5 * mm
            c.drawString(left, y, _fit(font, f"陪伴医师：{doc.accompanying_physician}", 8, width))
    y -= 2.5 * mm
    c.line(left, y, right, y)

    # 正文
    y -= 7 * mm
    c.setFont(font, 15)
    c.drawString(left, y, "Rp")
    y -= 6 * mm
    for n, item in enumerate(doc.items, start=1):
        c.setFont(font, 9.5)
        head = f"{n}. {item.name}    {item.strength}    {item.form}"
        c.drawString(left + 4 * mm, y, _fit(font, head, 9.5, width - 30 * mm))
        c.drawRightString(right, y, f"× {item.quantity} {item.quantity_unit}".rstrip())
        y -= 4.5 * mm
        c.setFont(font, 8)
        sig = f"用法：每次 {item.dose} {item.unit}，{item.frequency}，{item.route}，共 {item.days} 天"
        c.drawString(left + 8 * mm, y, _fit(font, sig, 8, width - 8 * mm))
        y -= 6 * mm
    c.setFont(font, 8)
    c.drawString(left + 4 * mm, y, "（以下空白）")
    y -= 5 * mm
    for note in doc.notes:
        c.drawString(left, y, _fit(font, note, 8, width))
        y -= 4.5 * mm

    # 后记 and the QR code
    payload = qr_payload(doc.prescription_id, doc.jws, doc.approval_jws)
    bottom = 9 * mm
    qr_size = _draw_qr(c, payload, right, bottom)
    text_w = width - qr_size - 3 * mm
    top = bottom + max(qr_size, 44 * mm) + 2 * mm
    c.setStrokeColorRGB(0, 0, 0)
    c.line(left, top, right, top)
    licence = f"，执业证书编码 {doc.physician_license_no}" if doc.physician_license_no else ""
    lines = [
        f"医师：{doc.physician_name}{licence}",
        "　　　【电子签名】已签署",
        f"审核药师：{doc.reviewer or '—'}（{REVIEW_ZH.get(doc.review_status, doc.review_status)}）",
        f"调配药师：{doc.dispenser or '＿＿＿＿'}",
        f"核对、发药药师：{doc.checker or '＿＿＿＿'}",
        f"金额：{_yuan(doc.amount_fen)}",
        f"有效期至：{_beijing(doc.expires_at)}（北京时间）" if doc.expires_at else "有效期：开具当日有效",
        "扫描右侧二维码核验医师与药师电子签名",
    ]
    c.setFont(font, 8)
    ty = top - 5 * mm
    for line in lines:
        c.drawString(left, ty, _fit(font, line, 8, text_w))
        ty -= 4.8 * mm
    if not embedded:
        log.warning("prescription %s rendered without an embedded font", doc.prescription_id)
    c.showPage()
    c.save()
    return buf.getvalue()


# --- the document of a stored prescription --------------------------------------------------


@dataclass(frozen=True)
class ReviewFacts:
    """What the pharmacy knows of a prescription for its document (None: not yet, or blank)."""

    reviewer: str | None = None
    amount_fen: int | None = None
    dispenser: str | None = None  # 调配, printed once issued
    checker: str | None = None  # 核对、发药, printed once issued


ReviewFactsSource = Callable[[uuid.UUID], ReviewFacts | None]
REVIEW_FACTS = "prescriptions.review_facts"


def on_review_facts(app: Flask, source: ReviewFactsSource) -> None:
    """The pharmacy tells the document who reviewed a prescription and what it costs (the app
    factory registers it, per app)."""
    app.extensions.setdefault(REVIEW_FACTS, []).append(source)


def review_facts(rx_id: uuid.UUID) -> ReviewFacts:
    sources: list[ReviewFactsSource] = current_app.extensions.get(REVIEW_FACTS, [])
    for source in sources:
        facts = source(rx_id)
        if facts is not None:
            return facts
    return ReviewFacts()


def _frequency_zh(text: str) -> str:
    f = dosing.parse_frequency(text)
    return f.zh if f is not None else text


def document_for(rx: Prescription) -> bytes:
    """The prescription document (处方笺) per 处方管理办法 and its 处方标准 (prescriptions/document.py)."""
    inst = db.session.get(Institution, 1)
    c = rx.content
    dept = visit_department(rx)
    g = rx.guardian
    a = rx.accompanying_physician
    born = date.fromisoformat(c["patient"]["birth_date"])
    signed_day = rx.signed_at.astimezone(CHINA).date() if rx.signed_at.tzinfo else rx.signed_at.date()
    facts = review_facts(rx.id)
    settings = (inst.settings or {}) if inst else {}
    doc = PrescriptionDocument(
        prescription_id=str(rx.id),
        institution=inst.name if inst else "",
        fee_category=str(settings.get("fee_category") or "自费"),
        record_no=str(rx.patient_id).replace("-", "")[:10].upper(),
        patient_name=c["patient"]["name"],
        sex={"male": "男", "female": "女"}.get(c["patient"]["sex"], c["patient"]["sex"]),
        age=c["patient"]["age"],
        weight_kg=c.get("weight_kg"),
        diagnosis=diagnosis_in_words(rx),
        department=dept,
        items=[
            DocumentLine(
                i["name"],
                i["strength"],
                i.get("form", ""),
                i["dose"],
                i["unit"],
                _frequency_zh(i["frequency"]),
                i["route"],
                i["days"],
                i["quantity"],
                i.get("quantity_unit", ""),
            )
            for i in c["items"]
        ],
        physician_name=c["physician"]["name"],
        physician_license_no=c["physician"].get("license_no"),
        signed_at=rx.signed_at if rx.signed_at.tzinfo else rx.signed_at.replace(tzinfo=UTC),
        expires_at=rx.expires_at if rx.expires_at.tzinfo else rx.expires_at.replace(tzinfo=UTC),
        kid=rx.kid,
        review_status=rx.status.value,
        jws=rx.jws,
        approval_jws=reads.approval_jws(rx.id),
        reviewer=facts.reviewer,
        dispenser=facts.dispenser,
        checker=facts.checker,
        amount_fen=facts.amount_fen,
        pediatric=rules.is_under(born, signed_day, rules.CHILD_AGE_DEFAULT),
        long_term=rx.long_term,
        guardian=f"{g['name']}（{g['relation']}，{g['id_number_masked']}）" if g else None,
        accompanying_physician=f"{a['name']}（{a['specialty']}，执业证书编码 {a['license_no']}）" if a else None,
    )
    return render_pdf(doc)


def national_code_of(rx: Prescription) -> str | None:
    """The 国家临床版 2.0 code of the prescription's diagnosis, when its proof carried one."""
    signed = rx.content.get("diagnosis", {}).get("icd10_national")
    if signed:
        return str(signed)
    visit = db.session.get(Visit, rx.visit_id)
    diag = visit.diagnosis if visit is not None else None
    return diag.icd10_national if diag is not None and diag.icd10 == rx.diagnosis_icd10 else None


def diagnosis_in_words(rx: Prescription) -> str:
    """临床诊断 in words: the national code's name where known, else the catalog condition's."""
    national = national_code_of(rx)
    condition = db.session.get(Condition, rx.diagnosis_icd10)
    if condition is None:
        codes = list(db.session.scalars(select(Condition.code)))
        match = visit_rules.match_condition(rx.diagnosis_icd10, codes)
        condition = db.session.get(Condition, match) if match else None
    words = visit_rules.national_name(national) or (condition.name_zh if condition else "")
    code = national or rx.diagnosis_icd10
    return f"{words}（{code}）" if words else code


def visit_department(rx: Prescription) -> str:
    visit = db.session.get(Visit, rx.visit_id)
    if visit is None:
        return ""
    dept = db.session.get(Department, visit.department)
    return dept.name_zh if dept else visit.department
