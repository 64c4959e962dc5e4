"""Issue 21 item 12: uploads are limited per account — files per hour and bytes per day."""

from __future__ import annotations

import io

import pytest
from flask import Flask
from flask.testing import FlaskClient

from identity.models import Role
from tests.support import clinic_factories as cf
from tests.support import factories as f


def _send(client: FlaskClient, v: dict, n: int) -> int:
    resp = client.post(
        f"/api/v1/visits/{v['visit_id']}/messages",
        data={"image": (io.BytesIO(cf.png(color=(n % 250, 30, 30))), "bp.png")},
        headers=f.auth(v["token"]),
        content_type="multipart/form-data",
    )
    return resp.status_code


def test_files_per_hour(ctx: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ctx.config, "UPLOAD_COUNT_LIMIT", "5 per hour")
    cf.catalog()
    v = cf.open_visit(client, f.staff(Role.PHYSICIAN, department="cardiology"))
    # the proof of diagnosis was the first upload of the hour; then four images, then 429
    assert [_send(client, v, n) for n in range(6)] == [201] * 4 + [429, 429]


def test_bytes_per_day(ctx: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    size = len(cf.png())
    monkeypatch.setitem(ctx.config, "UPLOAD_BYTES_PER_DAY", size * 3)
    cf.catalog()
    v = cf.open_visit(client, f.staff(Role.PHYSICIAN, department="cardiology"))
    # the proof of diagnosis (the same size) spent a third of the day's bytes
    assert [_send(client, v, n) for n in range(4)] == [201, 201, 429, 429]
