"""The printable prescription: the 处方标准's fields in Chinese, fonts embedded, a child's page
pale green and marked 儿科, and a QR code (level M) that zbar reads off a 100 dpi rendering."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pypdf
import pytest
from PIL import Image

from prescriptions import document as d

HEADER = "eyJhbGciOiJFUzI1NiIsImtpZCI6InJ4LTEyMyJ9"
JWS = f"{HEADER}." + "A" * 900 + ".sig" + "B" * 82
APPROVAL = f"{HEADER}." + "C" * 1500 + ".sig" + "D" * 82
TOOLS = shutil.which("pdftoppm") and shutil.which("zbarimg") and shutil.which("pdffonts")
needs_tools = pytest.mark.skipif(not TOOLS, reason="poppler-utils and zbar-tools (make chromium) are not installed")


def sample(**kw: object) -> d.PrescriptionDocument:
    base: dict[str, object] = {
        "prescription_id": "7d1c3e0a-0000-4000-8000-000000000001",
        "institution": "示范互联网医院",
        "patient_name": "张伟",
        "sex": "男",
        "age": "59岁",
        "weight_kg": None,
        "diagnosis": "原发性高血压（I10）",
        "department": "心血管内科",
        "record_no": "7D1C3E0A00",
        "items": [d.DocumentLine("苯磺酸氨氯地平片", "5mg", "片剂", "5", "mg", "每日一次", "口服", 7, "7", "片")],
        "physician_name": "王建国",
        "physician_license_no": "110110000012345",
        "signed_at": datetime(2025, 3, 10, 8, 30, tzinfo=UTC),
        "expires_at": datetime(2025, 3, 11, 8, 30, tzinfo=UTC),
        "review_status": "approved",
        "reviewer": "李药师",
        "amount_fen": 3000,
        "jws": JWS,
        "approval_jws": APPROVAL,
    }
    return d.PrescriptionDocument(**{**base, **kw})  # type: ignore[arg-type]


def test_pdf_has_the_standards_fields_in_chinese() -> None:
    pdf = d.render_pdf(sample())
    assert pdf.startswith(b"%PDF")
    text = pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    for expected in (
        "示范互联网医院",
        "费别：自费",
        "门诊/病历号：7D1C3E0A00",
        "科别：心血管内科",
        "张伟",
        "59岁",
        "原发性高血压",
        "2025年03月10日 16:30（北京时间）",  # Beijing time
        "苯磺酸氨氯地平片",
        "片剂",
        "每次 5 mg，每日一次，口服",
        "× 7 片",
        "王建国",
        "110110000012345",
        "电子签名",
        "审核药师：李药师",
        "调配药师",
        "核对、发药药师",
        "金额：30.00 元",
        "有效期至：2025年03月11日 16:30",
        "Rp",
        "普通",
    ):
        assert expected in text, expected
    assert "UTC" not in text and "儿科" not in text


def test_the_qr_code_holds_both_signatures_detached() -> None:
    payload = json.loads(d.qr_payload("rx-1", JWS, APPROVAL))
    assert payload == {"rx": "rx-1", "jws": f"{HEADER}..sig{'B' * 82}", "approval_jws": f"{HEADER}..sig{'D' * 82}"}
    assert json.loads(d.qr_payload("rx-1", JWS))["approval_jws"] is None


def _render(pdf: bytes, tmp: Path, dpi: int = 100) -> Path:
    (tmp / "rx.pdf").write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-r", str(dpi), "-png", "-singlefile", str(tmp / "rx.pdf"), str(tmp / "rx")], check=True
    )
    return tmp / "rx.png"


@needs_tools
def test_zbar_reads_the_qr_code_at_100_dpi_and_every_font_is_embedded(tmp_path: Path) -> None:
    doc = sample(
        items=[
            d.DocumentLine(f"药品{n}", "10mg", "片剂", "1", "片", "每日一次", "口服", 7, "7", "片") for n in range(5)
        ]
    )
    pdf = d.render_pdf(doc)
    png = _render(pdf, tmp_path)
    out = subprocess.run(["zbarimg", "-q", "--raw", str(png)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip()) == json.loads(d.qr_payload(doc.prescription_id, JWS, APPROVAL))
    fonts = subprocess.run(["pdffonts", str(tmp_path / "rx.pdf")], capture_output=True, text=True, check=True)
    rows = fonts.stdout.strip().splitlines()[2:]
    assert rows and all(re.search(r"\byes\s+yes\s+(yes|no)\s+\d+\s+\d+\s*$", r) for r in rows), fonts.stdout


@needs_tools
def test_a_childs_prescription_is_pale_green_and_marked(tmp_path: Path) -> None:
    pdf = d.render_pdf(
        sample(
            pediatric=True,
            age="3月",
            weight_kg="6.2",
            expires_at=datetime(2025, 3, 10, 8, 30, tzinfo=UTC) + timedelta(days=1),
        )
    )
    text = pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "儿科" in text and "3月" in text and "体重：6.2 kg" in text
    img = Image.open(_render(pdf, tmp_path)).convert("RGB")
    r, g, b = img.getpixel((5, 5))  # a corner: the paper itself
    assert g > r and g > b and g > 220, (r, g, b)
