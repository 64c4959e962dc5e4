"""Issue 21 item 8: hostile proofs are refused at upload, and stored proofs are never
opened as pages of the site.

PDFs with JavaScript, Launch, embedded-file or auto-open actions; PDF/HTML and image/HTML
polyglots; a PNG with bytes after its end; an image-headed file over the image limit
(it is judged by what it is, not by the larger document limit).
"""

from __future__ import annotations

import io
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pypdf import PdfWriter
from pypdf.generic import ArrayObject, DictionaryObject, NameObject, TextStringObject

from clinic.visits import sniffing
from identity.models import Role
from tests.conftest import extract_csrf
from tests.support import clinic_factories as cf
from tests.support import factories as f
from tests.support.answers import refusal


def _pdf(change: str | None = None) -> bytes:
    w = PdfWriter()
    w.add_blank_page(595, 842)
    if change == "javascript":
        action = DictionaryObject(
            {NameObject("/S"): NameObject("/JavaScript"), NameObject("/JS"): TextStringObject("app.alert('hi');")}
        )
        names = ArrayObject([TextStringObject("hello"), w._add_object(action)])
        w._root_object[NameObject("/Names")] = DictionaryObject(
            {NameObject("/JavaScript"): DictionaryObject({NameObject("/Names"): names})}
        )
    elif change == "launch":
        w._root_object[NameObject("/OpenAction")] = DictionaryObject(
            {NameObject("/S"): NameObject("/Launch"), NameObject("/F"): TextStringObject("calc.exe")}
        )
    elif change == "embedded":
        w.add_attachment("payload.html", b"<b>hi</b>")
    elif change == "page_action":
        w.pages[0][NameObject("/AA")] = DictionaryObject(
            {NameObject("/O"): DictionaryObject({NameObject("/S"): NameObject("/JavaScript")})}
        )
    buf = io.BytesIO()
    w.write(buf)
    return buf.getvalue()


OBFUSCATED = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R/Open#41ction<</S/J#61vaScript/J#53(app.alert(1))>>>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)
POLYGLOT = _pdf() + b"\n<html><body><script>alert(document.cookie)</script></body></html>\n%%EOF\n"


@pytest.mark.parametrize("change", ["javascript", "launch", "embedded", "page_action"])
def test_active_pdfs_are_refused(change: str) -> None:
    with pytest.raises(sniffing.BadUpload) as exc:
        sniffing.sniff_upload(_pdf(change), max_bytes=10**7, allow_pdf=True)
    assert exc.value.code == "invalid_upload"
    assert "scripts, actions or embedded files" in exc.value.message


def test_plain_pdfs_and_images_still_pass() -> None:
    assert sniffing.sniff_upload(_pdf(), max_bytes=10**7, allow_pdf=True).mime == "application/pdf"
    assert sniffing.sniff_upload(cf.PDF, max_bytes=10**7, allow_pdf=True).mime == "application/pdf"
    assert sniffing.sniff_upload(cf.png(), max_bytes=10**7, allow_pdf=True).mime == "image/png"


@pytest.mark.parametrize(
    "data",
    [
        OBFUSCATED,  # /J#61vaScript is /JavaScript to a reader
        POLYGLOT,
        cf.png() + b"<html><script>alert(1)</script></html>",
        cf.png() + b"PK\x03\x04 a zip after the image",
    ],
)
def test_polyglots_and_disguises_are_refused(data: bytes) -> None:
    with pytest.raises(sniffing.BadUpload):
        sniffing.sniff_upload(data, max_bytes=10**7, allow_pdf=True)


def test_an_image_is_held_to_the_image_limit() -> None:
    big = cf.png() + b"\x00" * (9 * 1024 * 1024)  # PNG-headed, 9 MB: a "document" under 10 MB
    with pytest.raises(sniffing.BadUpload) as exc:
        sniffing.sniff_upload(big, max_bytes=10 * 1024 * 1024, allow_pdf=True, max_image_bytes=8 * 1024 * 1024)
    assert exc.value.status == 413 and exc.value.code == "too_large"


def _upload(client: FlaskClient, tok: str, patient_id: object, document: bytes, name: str) -> object:
    data = {
        "patient_id": str(patient_id),
        "icd10": "I10",
        "institution": "北京协和医院",
        "diagnosed_on": "2024-05-06",
        "document": (io.BytesIO(document), name),
    }
    return client.post("/api/v1/diagnoses", data=data, headers=f.auth(tok), content_type="multipart/form-data")


def test_over_the_api_and_served_as_attachments(ctx: Flask, client: FlaskClient) -> None:
    cf.catalog()
    cardio = f.staff(Role.PHYSICIAN, department="cardiology")
    reg = f.patient()
    tok = f.token(client, reg.account.username)
    for data, name in ((_pdf("javascript"), "a.pdf"), (POLYGLOT, "b.pdf"), (cf.png() + b"<script>", "c.png")):
        resp = _upload(client, tok, reg.patient.id, data, name)
        assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid_upload"  # type: ignore[attr-defined]
    big = _upload(client, tok, reg.patient.id, cf.png() + b"\x00" * (9 * 1024 * 1024), "big.png")
    assert refusal(big) == (413, "too_large")  # type: ignore[attr-defined]
    ok = _upload(client, tok, reg.patient.id, _pdf(), "plain.pdf")
    assert ok.status_code == 201  # type: ignore[attr-defined]
    diag_id = ok.get_json()["id"]  # type: ignore[attr-defined]

    csrf = extract_csrf(client.get("/login").get_data(as_text=True))
    client.post("/login", data={"username": cardio.username, "password": f.PASSWORD, "csrf_token": csrf})
    with client.session_transaction() as sess:
        sess["face_at"] = int(time.time())
    doc = client.get(f"/diagnoses/{diag_id}/document")
    assert doc.status_code == 200 and doc.data.startswith(b"%PDF-")
    assert doc.headers["Content-Disposition"].startswith("attachment;")
    assert "sandbox" in doc.headers["Content-Security-Policy"]
    page = client.get(f"/physician/proofs/{diag_id}").get_data(as_text=True)
    assert "<object" not in page and "download" in page
