from __future__ import annotations

import io

import pytest
from PIL import Image

from clinic.visits import rules, sniffing
from clinic.visits.rules import DiagnosisFacts, VisitEvent, VisitRequestFacts, VisitStatus

APPROVED = frozenset({"cardiology", "endocrinology"})


def facts(**kw: object) -> VisitRequestFacts:
    d = {
        "exists_for_patient": True,
        "status": "confirmed",
        "condition_department": "cardiology",
        "condition_active": True,
    }
    d.update({k: v for k, v in kw.items() if k in d})
    department = str(kw.get("department", "cardiology"))
    return VisitRequestFacts(
        diagnosis=DiagnosisFacts(**d),  # type: ignore[arg-type]
        department=department,
        department_approved=department in APPROVED,
        consent_current=bool(kw.get("consent_current", True)),
    )


def codes(f: VisitRequestFacts) -> list[str]:
    return [v.code for v in rules.visit_request_violations(f)]


def test_return_visit_for_a_confirmed_diagnosis_passes() -> None:
    assert codes(facts()) == []


def test_no_in_person_diagnosis_is_a_first_visit() -> None:
    assert codes(facts(exists_for_patient=False, status=None)) == ["first_visit_not_allowed"]


@pytest.mark.parametrize("status", ["pending", "rejected"])
def test_unconfirmed_diagnosis(status: str) -> None:
    assert codes(facts(status=status)) == ["diagnosis_not_confirmed"]


def test_withdrawn_condition_no_longer_opens_the_door() -> None:
    assert codes(facts(condition_active=False)) == ["diagnosis_not_confirmed"]


def test_consent_and_department_reported_together() -> None:
    assert codes(facts(consent_current=False, department="psychiatry")) == [
        "consent_required",
        "department_not_approved",
    ]


def test_same_diagnosis_same_department() -> None:
    v = rules.visit_request_violations(facts(department="endocrinology"))
    assert [x.code for x in v] == ["department_not_approved"]
    assert v[0].detail == {"expected_department": "cardiology"}


def test_lifecycle_moves() -> None:
    S = VisitStatus
    assert rules.transition(S.AWAITING_PAYMENT, VisitEvent.PAID) is S.WAITING
    assert rules.transition(S.AWAITING_PAYMENT, VisitEvent.CANCEL) is S.CANCELLED
    assert rules.transition(S.WAITING, VisitEvent.ACCEPT) is S.IN_PROGRESS
    assert rules.transition(S.IN_PROGRESS, VisitEvent.COMPLETE) is S.COMPLETED
    assert rules.transition(S.IN_PROGRESS, VisitEvent.TERMINATE) is S.REFERRED
    assert rules.transition(S.WAITING, VisitEvent.CANCEL) is S.CANCELLED


@pytest.mark.parametrize(
    ("status", "event", "error"),
    [
        (VisitStatus.REFERRED, VisitEvent.ACCEPT, rules.VisitClosed),
        (VisitStatus.COMPLETED, VisitEvent.TERMINATE, rules.VisitClosed),
        (VisitStatus.CANCELLED, VisitEvent.PAID, rules.VisitClosed),
        (VisitStatus.IN_PROGRESS, VisitEvent.CANCEL, rules.IllegalVisitTransition),
        (VisitStatus.WAITING, VisitEvent.COMPLETE, rules.IllegalVisitTransition),
        (VisitStatus.AWAITING_PAYMENT, VisitEvent.ACCEPT, rules.IllegalVisitTransition),
    ],
)
def test_illegal_moves_are_refused_by_name(
    status: VisitStatus, event: VisitEvent, error: type[rules.IllegalVisitTransition | rules.VisitClosed]
) -> None:
    with pytest.raises(error) as refused:
        rules.transition(status, event)
    assert refused.value.status == 409 and refused.value.code == {rules.VisitClosed: "visit_closed"}.get(
        error, "illegal_transition"
    )


def test_a_referred_visit_cannot_be_resumed_by_any_event() -> None:
    for event in VisitEvent:
        with pytest.raises(rules.VisitClosed):
            rules.transition(VisitStatus.REFERRED, event)


def test_every_status_and_event_either_moves_or_is_refused_by_name() -> None:
    moved = 0
    for status in VisitStatus:
        for event in VisitEvent:
            refusal = rules.VisitClosed if status in rules.CLOSED else rules.IllegalVisitTransition
            if (status, event) in rules._MOVES:
                moved += isinstance(rules.transition(status, event), VisitStatus)
                continue
            with pytest.raises(refusal):
                rules.transition(status, event)
    assert moved == 6


def test_only_a_visit_not_yet_taken_can_be_cancelled_and_only_an_open_one_messaged() -> None:
    assert [s for s in VisitStatus if rules.can_cancel(s)] == [VisitStatus.AWAITING_PAYMENT, VisitStatus.WAITING]
    assert [s for s in VisitStatus if rules.can_message(s)] == [VisitStatus.WAITING, VisitStatus.IN_PROGRESS]


def test_icd10_normalization_and_catalog_match() -> None:
    assert rules.normalize_icd10(" e119 ") == "E11.9"
    assert rules.normalize_icd10("I10") == "I10"
    assert rules.normalize_icd10("X99.99") is None
    assert rules.match_condition("E11.9", ["E11", "I10"]) == "E11"
    assert rules.match_condition("B18.1", ["B18.1"]) == "B18.1"
    assert rules.match_condition("B18.0", ["B18.1"]) is None  # hepatitis B with delta agent is not in the catalog
    assert rules.match_condition("F32", ["E11", "I10"]) is None


def _img(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(buf, fmt)
    return buf.getvalue()


def test_upload_sniffing_by_content() -> None:
    assert sniffing.sniff_upload(_img("PNG"), max_bytes=10**6, allow_pdf=True).mime == "image/png"
    assert sniffing.sniff_upload(_img("JPEG"), max_bytes=10**6, allow_pdf=False).ext == "jpg"
    pdf = b"%PDF-1.7\n...\n%%EOF"
    assert sniffing.sniff_upload(pdf, max_bytes=10**6, allow_pdf=True).mime == "application/pdf"
    with pytest.raises(sniffing.BadUpload):
        sniffing.sniff_upload(pdf, max_bytes=10**6, allow_pdf=False)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"MZ\x90\x00 an exe",
        b"%PDF-1.4 truncated without end",
        b"GIF89a" + b"\x00" * 30,
        _img("PNG")[:60],
        _img("BMP"),
    ],
)
def test_bad_uploads_are_refused(data: bytes) -> None:
    with pytest.raises(sniffing.BadUpload):
        sniffing.sniff_upload(data, max_bytes=10**6, allow_pdf=True)


def test_too_large_is_413() -> None:
    with pytest.raises(sniffing.BadUpload) as exc:
        sniffing.sniff_upload(_img("PNG") + b"\x00" * 100, max_bytes=50, allow_pdf=True)
    assert exc.value.status == 413
