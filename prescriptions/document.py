"""The printable prescription: a PDF in the usual Chinese layout, with a QR code to verify.

reportlab, not WeasyPrint: reportlab's built-in CID font `STSong-Light` (Adobe-GB1)
renders Chinese without any system font, so the PDF is the same on a bare machine,
in CI and in production, offline; WeasyPrint would need fonts-noto-cjk (or similar)
installed on every host, plus Pango.

The QR code holds `{"rx": <prescription id>, "jws": <compact JWS>}`: a pharmacy scans it
and verifies the JWS against /.well-known/jwks.json.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import datetime

import qrcode
from qrcode.constants import ERROR_CORRECT_L
from reportlab.lib.pagesizes import A5
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas

FONT = "STSong-Light"
pdfmetrics.registerFont(UnicodeCIDFont(FONT))

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
    kid: str
    review_status: str
    jws: str
    long_term: bool = False
    guardian: str | None = None
    accompanying_physician: str | None = None
    notes: list[str] = field(default_factory=list)


def qr_payload(prescription_id: str, jws: str) -> str:
    return json.dumps({"rx": prescription_id, "jws": jws}, separators=(",", ":"))


def qr_png(data: str) -> bytes:
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_L, box_size=4, border=4)
    qr.add_data(data.encode())
    qr.make(fit=True)
    img = qr.make_image(fill_color="black", back_color="white")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _fit(c: canvas.Canvas, text: str, size: float, width: float) -> str:
    while text and pdfmetrics.stringWidth(text, FONT, size) > width:
        text = text[:-1]
    return text


def render_pdf(doc: PrescriptionDocument) -> bytes:
    buf = io.BytesIO()
    page_w, page_h = A5
    c = canvas.Canvas(buf, pagesize=A5, pageCompression=0)
    c.setTitle(f"处方笺 {doc.prescription_id}")
    c.setAuthor(doc.institution)
    left, right = 12 * mm, page_w - 12 * mm
    width = right - left
    y = page_h - 16 * mm

    c.setFont(FONT, 14)
    c.drawCentredString(page_w / 2, y, doc.institution)
    y -= 7 * mm
    c.setFont(FONT, 12)
    title = "处 方 笺" + ("（长期处方）" if doc.long_term else "")
    c.drawCentredString(page_w / 2, y, title)
    c.setFont(FONT, 8)
    c.drawRightString(right, y, "互联网诊疗")
    y -= 6 * mm
    c.setFont(FONT, 8)
    c.drawString(left, y, f"处方编号: {doc.prescription_id}")
    y -= 5 * mm
    c.line(left, y + 3 * mm, right, y + 3 * mm)

    c.setFont(FONT, 9)
    weight = f"{doc.weight_kg} kg" if doc.weight_kg else "—"
    c.drawString(left, y - 1 * mm, f"姓名: {doc.patient_name}    性别: {doc.sex}    年龄: {doc.age}    体重: {weight}")
    y -= 6 * mm
    c.drawString(left, y - 1 * mm, _fit(c, f"科别: {doc.department}    临床诊断: {doc.diagnosis}", 9, width))
    y -= 6 * mm
    if doc.guardian or doc.accompanying_physician:
        c.setFont(FONT, 8)
        if doc.guardian:
            c.drawString(left, y - 1 * mm, _fit(c, f"监护人: {doc.guardian}", 8, width))
            y -= 5 * mm
        if doc.accompanying_physician:
            c.drawString(left, y - 1 * mm, _fit(c, f"陪伴医师: {doc.accompanying_physician}", 8, width))
            y -= 5 * mm
    c.line(left, y + 2 * mm, right, y + 2 * mm)

    y -= 6 * mm
    c.setFont(FONT, 16)
    c.drawString(left, y, "Rp.")
    y -= 7 * mm
    for n, item in enumerate(doc.items, start=1):
        c.setFont(FONT, 10)
        c.drawString(
            left + 4 * mm, y, _fit(c, f"{n}. {item.name}  {item.strength}  × {item.quantity}", 10, width - 4 * mm)
        )
        y -= 5 * mm
        c.setFont(FONT, 8.5)
        sig = f"用法: 每次 {item.dose} {item.unit}，{item.frequency}，{item.route}，共 {item.days} 天"
        c.drawString(left + 8 * mm, y, _fit(c, sig, 8.5, width - 8 * mm))
        y -= 7 * mm
    for note in doc.notes:
        c.setFont(FONT, 8)
        c.drawString(left, y, _fit(c, note, 8, width))
        y -= 5 * mm

    # footer: physician, time, key id, review status, QR
    qr_size = 42 * mm
    base = 14 * mm
    c.line(left, base + qr_size + 4 * mm, right, base + qr_size + 4 * mm)
    c.setFont(FONT, 9)
    text_y = base + qr_size - 4 * mm
    lines = [
        f"医师: {doc.physician_name}（电子签名）",
        f"开具时间: {doc.signed_at.strftime('%Y-%m-%d %H:%M')} UTC",
        f"签名密钥: {doc.kid}",
        f"审核状态: {REVIEW_ZH.get(doc.review_status, doc.review_status)}",
        "本处方有效期以系统记录为准；扫码核验电子签名。",
    ]
    for line in lines:
        c.drawString(left, text_y, _fit(c, line, 9, width - qr_size - 4 * mm))
        text_y -= 6 * mm
    png = qr_png(qr_payload(doc.prescription_id, doc.jws))
    c.drawImage(ImageReader(io.BytesIO(png)), right - qr_size, base, qr_size, qr_size)
    c.showPage()
    c.save()
    return buf.getvalue()
