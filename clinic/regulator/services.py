"""The regulators' data interface (2018 measures Art. 24): one page of one FHIR resource
type, read with a scoped token (clinic/regulator/access.py), audited. Incidents, records
retention and key operations have their own modules (incidents.py, purge.py, keys.py).

One function each: load, apply the rules, audit, flush — never commit (the request's
unit of work commits).
"""

from __future__ import annotations

from clinic.core import audit
from clinic.core.config import settings
from clinic.core.db import db, utcnow
from clinic.core.errors import Invalid, NotFound
from clinic.core.principal import Principal
from clinic.regulator import fhir, rules
from clinic.regulator.access import token_scopes


def read_resources(
    resource_type: str,
    who: Principal,
    since: str | None,
    until: str | None,
    page: int,
    base_url: str,
    self_url: str,
) -> str:
    """One page of one resource type as a validated FHIR searchset Bundle (JSON); audited."""
    session = db.session()
    scopes = token_scopes(who)
    source = fhir.source_for(resource_type)
    if source is None:
        raise NotFound(f"Unknown resource type {resource_type!r}; one of: {', '.join(fhir.RESOURCE_TYPES)}.")
    max_days = int(settings().REGULATOR_MAX_WINDOW_DAYS or rules.MAX_WINDOW_DAYS)
    try:
        window = rules.parse_window(since, until, utcnow(), max_days)
    except rules.WindowError as exc:
        raise Invalid(str(exc), fields=[{"loc": "since/until", "message": str(exc)}]) from None
    ctx = fhir.FhirContext(session=session, window=window, scopes=scopes, base_url=base_url)
    total = source.count(ctx)
    try:
        info = rules.page_info(page, total)
    except rules.PageOutOfRange as exc:
        raise NotFound(str(exc)) from None
    resources = source.page(ctx, info.offset, info.size)
    bundle = fhir.bundle(ctx, resource_type, resources, info, self_url)
    audit.record(
        session,
        "regulator.read",
        subject_type="fhir",
        subject_id=resource_type,
        detail={
            "resource": resource_type,
            **window.as_dict(),
            "page": info.page,
            "scope": list(scopes),
            "count": len(resources),
            "total": total,
        },
    )
    return fhir.to_json(bundle)
