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

from prescriptions import signing
from tests.api.test_rx_signatures_api import _approved
from tests.support import factories as f

pytestmark = pytest.mark.skipif(
    not (shutil.which("pdftoppm") and shutil.which("zbarimg")), reason="poppler-utils and zbar-tools (make chromium)"
)


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
    assert client.post("/api/v1/pharmacy/verify", json={"jws": other}, headers=a["ph"]).status_code == 422

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
