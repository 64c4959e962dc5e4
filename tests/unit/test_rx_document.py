"""The printable prescription: Chinese text renders, the QR code carries id and JWS."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pypdf
import zxingcpp
from PIL import Image

from prescriptions import document as d

JWS = "eyJhbGciOiJFUzI1NiIsImtpZCI6InJ4LTEyMyJ9." + "A" * 900 + ".sig" + "B" * 80


def sample() -> d.PrescriptionDocument:
    return d.PrescriptionDocument(
        prescription_id="7d1c3e0a-0000-4000-8000-000000000001",
        institution="示范互联网医院",
        patient_name="张伟",
        sex="男",
        age="59岁",
        weight_kg=None,
        diagnosis="I10 原发性高血压",
        department="心血管内科",
        items=[d.DocumentLine("苯磺酸氨氯地平片", "5mg", "片剂", "1", "片", "每日一次", "口服", 7, "7片")],
        physician_name="王建国",
        signed_at=datetime(2025, 3, 10, 8, 30, tzinfo=UTC),
        kid="rx-abc",
        review_status="pending_review",
        jws=JWS,
    )


def test_pdf_has_the_chinese_layout() -> None:
    pdf = d.render_pdf(sample())
    assert pdf.startswith(b"%PDF")
    text = pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    for expected in (
        "示范互联网医院",
        "处",
        "张伟",
        "原发性高血压",
        "苯磺酸氨氯地平片",
        "王建国",
        "rx-abc",
        "待审核",
        "Rp",
    ):
        assert expected in text, expected


def test_qr_code_decodes_to_id_and_signature() -> None:
    png = d.qr_png(d.qr_payload("rx-1", JWS))
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert found, "QR not readable"
    assert json.loads(found[0].text) == {"rx": "rx-1", "jws": JWS}


def test_qr_code_in_the_pdf_is_readable() -> None:
    pdf = d.render_pdf(sample())
    page = pypdf.PdfReader(io.BytesIO(pdf)).pages[0]
    images = list(page.images)
    assert images
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(images[0].data)))
    assert json.loads(found[0].text)["rx"] == sample().prescription_id
