"""`flask drugs import PATH`, `flask drugs seed`, `flask drugs expire`."""

from __future__ import annotations

import json
import sys

import click
from flask import Flask
from sqlalchemy.orm.exc import StaleDataError

from clinic.core.audit import Actor, acting_as
from clinic.core.db import unit_of_work, utcnow
from prescriptions import catalog, imports, lifecycle

CLI_ACTOR = Actor(id=None, role="cli")


def init_app(app: Flask) -> None:
    drugs = click.Group("drugs", help="The drug catalog and the official control lists.")
    app.cli.add_command(drugs)
    init_expiry(drugs)

    @drugs.command("seed")
    def seed_cmd() -> None:
        """Load the control lists, the seed formulary and the interaction table (idempotent)."""
        with acting_as(CLI_ACTOR), unit_of_work():
            ids = catalog.seed_catalog()
            size = catalog.catalog_size()
        click.echo(json.dumps({"catalog_size": size, "drugs": ids}, ensure_ascii=False))

    @drugs.command("import")
    @click.argument("path", type=click.Path(dir_okay=False))
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    def import_cmd(path: str, as_json: bool) -> None:
        """Import a formulary CSV (columns: name, form, strength, route; optional generic_name,
        ingredients (';'-separated), cold_chain, atc_code). Exits non-zero only when nothing could be read."""
        with acting_as(CLI_ACTOR), unit_of_work():
            report = imports.import_formulary(path)
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False) if as_json else report.summary())
        if report.fatal:
            sys.exit(1)


def init_expiry(drugs: click.Group) -> None:
    @drugs.command("expire")
    def expire_cmd() -> None:
        """Expire prescriptions not approved and dispensed within their validity (run from cron).

        Each in its own transaction: one that a pharmacist acts on at this very moment is
        left to that pharmacist (409 for whichever is later) and judged again next run;
        the others expire.
        """
        now = utcnow()
        expired = changed = 0
        with acting_as(CLI_ACTOR):
            with unit_of_work():
                due = lifecycle.overdue_prescriptions(now)
            for rx_id in due:
                try:
                    with unit_of_work():
                        expired += lifecycle.expire_if_overdue(rx_id, now)
                except StaleDataError:
                    changed += 1
        click.echo(json.dumps({"expired": expired, "changed_meanwhile": changed}))
