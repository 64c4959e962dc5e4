"""Fees between institutions (Jilin measures Art. 41–44): each completed consultation is
owed by the inviting institution to the invited one (its share of the agreed fee), never to
the physician; each side draws a monthly statement per partner (`rules.Statement`), sends it
signed as an Invoice, and compares it with the partner's (`rules.reconcile`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select

from clinic.core import audit
from clinic.core.db import db, utcnow
from clinic.core.errors import Invalid
from clinic.telemedicine import federation, partners, rules
from clinic.telemedicine.consultations import (
    EV_STATEMENT,
    INVITING,
    TASK_SYSTEM,
    bundle_resources,
    iso,
)
from clinic.telemedicine.models import (
    Consultation,
    FederationMessage,
    PartnerInstitution,
    SettlementStatement,
)
from clinic.telemedicine.rules import (
    N_,
    Reconciliation,
    Statement,
    StatementLine,
    TaskStatus,
    reconcile,
    valid_month,
)

SETTLEMENT_SYSTEM = "urn:clinic:settlement-month"
INVITING_SYSTEM = "urn:clinic:consultation-inviting"


def month_of(at: datetime) -> str:
    """The Beijing month (YYYY-MM) a completed consultation is settled in."""
    return at.astimezone(partners.CHINA).strftime("%Y-%m")


# --- settlements ----------------------------------------------------------------------------------------


def _month_bounds(month: str) -> tuple[datetime, datetime]:
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=partners.CHINA)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.astimezone(UTC), end.astimezone(UTC)


def our_statement(partner: PartnerInstitution, month: str) -> Statement:
    start, end = _month_bounds(month)
    rows = db.session.scalars(
        select(Consultation)
        .where(
            Consultation.partner_id == partner.id,
            Consultation.status == TaskStatus.COMPLETED.value,
            Consultation.completed_at >= start,
            Consultation.completed_at < end,
        )
        .order_by(Consultation.completed_at)
    )
    lines = []
    for c in rows:
        inviting, invited = rules.shares(c.fee_fen, c.split_inviting)
        lines.append(StatementLine(c.task_id, c.role == INVITING, c.fee_fen, inviting, invited))
    return Statement(tuple(lines))


def _stored_statement(row: SettlementStatement) -> Statement:
    return Statement(
        tuple(
            StatementLine(
                str(line["task_id"]),
                bool(line["we_invited"]),
                int(line["fee_fen"]),
                int(line["inviting_share_fen"]),
                int(line["invited_share_fen"]),
            )
            for line in row.lines
        )
    )


def _latest(partner: PartnerInstitution, month: str, direction: str) -> SettlementStatement | None:
    return db.session.scalar(
        select(SettlementStatement)
        .where(
            SettlementStatement.partner_id == partner.id,
            SettlementStatement.month == month,
            SettlementStatement.direction == direction,
        )
        .order_by(SettlementStatement.created_at.desc())
    )


@dataclass(frozen=True)
class Settlement:
    partner: PartnerInstitution
    month: str
    ours: Statement
    theirs: SettlementStatement | None
    sent: SettlementStatement | None
    reconciliation: Reconciliation | None

    @property
    def matches_partner(self) -> bool | None:
        return None if self.reconciliation is None else self.reconciliation.matches


def settlement(partner_id: uuid.UUID, month: str) -> Settlement:
    if not valid_month(month):
        raise Invalid(N_("The month is written YYYY-MM."), fields=[{"loc": "month", "message": "YYYY-MM"}])
    partner = partners.get_partner(partner_id)
    ours = our_statement(partner, month)
    theirs = _latest(partner, month, "in")
    return Settlement(
        partner=partner,
        month=month,
        ours=ours,
        theirs=theirs,
        sent=_latest(partner, month, "out"),
        reconciliation=reconcile(ours, _stored_statement(theirs)) if theirs is not None else None,
    )


def current_month() -> str:
    return partners.today().strftime("%Y-%m")


def _invoice(month: str, statement: Statement) -> dict[str, Any]:
    def money(fen: int) -> dict[str, Any]:
        return {"value": fen / 100, "currency": "CNY"}

    return {
        "resourceType": "Invoice",
        "id": str(uuid.uuid4()),
        "identifier": [{"system": SETTLEMENT_SYSTEM, "value": month}],
        "status": "issued",
        "type": {"text": "远程会诊费月度结算单"},
        "date": iso(utcnow()),
        "lineItem": [
            {
                "sequence": i + 1,
                "chargeItemCodeableConcept": {
                    "coding": [
                        {"system": TASK_SYSTEM, "code": line.task_id},
                        {"system": INVITING_SYSTEM, "code": "sender" if line.we_invited else "receiver"},
                    ]
                },
                "priceComponent": [
                    {"type": "base", "amount": money(line.fee_fen)},
                    {"type": "informational", "code": {"text": "inviting"}, "amount": money(line.inviting_share_fen)},
                    {"type": "informational", "code": {"text": "invited"}, "amount": money(line.invited_share_fen)},
                ],
            }
            for i, line in enumerate(statement.lines)
        ],
        "totalGross": money(statement.total_fen),
    }


def _record_statement(
    partner: PartnerInstitution, month: str, direction: str, message_id: str, statement: Statement
) -> SettlementStatement:
    row = SettlementStatement(
        partner_id=partner.id,
        month=month,
        direction=direction,
        message_id=message_id,
        count=statement.count,
        total_fen=statement.total_fen,
        inviting_share_fen=statement.inviting_share_fen,
        invited_share_fen=statement.invited_share_fen,
        lines=[
            {
                "task_id": line.task_id,
                "we_invited": line.we_invited,
                "fee_fen": line.fee_fen,
                "inviting_share_fen": line.inviting_share_fen,
                "invited_share_fen": line.invited_share_fen,
            }
            for line in statement.lines
        ],
        created_at=utcnow(),
    )
    db.session.add(row)
    db.session.flush()
    audit.record(
        db.session(),
        "settlement.statement_sent" if direction == "out" else "settlement.statement_received",
        subject_type="partner_institution",
        subject_id=partner.id,
        detail={"month": month, "count": statement.count, "total_fen": statement.total_fen, "message_id": message_id},
    )
    return row


def send_statement(partner_id: uuid.UUID, month: str) -> SettlementStatement:
    """Send our statement of the month to the partner, signed; it answers with its own."""
    if not valid_month(month):
        raise Invalid(N_("The month is written YYYY-MM."), fields=[{"loc": "month", "message": "YYYY-MM"}])
    partner = partners.get_partner(partner_id)
    statement = our_statement(partner, month)
    message = federation.send(partner.id, EV_STATEMENT, [_invoice(month, statement)])
    return _record_statement(partner, month, "out", message.message_id, statement)


def _fen(money: Any) -> int:
    value = (money or {}).get("value") if isinstance(money, dict) else None
    if not isinstance(value, int | float):
        raise federation.BadMessage(N_("A settlement amount is missing."))
    return round(value * 100)


def _on_statement(message: FederationMessage, bundle: dict[str, Any], partner: PartnerInstitution) -> None:
    invoices = bundle_resources(bundle, "Invoice")
    if not invoices:
        raise federation.BadMessage(N_("A settlement statement carries an Invoice."))
    inv = invoices[0]
    month = next((i.get("value") for i in inv.get("identifier") or [] if i.get("system") == SETTLEMENT_SYSTEM), "")
    if not isinstance(month, str) or not valid_month(month):
        raise federation.BadMessage(N_("The settlement statement names no month."))
    lines = []
    for item in inv.get("lineItem") or []:
        codes = {
            c.get("system"): c.get("code") for c in (item.get("chargeItemCodeableConcept") or {}).get("coding") or []
        }
        parts = {
            (p.get("code") or {}).get("text") if p.get("type") == "informational" else p.get("type"): _fen(
                p.get("amount")
            )
            for p in item.get("priceComponent") or []
        }
        lines.append(
            StatementLine(
                str(codes.get(TASK_SYSTEM)),
                codes.get(INVITING_SYSTEM) == "sender",  # from the sender's side
                parts.get("base", 0),
                parts.get("inviting", 0),
                parts.get("invited", 0),
            )
        )
    theirs = Statement(tuple(lines))
    _record_statement(partner, month, "in", message.message_id, theirs)
    # answer with ours unless the partner already has it as it stands
    ours = our_statement(partner, month)
    sent = _latest(partner, month, "out")
    if sent is None or _stored_statement(sent) != ours:
        reply = federation.send(partner.id, EV_STATEMENT, [_invoice(month, ours)])
        _record_statement(partner, month, "out", reply.message_id, ours)


def today() -> date:
    return partners.today()


def register_events() -> None:
    federation.register_event(EV_STATEMENT, _on_statement)
