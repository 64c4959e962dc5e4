"""Flask CLI commands: `demo`, `staff create` (and Flask-Migrate's `db`; `audit` is clinic.core.audit_cli's)."""

from __future__ import annotations

import json
import secrets
import sys
from datetime import date
from typing import Any

import click
from flask import Flask
from sqlalchemy import func, select

from clinic import demo as demo_world
from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work
from clinic.core.errors import DomainError
from identity import services
from identity.models import Account, Role

CLI_ACTOR = Actor(id=None, role="cli")


def init_app(app: Flask) -> None:
    @app.cli.command("demo")
    @click.option(
        "--level",
        type=click.Choice(["三级", "二级", "一级", "基层"]),
        default="三级",
        show_default=True,
        help="The institution's level; 基层 (primary care) offers family-doctor contracts and gets a team.",
    )
    def demo_cmd(level: str) -> None:
        """Create a complete demo world in an empty database; print ONE JSON object."""
        with acting_as(CLI_ACTOR):
            if db.session.scalar(select(func.count()).select_from(Account)):
                click.echo("The database is not empty; the demo world goes into an empty one.", err=True)
                sys.exit(1)
            with unit_of_work():
                world = demo_world.build(level=level)
        click.echo(json.dumps(world, ensure_ascii=False, default=str))

    staff = click.Group("staff", help="Staff accounts.")
    app.cli.add_command(staff)

    @staff.command("create")
    @click.option("--role", type=click.Choice(["physician", "pharmacist", "admin", "regulator"]), required=True)
    @click.option("--username", required=True)
    @click.option("--name", required=True)
    @click.option("--password", help="Omit to generate one (printed once).")
    @click.option("--department")
    @click.option("--title", default="")
    @click.option("--license-no")
    @click.option("--registration-no")
    @click.option("--practice-since", type=click.DateTime(["%Y-%m-%d"]))
    @click.option("--license-valid-until", type=click.DateTime(["%Y-%m-%d"]))
    @click.option("--qualification-no")
    @click.option("--qualification-valid-until", type=click.DateTime(["%Y-%m-%d"]))
    def staff_create(**kw: Any) -> None:
        """Create a staff account with its credentials."""
        password = kw["password"] or secrets.token_urlsafe(12) + "9a"

        def d(key: str) -> date | None:
            v = kw.get(key)
            return v.date() if v else None

        spec = services.StaffSpec(
            username=kw["username"],
            password=password,
            role=Role(kw["role"]),
            name=kw["name"],
            department=kw["department"],
            title=kw["title"],
            license_no=kw["license_no"],
            practice_registration_no=kw["registration_no"],
            independent_practice_since=d("practice_since"),
            license_valid_until=d("license_valid_until"),
            qualification_no=kw["qualification_no"],
            qualification_valid_until=d("qualification_valid_until"),
        )
        try:
            with acting_as(CLI_ACTOR), unit_of_work():
                account = services.create_staff(spec)
        except DomainError as err:
            raise click.ClickException(f"{err.code}: {err.message}") from None
        click.echo(json.dumps({"id": str(account.id), "username": spec.username, "password": password}))
