"""Prescription endpoints of /api/v1 (API.md § Prescriptions). Thin: parse, call one service, answer."""

from __future__ import annotations

import uuid

from pydantic import Field

from clinic.core.api import ApiRouter, Principal, RequestModel, ResponseModel
from prescriptions import services

router = ApiRouter("prescriptions")
STAFF = ["physician", "pharmacist", "admin"]


class DrugQuery(RequestModel):
    q: str = Field(min_length=1, max_length=50, description="Chinese or English, generic or product name")


class DrugOut(ResponseModel):
    id: uuid.UUID
    name: str
    generic_name: str
    generic_name_en: str
    form: str
    strength: str
    route: str
    control_class: str | None
    cold_chain: bool


class DrugList(ResponseModel):
    items: list[DrugOut]


@router.get("/drugs", summary="Search the drug catalog", query=DrugQuery, response=DrugList, roles=STAFF)
def search(query: DrugQuery, principal: Principal) -> DrugList:
    return DrugList(items=[DrugOut.model_validate(d) for d in services.search_drugs(query.q)])
