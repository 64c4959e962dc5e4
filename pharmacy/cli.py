"""`flask pharmacy remind-unpaid`: tell patients whose approved prescription is about to
expire with its drug fee unpaid (run from cron, like `flask drugs expire`)."""

from __future__ import annotations

import json
from datetime import timedelta

import click
from flask import Flask

from clinic.core.audit import Actor, acting_as
from clinic.core.db import unit_of_work, utcnow
from pharmacy import checkout

CLI_ACTOR = Actor(id=None, role="cli")


def init_app(app: Flask) -> None:
    @app.cli.group("pharmacy")
    def pharmacy() -> None:
        """Pharmacy jobs."""

    @pharmacy.command("remind-unpaid")
    @click.option("--within-hours", default=24, show_default=True, help="Remind when it expires within this.")
    def remind_unpaid(within_hours: int) -> None:
        """One notification (and SMS) per prescription, once, before it expires unpaid."""
        with acting_as(CLI_ACTOR), unit_of_work():
            told = checkout.remind_expiring_unpaid(utcnow(), timedelta(hours=within_hours))
        click.echo(json.dumps({"reminded": told}))
