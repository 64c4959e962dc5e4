"""The prescription document end to end: an approved prescription's PDF, rendered at 100 dpi
with pdftoppm, gives its QR code to zbarimg; both signatures in it — the physician's and the
pharmacist's — verify with the JWKS once their payloads are put back."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pypdf
import pytest
from flask.testing import FlaskClient
from jose import jws

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work
from identity.models import Role, StaffProfile
from prescriptions import signing
from tests.api.prescriptions.test_rx_signatures_api import _approved
from tests.support import factories as f
from tests.support.answers import refusal

pytestmark = pytest.mark.skipif(
    not (shutil.which("pdftoppm") and shutil.which("pdftotext") and shutil.which("zbarimg")),
    reason="poppler-utils and zbar-tools (make chromium)",
)


def _pdf_text(pdf: bytes, tmp_path: Path, name: str) -> str:
    """The page's text as poppler reads it (pdftotext keeps the layout of each line)."""
    (tmp_path / f"{name}.pdf").write_bytes(pdf)
    subprocess.run(["pdftotext", "-layout", str(tmp_path / f"{name}.pdf"), str(tmp_path / f"{name}.txt")], check=True)
    return (tmp_path / f"{name}.txt").read_text(encoding="utf-8")


def _named_pharmacist(client: FlaskClient, name: str) -> tuple[str, dict[str, str]]:
    account = f.staff(Role.PHARMACIST)
    with acting_as(Actor(None, "test")), unit_of_work():
        staff = db.session.get(StaffProfile, account.id)
        assert staff is not None
        staff.name = name
    return str(account.id), f.auth(f.token(client, account.username))


def test_the_pdf_qr_code_verifies_both_signatures(client: FlaskClient, tmp_path: Path) -> None:
    a = _approved(client)
    rx_id = a["rx"]["id"]
    resp = client.get(f"/api/v1/prescriptions/{rx_id}/document", headers=f.auth(a["token"]))
    assert resp.status_code == 200 and resp.mimetype == "application/pdf"
    (tmp_path / "rx.pdf").write_bytes(resp.data)
    subprocess.run(
        ["pdftoppm", "-r", "100", "-png", "-singlefile", str(tmp_path / "rx.pdf"), str(tmp_path / "rx")], check=True
    )
    scanned = subprocess.run(
        ["zbarimg", "-q", "--raw", str(tmp_path / "rx.png")], capture_output=True, text=True, check=True
    )
    qr = json.loads(scanned.stdout.strip())
    assert qr["rx"] == rx_id and qr["jws"].count("..") == 1 and qr["approval_jws"]

    record = client.get(f"/api/v1/prescriptions/{rx_id}", headers=f.auth(a["token"])).get_json()
    keys = {k["kid"]: k for k in client.get("/.well-known/jwks.json").get_json()["keys"]}
    for detached, full in ((qr["jws"], record["jws"]), (qr["approval_jws"], record["approval_jws"])):
        token = signing.attach(detached, full.split(".")[1])
        kid = jws.get_unverified_header(token)["kid"]
        json.loads(jws.verify(token, keys[kid], algorithms=["ES256"]))  # raises if it does not verify
        assert client.post("/api/v1/pharmacy/verify", json={"jws": token}, headers=a["ph"]).status_code == 200
    # a signature from the QR code over another payload does not verify
    other = signing.attach(qr["jws"], record["approval_jws"].split(".")[1])
    assert refusal(client.post("/api/v1/pharmacy/verify", json={"jws": other}, headers=a["ph"])) == (
        422,
        "invalid_signature",
    )

    text = pypdf.PdfReader(tmp_path / "rx.pdf").pages[0].extract_text()
    for expected in (
        "处 方 笺",
        "费别",
        "门诊/病历号",
        "科别",
        "临床诊断",
        "北京时间",
        "片剂",
        "× 7 片",
        "电子签名",
        "审核药师",
        "有效期至",
    ):
        assert expected in text, expected
    assert "UTC" not in text and "pending" not in text


def test_the_pdf_prints_who_dispensed_and_who_checked(client: FlaskClient, tmp_path: Path) -> None:
    a = _approved(client)
    rx_id = a["rx"]["id"]
    url = f"/api/v1/prescriptions/{rx_id}/document"
    before = _pdf_text(client.get(url, headers=f.auth(a["token"])).data, tmp_path, "before")
    # not dispensed yet: both fields are there and visibly blank
    assert "调配药师：＿＿＿＿" in before and "核对、发药药师：＿＿＿＿" in before

    dispenser_id, dispenser = _named_pharmacist(client, "欧阳明华")
    _, checker = _named_pharmacist(client, "司马雪")
    out = client.post(
        f"/api/v1/prescriptions/{rx_id}/checkout", json={"collect_at_pharmacy": True}, headers=f.auth(a["token"])
    )
    assert out.status_code == 200, out.get_json()
    made = client.post(f"/api/v1/pharmacy/prescriptions/{rx_id}/prepare", headers=dispenser)
    assert made.status_code == 200, made.get_json()
    half = _pdf_text(client.get(url, headers=f.auth(a["token"])).data, tmp_path, "half")
    assert "欧阳明华" not in half and "调配药师：＿＿＿＿" in half  # made up but not checked: not issued
    issued = client.post(
        f"/api/v1/pharmacy/prescriptions/{rx_id}/dispense",
        json={"dispensed_by": dispenser_id},
        headers=checker,
    )
    assert issued.status_code == 200, issued.get_json()

    pdf = client.get(url, headers=a["ph"]).data
    after = _pdf_text(pdf, tmp_path, "after")
    assert "调配药师：欧阳明华" in after and "核对、发药药师：司马雪" in after
    assert "＿＿＿＿" not in after
    # the page still gives its QR code to zbar at 100 dpi
    subprocess.run(
        ["pdftoppm", "-r", "100", "-png", "-singlefile", str(tmp_path / "after.pdf"), str(tmp_path / "after")],
        check=True,
    )
    scanned = subprocess.run(
        ["zbarimg", "-q", "--raw", str(tmp_path / "after.png")], capture_output=True, text=True, check=True
    )
    assert json.loads(scanned.stdout.strip())["rx"] == rx_id
