"""The partner institutions: this institution's own identity and key, and the registry of
cooperation agreements (合作协议) with its partners — registering one, pinning a partner's
new key, whether an agreement is in force, and the partner's key read from its JWKS.

Each use case loads, applies the pure rules, changes state, audits and flushes; none
commits (the request or CLI command is the commit point). The signed messages exchanged
under these agreements are in `federation`.
"""

from __future__ import annotations

import logging
import uuid
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import requests
from sqlalchemy import select

from clinic.core import audit
from clinic.core.audit import current_actor
from clinic.core.config import settings
from clinic.core.db import as_uuid, db, utcnow
from clinic.core.errors import DomainError, Forbidden, Invalid, NotFound, RuleRefusal
from clinic.telemedicine import envelope, rules
from clinic.telemedicine.models import PartnerInstitution
from clinic.telemedicine.rules import N_
from identity.models import Institution

log = logging.getLogger("clinic.telemedicine")
CHINA = ZoneInfo("Asia/Shanghai")  # agreements run from and to Beijing dates


def today() -> date:
    return utcnow().astimezone(CHINA).date()


# --- refusals -------------------------------------------------------------------------


class NoAgreement(Forbidden):
    code = "no_agreement"
    default_message = N_("There is no cooperation agreement in force with this institution.")


class DuplicatePartner(DomainError):
    status = 409
    code = "partner_exists"
    default_message = N_("A partner institution with this key is already registered.")


# --- the institution's own key ----------------------------------------------------------


def own_key() -> envelope.InstitutionKey:
    return envelope.institution_key(settings().INSTITUTION_SIGNING_KEY)


def published_keys() -> list[dict[str, Any]]:
    """For /.well-known/jwks.json: the institution key beside the prescription keys."""
    return [dict(own_key().public_jwk)]


def own_endpoint() -> str:
    return rules.normalise_base_url(settings().PUBLIC_BASE_URL)


def own_name() -> str:
    inst = db.session.get(Institution, 1)
    return inst.name if inst is not None and inst.name else own_endpoint()


def own_level() -> str:
    """The institution's level (三级/二级/一级/基层), kept on the institution profile."""
    inst = db.session.get(Institution, 1)
    return inst.level if inst is not None else ""


def _development() -> bool:
    return settings().ENV != "production"


# --- agreements ---------------------------------------------------------------------------


def _invalid(violations: list[Any]) -> None:
    raise RuleRefusal("invalid", violations, lead=N_("The agreement is not valid:"))


def register_partner(terms: rules.AgreementTerms) -> PartnerInstitution:
    """Register a partner institution under a cooperation agreement (admin, CLI)."""
    violations = rules.check_terms(terms, _development())
    if violations:
        _invalid(violations)
    session = db.session()
    kid = str(terms.public_jwk["kid"])
    if session.scalar(select(PartnerInstitution.id).where(PartnerInstitution.kid == kid)) is not None:
        raise DuplicatePartner()
    if kid == own_key().kid:
        _invalid(
            [
                rules.Violation(
                    "invalid", N_("The partner's key is this institution's own key."), detail={"loc": "public_jwk"}
                )
            ]
        )
    actor = current_actor()
    partner = PartnerInstitution(
        name=terms.name.strip(),
        license_no=terms.license_no.strip(),
        level=terms.level,
        base_url=rules.normalise_base_url(terms.base_url),
        public_jwk=_public_only(terms.public_jwk),
        kid=kid,
        services=list(terms.services),
        departments=list(terms.departments),
        fee_fen=terms.fee_fen,
        split_inviting=terms.split_inviting,
        split_invited=terms.split_invited,
        valid_from=terms.valid_from,
        valid_until=terms.valid_until,
        created_by=as_uuid(actor.id),
    )
    session.add(partner)
    session.flush()
    audit.record(
        session,
        "partner.registered",
        subject_type="partner_institution",
        subject_id=partner.id,
        detail={
            "name": partner.name,
            "license_no": partner.license_no,
            "level": partner.level,
            "base_url": partner.base_url,
            "kid": kid,
            "services": partner.services,
            "fee_fen": partner.fee_fen,
            "split": [partner.split_inviting, partner.split_invited],
            "valid_from": partner.valid_from.isoformat(),
            "valid_until": partner.valid_until.isoformat(),
        },
    )
    return partner


def _public_only(jwk: dict[str, Any]) -> dict[str, Any]:
    return {k: jwk[k] for k in ("kty", "crv", "x", "y", "kid", "alg", "use") if k in jwk}


def list_partners() -> list[PartnerInstitution]:
    return list(db.session.scalars(select(PartnerInstitution).order_by(PartnerInstitution.created_at)))


def get_partner(partner_id: uuid.UUID) -> PartnerInstitution:
    partner = db.session.get(PartnerInstitution, partner_id)
    if partner is None:
        raise NotFound(N_("No such partner institution."))
    return partner


def rotate_partner_key(partner_id: uuid.UUID, public_jwk: dict[str, Any]) -> PartnerInstitution:
    """Pin a partner's new institution key: the explicit act by which its key changes."""
    partner = get_partner(partner_id)
    violations = rules.check_public_jwk(public_jwk)
    if violations:
        _invalid(violations)
    kid = str(public_jwk["kid"])
    other = db.session.scalar(
        select(PartnerInstitution.id).where(PartnerInstitution.kid == kid, PartnerInstitution.id != partner.id)
    )
    if other is not None or kid == own_key().kid:
        raise DuplicatePartner(N_("This key is already pinned for another institution, or is this institution's own."))
    before = partner.kid
    partner.public_jwk = _public_only(public_jwk)
    partner.kid = kid
    partner.key_rotated_at = utcnow()
    audit.record(
        db.session(),
        "partner.key_rotated",
        subject_type="partner_institution",
        subject_id=partner.id,
        detail={"from_kid": before, "to_kid": kid},
    )
    return partner


def agreement_in_force(partner: PartnerInstitution, on: date | None = None) -> bool:
    return rules.in_force(partner.valid_from, partner.valid_until, on or today())


def not_in_force(partner: PartnerInstitution) -> NoAgreement | None:
    """The refusal when the agreement with the partner is not in force today (no message
    flows without one, either way), saying when it is valid; None when it is in force."""
    if agreement_in_force(partner):
        return None
    return NoAgreement(
        N_("There is no cooperation agreement in force with %(name)s (valid %(start)s to %(end)s)."),
        params={
            "name": partner.name,
            "start": partner.valid_from.isoformat(),
            "end": partner.valid_until.isoformat(),
        },
    )


def require_in_force(partner: PartnerInstitution) -> None:
    refusal = not_in_force(partner)
    if refusal is not None:
        raise refusal


def fetch_institution_key(jwks_url: str, timeout: float = 10.0) -> dict[str, Any]:
    """The institution key ("inst-..." kid) a partner publishes in its JWKS."""
    try:
        resp = requests.get(jwks_url, timeout=timeout, allow_redirects=False)
        resp.raise_for_status()
        keys = resp.json().get("keys", [])
    except (requests.RequestException, ValueError, AttributeError) as exc:
        log.warning("the JWKS at %s could not be read: %s", jwks_url, exc)
        raise Invalid(
            N_(
                "The partner's published keys could not be read at that address; check it and that the partner is reachable."
            ),
            fields=[{"loc": "jwks_url", "message": "unreachable"}],
        ) from None
    found = [k for k in keys if isinstance(k, dict) and str(k.get("kid", "")).startswith("inst-")]
    if len(found) != 1:
        raise Invalid(
            N_("The address must publish exactly one institution key of the partner."),
            fields=[{"loc": "jwks_url", "message": "no institution key"}],
        )
    return dict(found[0])
