"""Every page each role can reach by following the links on its screens shows words, not
codes: no snake_case words, no UUIDs outside links, no "UTC" — on the demo world with a
visit in progress, a prescription pending review and one returned to the physician."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from identity import services as identity
from tests.browser.staff import PHONE_OR_DESK, desk, fits, log_in, raw_codes
from tests.support import clinic_factories as cf
from tests.support import faces as F
from tests.support import factories as f
from tests.support.live_server import LiveServer

SKIP = ("/logout", "/lang/", "/static/", "/document", "/pdf", ".csv", ".pdf", "/image", "/face/photo", "/video")
MAX_PAGES = 45


def _world(ctx: Flask, client: FlaskClient) -> dict[str, Any]:
    result = CliRunner().invoke(ctx.cli, ["demo"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    world: dict[str, Any] = json.loads(result.stdout)
    accounts = world["accounts"]
    doctor = accounts["physicians"][0]
    patient = next(a for a in accounts["patients"] if any(p["confirmed_diagnoses"] for p in a["patients"]))
    person = next(p for p in patient["patients"] if p["confirmed_diagnoses"])
    diag = next(d for d in person["confirmed_diagnoses"] if d["department"] == doctor["department"])
    tok = f.token(client, patient["username"], patient["password"])
    version = client.get("/api/v1/consent").get_json()["version"]
    client.post("/api/v1/consent", json={"patient_id": person["id"], "version": version}, headers=f.auth(tok))
    visit = client.post(
        "/api/v1/visits",
        json={"patient_id": person["id"], "diagnosis_id": diag["id"], "department": diag["department"]},
        headers=f.auth(tok),
    )
    assert visit.status_code == 201, visit.get_json()
    face = f.auth(cf.face_token(identity.get_account(uuid.UUID(doctor["id"]))))
    vid = visit.get_json()["id"]
    assert client.post(f"/api/v1/visits/{vid}/accept", headers=face).status_code == 200
    drug = world["drugs"].get("amlodipine") or next(iter(world["drugs"].values()))
    item = {
        "drug_id": drug,
        "dose": "1",
        "unit": "片",
        "frequency": "每日一次",
        "route": "口服",
        "days": 7,
        "quantity": "7",
    }
    first = client.post(f"/api/v1/visits/{vid}/prescriptions", json={"items": [item]}, headers=face)
    ph = accounts["pharmacists"][0]
    ph_h = f.auth(f.token(client, ph["username"], ph["password"]))
    if first.status_code == 201:
        client.post("/api/v1/pharmacy/queue/claim", headers=ph_h)
        client.post(
            f"/api/v1/pharmacy/prescriptions/{first.get_json()['id']}/review",
            json={"decision": "return", "reasons": [{"code": "dose", "note": "请核对剂量"}]},
            headers=ph_h,
        )
        client.post(
            f"/api/v1/visits/{vid}/prescriptions",
            json={"items": [item], "replaces": first.get_json()["id"]},
            headers=face,
        )
    return world


def _crawl(page: Any, base: str) -> dict[str, list[str]]:
    """Follow same-site links breadth-first from the home page; answer each page's raw codes."""
    seen: set[str] = set()
    todo = ["/"]
    found: dict[str, list[str]] = {}
    while todo and len(seen) < MAX_PAGES:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.add(path)
        resp = page.goto(path)
        if resp is None or resp.status >= 400:
            found[path] = [f"HTTP {resp.status if resp else '?'}"]
            continue
        codes = raw_codes(page)
        if not fits(page):
            codes.append("wider than the screen")
        if codes:
            found[page.url] = codes
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))"):
            parts = urlsplit(href)
            if parts.netloc and parts.netloc != urlsplit(base).netloc:
                continue
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            if not target.startswith("/") or any(s in target for s in SKIP) or target in seen:
                continue
            todo.append(target)
    return found


def test_no_page_any_role_reaches_shows_a_raw_code(
    browser: Any,
    live_server: LiveServer,
    ctx: Flask,
    client: FlaskClient,
    screenshot_dir: Path,
    backend: dict[str, Any],
) -> None:
    world = _world(ctx, client)
    accounts = world["accounts"]
    people = {
        "admin": accounts["admin"],
        "pharmacist": accounts["pharmacists"][0],
        "physician": accounts["physicians"][0],
        "patient": accounts["patients"][0],
    }
    problems: dict[str, dict[str, list[str]]] = {}
    for role, who in people.items():
        with desk(browser, live_server.url, screenshot_dir, f"{backend['name']}-scan-{role}", PHONE_OR_DESK[role]) as (
            page,
            _shot,
        ):
            log_in(page, who["username"], who["password"])
            if role == "physician":
                page.set_input_files(
                    "#face-file",
                    {
                        "name": "me.jpg",
                        "mimeType": "image/jpeg",
                        "buffer": F.cropped(Path(who["face_image"]).read_bytes(), 0.2),
                    },
                )
                page.locator("#face-form button[type=submit]").click()
                page.wait_for_url(lambda url: "/face" not in url)
            found = _crawl(page, live_server.url)
            if found:
                problems[role] = found
    assert problems == {}, json.dumps(problems, ensure_ascii=False, indent=1)
