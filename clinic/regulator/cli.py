"""CLI: `keys generate|rotate|rehash`, `retention rules|purge`, `regulator scopes`.

Each batch is its own unit of work (commit point), so a long run can be stopped and
started again: rotation and re-hashing are idempotent, and a purge only ever finds
what is still past its period.

Key rotation, step by step:
1. `flask --app wsgi keys generate` prints a new Fernet key.
2. Put it IN FRONT of FIELD_KEYS (`FIELD_KEYS=<new>,<old>`) and restart the app: new
   writes use the new key, old values still read with the old one.
3. `flask --app wsgi keys rotate` re-encrypts every encrypted column (and the encrypted
   face photos) with the newest key.
4. Remove the old key from FIELD_KEYS.

Changing LOOKUP_KEY (the HMAC key of the lookup hashes of ID numbers and phones):
set the new LOOKUP_KEY, then run `flask --app wsgi keys rehash` before serving traffic
(until then, lookups by ID number or phone do not find existing people). Phone codes
in flight expire, and the regulators' pseudonyms change with the key.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import click
from cryptography.fernet import Fernet
from flask import Flask
from sqlalchemy import select

from clinic.core.audit import Actor, acting_as
from clinic.core.db import db, unit_of_work, utcnow
from clinic.core.errors import DomainError
from clinic.regulator import access, keys, purge, retention
from identity.models import Account

CLI_ACTOR = Actor(id=None, role="cli")


def init_app(app: Flask) -> None:
    app.cli.add_command(keys_group)
    app.cli.add_command(retention_group)
    app.cli.add_command(regulator_group)


# --- keys -------------------------------------------------------------------------------------

keys_group = click.Group("keys", help="Encryption keys at rest: generate, rotate, re-hash.")


@keys_group.command("generate")
def keys_generate() -> None:
    """Print a new Fernet key (put it first in FIELD_KEYS, then run `keys rotate`)."""
    click.echo(Fernet.generate_key().decode())


@keys_group.command("rotate")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000))
def keys_rotate(batch_size: int) -> None:
    """Re-encrypt every encrypted column and file with the newest key in FIELD_KEYS."""
    with acting_as(CLI_ACTOR):
        targets = keys.encrypted_columns()
        totals = {t.name: keys.count_rows(t) for t in targets}
        files = keys.encrypted_files()
        done: dict[str, int] = {}
        with click.progressbar(length=sum(totals.values()) + len(files), label="Re-encrypting", file=sys.stderr) as bar:
            for target in targets:
                offset = 0
                while offset < totals[target.name]:
                    with unit_of_work():
                        n = keys.rotate_rows(target, offset, batch_size)
                    if n == 0:
                        break
                    offset += n
                    bar.update(n)
                done[target.name] = offset
            for path in files:
                keys.rotate_file(path)
                bar.update(1)
        with unit_of_work():
            keys.record_rotation(done, len(files), targets)
    click.echo(json.dumps({"rotated": done, "files": len(files)}))


@keys_group.command("rehash")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000))
def keys_rehash(batch_size: int) -> None:
    """Recompute the lookup hashes (ID numbers, phones) with the current LOOKUP_KEY."""
    with acting_as(CLI_ACTOR):
        total = keys.rehash_total()
        offset = 0
        with click.progressbar(length=total, label="Re-hashing", file=sys.stderr) as bar:
            while offset < total:
                with unit_of_work():
                    n = keys.rehash_batch(offset, batch_size)
                if n == 0:
                    break
                offset += n
                bar.update(n)
        with unit_of_work():
            keys.record_rehash(offset)
    click.echo(json.dumps({"rehashed": offset}))


# --- retention ---------------------------------------------------------------------------------

retention_group = click.Group("retention", help="Records retention (15 years records, 3 years communication).")


@retention_group.command("rules")
def retention_rules() -> None:
    """Print the retention rules."""
    click.echo(json.dumps(retention.describe(), ensure_ascii=False, indent=2))


@retention_group.command("purge")
@click.option("--dry-run", is_flag=True, help="Count and list what would go; change nothing.")
@click.option("--as-of", type=click.DateTime(["%Y-%m-%d"]), help="Judge the periods at this date (default: now).")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000))
def retention_purge(dry_run: bool, as_of: datetime | None, batch_size: int) -> None:
    """Remove visit messages and their images past their 3-year period, nothing else."""
    now = as_of.replace(tzinfo=UTC) if as_of else utcnow()
    if now > utcnow():
        raise click.ClickException("--as-of may not be in the future.")
    with acting_as(CLI_ACTOR):
        total = purge.purgeable_message_count(now)
        messages = images = files_removed = 0
        visits: set[str] = set()
        after = None
        with click.progressbar(length=total, label="Checking" if dry_run else "Purging", file=sys.stderr) as bar:
            while True:
                with unit_of_work():
                    batch = purge.purge_message_batch(now, batch_size, dry_run, after)
                if batch.messages == 0:
                    break
                if not dry_run:
                    files_removed += purge.remove_stored_files(batch.files)
                messages += batch.messages
                images += batch.images
                visits.update(batch.visits)
                after = batch.last_id
                bar.update(batch.messages)
    click.echo(
        json.dumps(
            {
                "dry_run": dry_run,
                "as_of": now.isoformat(),
                "messages": messages,
                "images": images,
                "files_removed": files_removed,
                "visits": len(visits),
            }
        )
    )


# --- regulator accounts -------------------------------------------------------------------------

regulator_group = click.Group("regulator", help="Regulator accounts.")


@regulator_group.command("scopes")
@click.argument("username")
@click.option(
    "--allow",
    "scopes",
    multiple=True,
    type=click.Choice(["read:deidentified", "read:identified"]),
    help="A scope the account may ask for (repeat); none given: show the current ones.",
)
def regulator_scopes(username: str, scopes: tuple[str, ...]) -> None:
    """Show or set the scopes a regulator account may ask for."""
    with acting_as(CLI_ACTOR):
        account = db.session.scalars(select(Account).where(Account.username == username)).first()
        if account is None:
            raise click.ClickException(f"No account {username!r}.")
        if scopes:
            try:
                with unit_of_work():
                    access.set_regulator_scopes(account.id, list(scopes))
            except DomainError as err:
                raise click.ClickException(f"{err.code}: {err.message}") from None
        click.echo(json.dumps({"username": username, "scopes": access.allowed_scopes(account.id)}))
