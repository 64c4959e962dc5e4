"""FHIR resources for the regulators, built and validated with `fhir.resources`.

Which FHIR models: API.md asks for FHIR R4. `fhir.resources` 8.x (the maintained,
pydantic-2 FHIR model library) ships R5 as its default and R4B (4.3.0) and STU3 as
sub-packages; it no longer ships 4.0.1 models (6.x did, on pydantic 1, which this
project cannot use). R4B is R4 with changes confined to the medication-definition,
evidence and subscription resources: Bundle, Organization, Practitioner, Patient,
Condition, Encounter, MedicationRequest and AuditEvent are the same in both. So every
resource here is built through the R4B models (which validate types, cardinalities and
primitive formats and refuse unknown elements), and the test suite re-reads every
Bundle with FHIR 4.0.1 models as well (fhirclient's generated R4 models), proving the
JSON is valid R4 element by element.

This module is the machinery every builder shares: the context (window, scopes,
references, keyed pseudonyms), the sources (one SELECT per resource type, paged), the
registry of resource types and the searchset Bundle. The resources themselves are built
where their data lives: the clinic's own types in clinic_fhir.py, MedicationRequest in
prescriptions/fhir.py, CarePlan and Observation in clinic/family_doctor/fhir.py, the
types between institutions in telemedicine_fhir.py. The registry is filled by the app
factory only (never on import), so nothing here imports a package above the clinic's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.resource import Resource
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from clinic.core.crypto import lookup_hash
from clinic.regulator import rules
from identity.models import Account, Role

FHIR_VERSION = "4.0.1"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
# Identifier systems of this institution (URNs: no public namespace is claimed).
SYS_RESIDENT_ID = "urn:clinic:identifier:cn-resident-identity-number"
SYS_PSEUDONYM = "urn:clinic:identifier:pseudonym"
SYS_ACCOUNT = "urn:clinic:identifier:account"
SYS_LICENSE = "urn:clinic:identifier:practice-license"
SYS_INTERNET_APPROVAL = "urn:clinic:identifier:internet-diagnosis-approval"
SYS_PHYSICIAN_LICENSE = "urn:clinic:identifier:physician-license"
SYS_PRACTICE_REGISTRATION = "urn:clinic:identifier:practice-registration"
SYS_PHARMACIST_QUALIFICATION = "urn:clinic:identifier:pharmacist-qualification"
SYS_DEPARTMENT = "urn:clinic:identifier:department"
SYS_AUDIT_ACTION = "urn:clinic:audit-action"


@dataclass
class FhirContext:
    """What a builder needs: the window, the caller's scopes, the service base URL."""

    session: Session
    window: rules.Window
    scopes: tuple[str, ...]
    base_url: str
    _staff: set[str] | None = field(default=None, repr=False)

    @property
    def identified(self) -> bool:
        return rules.identified(self.scopes)

    # --- references ---------------------------------------------------------------
    def patient_id(self, patient_id: object) -> str:
        """The Patient resource id: the record id when identity may be read, else a keyed pseudonym."""
        return str(patient_id) if self.identified else pseudonym("patient", str(patient_id))

    def patient_ref(self, patient_id: object) -> dict[str, str]:
        return {"reference": f"Patient/{self.patient_id(patient_id)}"}

    def practitioner_ref(self, account_id: object) -> dict[str, str]:
        return {"reference": f"Practitioner/{account_id}"}

    def organization_ref(self) -> dict[str, str]:
        return {"reference": "Organization/institution"}

    def staff_ids(self) -> set[str]:
        if self._staff is None:
            rows = self.session.scalars(select(Account.id).where(Account.role != Role.PATIENT))
            self._staff = {str(r) for r in rows}
        return self._staff

    def full_url(self, resource: Resource) -> str:
        return f"{self.base_url}/{resource.get_resource_type()}/{resource.id}"


def pseudonym(kind: str, value: str) -> str:
    """Stable, keyed (LOOKUP_KEY) and not reversible without the key: 32 hex characters."""
    return lookup_hash(f"regulator:{kind}:{value}")[:32]


def instant(t: datetime | None) -> str | None:
    return None if t is None else rules.rfc3339(t)


def day(d: date | None) -> str | None:
    return None if d is None else d.isoformat()


class ResourceSource(Protocol):
    """One FHIR resource type: how many resources the window holds, and one page of them."""

    def count(self, ctx: FhirContext) -> int: ...

    def page(self, ctx: FhirContext, offset: int, limit: int) -> list[Resource]: ...


@dataclass(frozen=True)
class QuerySource:
    """A resource type read from one SELECT (rows in the window, in a stable order), one
    resource per row."""

    query: Callable[[FhirContext], Select[Any]]
    build: Callable[[Any, FhirContext], Resource]

    def count(self, ctx: FhirContext) -> int:
        q = self.query(ctx).order_by(None)
        return int(ctx.session.scalar(select(func.count()).select_from(q.subquery())) or 0)

    def page(self, ctx: FhirContext, offset: int, limit: int) -> list[Resource]:
        rows = ctx.session.scalars(self.query(ctx).offset(offset).limit(limit)).unique().all()
        return [self.build(row, ctx) for row in rows]


class EmptySource:
    def count(self, ctx: FhirContext) -> int:
        return 0

    def page(self, ctx: FhirContext, offset: int, limit: int) -> list[Resource]:
        return []


@dataclass(frozen=True)
class Chained:
    """One resource type read from several sources, one after the other (e.g. consultations,
    then referrals), paged across them."""

    parts: Sequence[ResourceSource]

    def count(self, ctx: FhirContext) -> int:
        return sum(p.count(ctx) for p in self.parts)

    def page(self, ctx: FhirContext, offset: int, limit: int) -> list[Resource]:
        out: list[Resource] = []
        for part in self.parts:
            if limit - len(out) <= 0:
                break
            n = part.count(ctx)
            if offset >= n:
                offset -= n
                continue
            out += part.page(ctx, offset, limit - len(out))
            offset = 0
        return out


RESOURCE_TYPES = (
    "Organization",
    "Practitioner",
    "Patient",
    "Condition",
    "Encounter",
    "MedicationRequest",
    "AuditEvent",
    "CarePlan",  # family-doctor contracts and follow-ups (clinic/family_doctor/fhir.py)
    "Observation",  # home readings
    # between institutions (clinic/regulator/telemedicine_fhir.py): consultations and referrals,
    # their Task states, and the signed consultation opinions
    "ServiceRequest",
    "Task",
    "DiagnosticReport",
)
_registry: dict[str, ResourceSource] = {}


def register_resource(name: str, source: ResourceSource) -> None:
    if name not in RESOURCE_TYPES:
        raise ValueError(f"{name} is not a resource type of the regulators' interface")
    _registry[name] = source


def source_for(name: str) -> ResourceSource | None:
    if name not in RESOURCE_TYPES:
        return None
    return _registry.get(name, EmptySource())


# --- the Bundle ------------------------------------------------------------------------------


def bundle(
    ctx: FhirContext, resource_type: str, resources: Sequence[Resource], info: rules.PageInfo, self_url: str
) -> Bundle:
    """A `searchset` Bundle of one page, with `total` and self/first/last/next/previous links."""

    def link(relation: str, page: int) -> dict[str, str]:
        return {"relation": relation, "url": _page_url(self_url, page)}

    links = [link("self", info.page), link("first", 1), link("last", info.pages)]
    if info.has_next:
        links.append(link("next", info.page + 1))
    if info.has_prev:
        links.append(link("previous", info.page - 1))
    data = {
        "id": str(uuid.uuid4()),
        "type": "searchset",
        "timestamp": instant(datetime.now(UTC)),
        "total": info.total,
        "link": links,
        "entry": [{"fullUrl": ctx.full_url(r), "resource": r, "search": {"mode": "match"}} for r in resources],
    }
    return Bundle.model_validate(_clean(data))


def _page_url(self_url: str, page: int) -> str:
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(self_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "page"]
    query.append(("page", str(page)))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def to_json(model: Bundle) -> str:
    return model.model_dump_json(exclude_none=True, by_alias=True)


def _clean(value: Any) -> Any:
    """Drop None and empty lists/dicts: FHIR has no empty elements."""
    if isinstance(value, dict):
        out = {k: _clean(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != [] and v != {}}
    if isinstance(value, list):
        items = [_clean(v) for v in value]
        return [v for v in items if v is not None and v != {} and v != []]
    return value
