"""Settlement endpoints (admin): the month's statement with a partner institution compared
with the partner's, and sending ours. Registered with the tag "telemedicine"."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from clinic.core.api import ApiRouter, Principal, RequestModel, ResponseModel
from clinic.core.errors import Invalid
from clinic.telemedicine import partners
from clinic.telemedicine import settlements as settling

router = ApiRouter("telemedicine")

ADMIN = ["admin"]


class SettlementQuery(RequestModel):
    partner_id: uuid.UUID | None = None
    month: str | None = Field(default=None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM (Beijing)")


class StatementOut(ResponseModel):
    count: int
    total_fen: int
    inviting_share_fen: int
    invited_share_fen: int
    at: datetime


class DifferenceOut(ResponseModel):
    count: int
    total_fen: int
    inviting_share_fen: int
    invited_share_fen: int
    only_here: list[str]
    only_partner: list[str]
    differing: list[str]


class SettlementOut(ResponseModel):
    partner_id: uuid.UUID
    partner_name: str
    month: str
    count: int
    total_fen: int
    inviting_share_fen: int
    invited_share_fen: int
    owed_to_partner_fen: int
    owed_by_partner_fen: int
    matches_partner: bool | None
    partner_statement: StatementOut | None
    sent_statement: StatementOut | None
    difference: DifferenceOut | None
    lines: list[dict[str, Any]]


def _statement_out(row: Any) -> StatementOut | None:
    if row is None:
        return None
    return StatementOut(
        count=row.count,
        total_fen=row.total_fen,
        inviting_share_fen=row.inviting_share_fen,
        invited_share_fen=row.invited_share_fen,
        at=row.created_at,
    )


def settlement_out(s: settling.Settlement) -> SettlementOut:
    r = s.reconciliation
    return SettlementOut(
        partner_id=s.partner.id,
        partner_name=s.partner.name,
        month=s.month,
        count=s.ours.count,
        total_fen=s.ours.total_fen,
        inviting_share_fen=s.ours.inviting_share_fen,
        invited_share_fen=s.ours.invited_share_fen,
        owed_to_partner_fen=s.ours.owed_to_partner_fen,
        owed_by_partner_fen=s.ours.owed_by_partner_fen,
        matches_partner=s.matches_partner,
        partner_statement=_statement_out(s.theirs),
        sent_statement=_statement_out(s.sent),
        difference=None
        if r is None
        else DifferenceOut(
            count=r.count,
            total_fen=r.total_fen,
            inviting_share_fen=r.inviting_share_fen,
            invited_share_fen=r.invited_share_fen,
            only_here=r.only_here,
            only_partner=r.only_partner,
            differing=r.differing,
        ),
        lines=[
            {
                "task_id": line.task_id,
                "role": "inviting" if line.we_invited else "invited",
                "fee_fen": line.fee_fen,
                "inviting_share_fen": line.inviting_share_fen,
                "invited_share_fen": line.invited_share_fen,
            }
            for line in s.ours.lines
        ],
    )


def _partner_for_settlement(partner_id: uuid.UUID | None) -> uuid.UUID:
    if partner_id is not None:
        return partner_id
    registered = partners.list_partners()
    if len(registered) != 1:
        raise Invalid(
            "Name the partner institution (partner_id).", fields=[{"loc": "partner_id", "message": "required"}]
        )
    return registered[0].id


@router.get(
    "/admin/settlements",
    summary="The month's settlement with a partner institution (Jilin Art. 41–44): count, total and each "
    "side's share in fen, reconciled against the partner's signed statement (matches_partner null until "
    "one has arrived) with the difference",
    query=SettlementQuery,
    response=SettlementOut,
    roles=ADMIN,
    errors={404: ["not_found"], 422: ["invalid"]},
)
def settlements(query: SettlementQuery, principal: Principal) -> SettlementOut:
    month = query.month or settling.current_month()
    return settlement_out(settling.settlement(_partner_for_settlement(query.partner_id), month))


class StatementIn(RequestModel):
    partner_id: uuid.UUID
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM (Beijing)")


@router.post(
    "/admin/settlements/statements",
    summary="Send this institution's statement of the month to the partner as a signed message; the partner "
    "records it and answers with its own, so both sides can reconcile",
    body=StatementIn,
    response=SettlementOut,
    status=202,
    roles=ADMIN,
    errors={403: ["no_agreement"], 404: ["not_found"], 422: ["invalid"]},
)
def send_statement(body: StatementIn, principal: Principal) -> tuple[SettlementOut, int]:
    settling.send_statement(body.partner_id, body.month)
    return settlement_out(settling.settlement(body.partner_id, body.month)), 202
