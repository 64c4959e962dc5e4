"""`flask demo` builds the world API.md promises, as ONE JSON object on stdout."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from click.testing import CliRunner
from flask import Flask

from identity.rules import age_years


def run_demo(app: Flask) -> dict:
    result = CliRunner().invoke(app.cli, ["demo"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_demo_world_matches_the_contract(ctx: Flask) -> None:
    world = run_demo(ctx)
    accounts = world["accounts"]
    for key in ("admin", "regulator"):
        assert {"username", "password", "id"} <= set(accounts[key])
    physicians, pharmacists, patients = accounts["physicians"], accounts["pharmacists"], accounts["patients"]
    assert len(pharmacists) >= 2 and len(physicians) >= 2
    departments = {p["department"] for p in physicians}
    assert len(departments) >= 2
    assert set(departments) <= set(world["institution"]["approved_departments"])
    for p in physicians:
        assert Path(p["face_image"]).is_file()
    people = [person for account in patients for person in account["patients"]]
    codes = {d["icd10"] for person in people for d in person["confirmed_diagnoses"]}
    assert {"I10", "E11"} <= codes
    adult = next(p for p in people if {"I10", "E11"} <= {d["icd10"] for d in p["confirmed_diagnoses"]})
    assert age_years(date.fromisoformat(adult["birth_date"]), date.today()) >= 18
    child = next(
        p
        for p in people
        if age_years(date.fromisoformat(p["birth_date"]), date.today()) < 6 and p["confirmed_diagnoses"]
    )
    assert child["relation"] == "child"
    treated = {d["department"] for person in people for d in person["confirmed_diagnoses"]}
    assert treated <= departments  # the demo physicians between them treat every demo diagnosis


def test_demo_accounts_log_in_and_the_second_run_refuses(ctx: Flask) -> None:
    world = run_demo(ctx)
    client = ctx.test_client()
    every = [
        world["accounts"]["admin"],
        world["accounts"]["regulator"],
        *world["accounts"]["physicians"],
        *world["accounts"]["pharmacists"],
        *world["accounts"]["patients"],
    ]
    for account in every:
        resp = client.post(
            "/api/v1/auth/token", json={"username": account["username"], "password": account["password"]}
        )
        assert resp.status_code == 200, account["username"]
    again = CliRunner().invoke(ctx.cli, ["demo"])
    assert again.exit_code == 1 and "not empty" in again.output


def test_demo_physicians_pass_the_face_check_with_the_probe_not_the_enrolled_photo(ctx: Flask) -> None:
    world = run_demo(ctx)
    client = ctx.test_client()
    physician = world["accounts"]["physicians"][0]
    tok = client.post(
        "/api/v1/auth/token", json={"username": physician["username"], "password": physician["password"]}
    ).get_json()["access_token"]

    def post(path: str):  # type: ignore[no-untyped-def]
        with open(path, "rb") as fh:
            return client.post(
                "/api/v1/auth/face",
                data={"image": (fh, "face.jpg")},
                headers={"Authorization": f"Bearer {tok}"},
                content_type="multipart/form-data",
            )

    replay = post(physician["face_image"])
    assert replay.status_code == 409 and replay.get_json()["error"]["code"] == "image_replayed"
    ok = post(physician["face_probe_image"])
    assert ok.status_code == 200 and ok.get_json()["access_token"]
