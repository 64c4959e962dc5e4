"""`flask partners ...`: link a partner institution from its published JWKS, and check the
link with a signed message."""

from __future__ import annotations

from datetime import timedelta

import click
from flask import Flask

from clinic.core import jobs
from clinic.core.audit import Actor, acting_as
from clinic.core.db import record_id, unit_of_work
from clinic.core.errors import DomainError
from clinic.telemedicine import federation, partners, rules

CLI_ACTOR = Actor(id=None, role="cli")


def init_app(app: Flask) -> None:
    group = click.Group("partners", help="Partner institutions (cooperation agreements) and signed messages.")
    app.cli.add_command(group)

    @group.command("link")
    @click.option("--name", required=True, help="The partner institution's name.")
    @click.option("--base-url", required=True, help="Its address (https outside development).")
    @click.option("--jwks-url", required=True, help="Where it publishes its keys (/.well-known/jwks.json).")
    @click.option("--level", type=click.Choice(list(rules.LEVELS)), default="三级", show_default=True)
    @click.option("--license-no", default="", help="Its practice licence number (default: not given).")
    @click.option("--fee-fen", type=click.IntRange(0, rules.MAX_FEE_FEN), default=0, show_default=True)
    @click.option("--split", default="20:80", show_default=True, help="Fee split inviting:invited, summing to 100.")
    def link(name: str, base_url: str, jwks_url: str, level: str, license_no: str, fee_fen: int, split: str) -> None:
        """Register a partner from its JWKS: every service and department, valid for a year. Prints its id."""
        try:
            inviting, invited = rules.parse_split(split)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--split") from None
        try:
            with acting_as(CLI_ACTOR), unit_of_work():
                jwk = partners.fetch_institution_key(jwks_url)
                start = partners.today()
                partner = partners.register_partner(
                    rules.AgreementTerms(
                        name=name,
                        license_no=license_no or "—",
                        level=level,
                        base_url=base_url,
                        public_jwk=jwk,
                        services=rules.SERVICES,
                        departments=(),
                        fee_fen=fee_fen,
                        split_inviting=inviting,
                        split_invited=invited,
                        valid_from=start,
                        valid_until=start + timedelta(days=365),
                    )
                )
                pid = str(partner.id)
        except DomainError as err:
            raise click.ClickException(f"{err.code}: {err.message}") from None
        click.echo(pid)

    @group.command("ping")
    @click.argument("partner_id")
    def ping(partner_id: str) -> None:
        """Send a signed connectivity check to a partner through the outbox; prints the message's id."""
        try:
            with acting_as(CLI_ACTOR), unit_of_work():
                message = federation.send(record_id(partner_id), federation.PING_EVENT)
                mid = str(message.id)
        except DomainError as err:
            raise click.ClickException(f"{err.code}: {err.message}") from None
        jobs.drain()
        click.echo(mid)

    @group.command("resend")
    @click.argument("message_id")
    def resend(message_id: str) -> None:
        """Deliver a sent message again (the partner applies it once)."""
        try:
            with acting_as(CLI_ACTOR), unit_of_work():
                federation.resend(record_id(message_id))
        except DomainError as err:
            raise click.ClickException(f"{err.code}: {err.message}") from None
        jobs.drain()
        click.echo(message_id)
