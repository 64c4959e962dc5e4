"""`flask family-doctor ...`: the daily reminder job and the institution's level."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date, datetime

import click
from flask import Flask

from clinic.core.audit import Actor, acting_as
from clinic.core.db import unit_of_work
from clinic.core.errors import DomainError
from clinic.family_doctor import followups, services

CLI_ACTOR = Actor(id=None, role="cli")


def init_app(app: Flask) -> None:
    group = click.Group("family-doctor", help="Family-doctor contracts and follow-up.")
    app.cli.add_command(group)

    @group.command("remind")
    @click.option(
        "--date", "on", type=click.DateTime(["%Y-%m-%d"]), help="The day to run for (default: today, Beijing)."
    )
    def remind(on: datetime | None) -> None:
        """Run once a day: close lapsed contracts, and queue SMS reminders 3 days before and on each due date."""
        day: date = on.date() if on else services.today()
        with acting_as(CLI_ACTOR), unit_of_work():
            run = followups.send_reminders(day)
        click.echo(json.dumps({"date": day.isoformat(), **asdict(run)}))

    @group.command("level")
    @click.argument("level", type=click.Choice(["三级", "二级", "一级", "基层"]))
    def level(level: str) -> None:
        """Set the institution's level (only 基层 offers family-doctor contracts)."""
        try:
            with acting_as(CLI_ACTOR), unit_of_work():
                services.set_institution_level(level)
        except DomainError as err:
            raise click.ClickException(f"{err.code}: {err.message}") from None
        click.echo(level)
