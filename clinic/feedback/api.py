"""/api/v1: the physician directory, on/off duty, ratings and complaints (API.md)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from clinic.core.api import ApiRouter, Principal, RequestModel, ResponseModel
from clinic.core.db import record_id
from clinic.feedback import rules, services
from identity import services as identity

router = ApiRouter("feedback")


class DirectoryQuery(RequestModel):
    department: str | None = Field(default=None, max_length=32)


class PhysicianOut(ResponseModel):
    id: uuid.UUID
    name: str
    title: str
    department: str
    department_name: str
    license_no: str
    practice_years: int | None
    on_duty: bool
    rating: float | None
    ratings: int


class PhysiciansOut(ResponseModel):
    items: list[PhysicianOut]


@router.get(
    "/physicians",
    summary="The public directory of the physicians who practise online (optionally one department)",
    query=DirectoryQuery,
    response=PhysiciansOut,
)
def physicians(query: DirectoryQuery) -> PhysiciansOut:
    return PhysiciansOut(
        items=[
            PhysicianOut(
                id=e.id,
                name=e.name,
                title=e.title,
                department=e.department,
                department_name=e.department_name_zh,
                license_no=e.license_no,
                practice_years=e.practice_years,
                on_duty=e.on_duty,
                rating=e.rating,
                ratings=e.ratings,
            )
            for e in services.physician_directory(query.department)
        ]
    )


class DutyIn(RequestModel):
    on_duty: bool


class DutyOut(ResponseModel):
    on_duty: bool


@router.post(
    "/physicians/me/duty",
    summary="The physician goes on or off duty (routing of new visits and the directory follow)",
    body=DutyIn,
    response=DutyOut,
    roles=["physician"],
)
def set_duty(body: DutyIn, principal: Principal) -> DutyOut:
    return DutyOut(on_duty=identity.set_on_duty(principal, body.on_duty).on_duty)


class RatingIn(RequestModel):
    score: int = Field(ge=rules.MIN_SCORE, le=rules.MAX_SCORE)
    comment: str = Field(default="", max_length=rules.MAX_COMMENT)


class RatingOut(ResponseModel):
    id: uuid.UUID
    visit_id: uuid.UUID
    score: int
    comment: str
    created_at: datetime


@router.post(
    "/visits/<visit_id>/rating",
    summary="Rate a completed visit once (1–5, optional comment)",
    body=RatingIn,
    response=RatingOut,
    status=201,
    roles=["patient"],
    errors={409: ["already_rated"], 422: ["visit_not_completed"]},
)
def rate(visit_id: str, body: RatingIn, principal: Principal) -> RatingOut:
    return RatingOut.model_validate(services.rate_visit(principal, record_id(visit_id), body.score, body.comment))


class ComplaintIn(RequestModel):
    text: str = Field(min_length=1, max_length=rules.MAX_COMPLAINT)
    visit_id: uuid.UUID | None = None
    prescription_id: uuid.UUID | None = None


class ComplaintOut(ResponseModel):
    id: uuid.UUID
    status: str
    text: str
    visit_id: uuid.UUID | None
    prescription_id: uuid.UUID | None
    response: str | None
    created_at: datetime
    answered_at: datetime | None


@router.post(
    "/complaints",
    summary="File a complaint about a visit, a prescription or the service (at most 2,000 characters)",
    body=ComplaintIn,
    response=ComplaintOut,
    status=201,
    roles=["patient"],
)
def complain(body: ComplaintIn, principal: Principal) -> ComplaintOut:
    c = services.file_complaint(principal, body.text, body.visit_id, body.prescription_id)
    return ComplaintOut.model_validate(c)


class ComplaintsOut(ResponseModel):
    items: list[ComplaintOut]


@router.get(
    "/admin/complaints",
    summary="Every complaint, open ones first",
    response=ComplaintsOut,
    roles=["admin"],
)
def complaints(principal: Principal) -> ComplaintsOut:
    return ComplaintsOut(items=[ComplaintOut.model_validate(c) for c in services.all_complaints(principal)])


class AnswerIn(RequestModel):
    response: str = Field(min_length=1, max_length=rules.MAX_RESPONSE)


class AnswerOut(ResponseModel):
    id: uuid.UUID
    status: str


@router.post(
    "/admin/complaints/<complaint_id>/answer",
    summary="Answer a complaint (the patient sees the answer)",
    body=AnswerIn,
    response=AnswerOut,
    roles=["admin"],
    errors={409: ["already_answered"]},
)
def answer(complaint_id: str, body: AnswerIn, principal: Principal) -> AnswerOut:
    c = services.answer_complaint(principal, record_id(complaint_id), body.response)
    return AnswerOut(id=c.id, status=c.status)
