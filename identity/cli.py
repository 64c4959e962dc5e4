"""`flask face enroll|unlock`: an operator enrolls a physician's reference photo or lifts a
face lockout from the command line (each in its own unit of work, audited as the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask import Flask
from sqlalchemy import select

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work
from clinic.core.errors import DomainError
from identity import face_services
from identity.models import Account, Role

face_cli = click.Group("face", help="Physicians' reference faces and face lockouts.")
CLI_ACTOR = Actor(id=None, role="cli")


def _cli_physician(username: str) -> Account:
    account = db.session.scalars(select(Account).where(Account.username == username)).first()
    if account is None or account.role != Role.PHYSICIAN:
        raise click.ClickException(f"no physician with the username {username!r}")
    return account


@face_cli.command("enroll")
@click.option("--username", required=True)
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def face_enroll_cmd(username: str, path: Path) -> None:
    """Enroll PATH as the physician's reference photo (exactly one face)."""
    try:
        with acting_as(CLI_ACTOR), unit_of_work():
            enrollment = face_services.enroll_face(_cli_physician(username), path.read_bytes())
    except DomainError as err:
        raise click.ClickException(f"{err.code}: {err.message}") from None
    click.echo(json.dumps({"username": username, "enrolled": True, "photo_sha256": enrollment.photo_sha256}))


@face_cli.command("unlock")
@click.option("--username", required=True)
def face_unlock_cmd(username: str) -> None:
    """Lift the physician's face lockout."""
    try:
        with acting_as(CLI_ACTOR), unit_of_work():
            face_services.unlock_face(_cli_physician(username))
    except DomainError as err:
        raise click.ClickException(f"{err.code}: {err.message}") from None
    click.echo(json.dumps({"username": username, "unlocked": True}))


def init_app(app: Flask) -> None:
    app.cli.add_command(face_cli)
