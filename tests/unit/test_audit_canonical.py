"""The database fills in an audit entry's seq between two texts the application prepares;
the two halves around any seq must be exactly the canonical text the chain is verified on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from clinic.core.audit import _canonical, _canonical_around_seq, _content

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _item(detail: dict[str, Any], subject_id: str | None = "42") -> dict[str, Any]:
    return {
        "at": datetime(2026, 11, 23, 8, 30, 1, 123456, tzinfo=UTC),
        "actor_id": "a1",
        "actor_role": "patient",
        "action": "visit.requested",
        "subject_type": "visit",
        "subject_id": subject_id,
        "detail": detail,
        "client_ip": "10.0.0.1",
    }


@given(
    detail=st.dictionaries(st.text(max_size=12), json_values, max_size=4),
    subject_id=st.none() | st.text(max_size=20),
    seq=st.integers(min_value=1, max_value=2**31 - 1),
)
def test_halves_around_seq_are_the_canonical_text(detail: dict[str, Any], subject_id: str | None, seq: int) -> None:
    item = _item(detail, subject_id)
    before, after = _canonical_around_seq(item)
    assert before + str(seq) + after == _canonical(_content({**item, "seq": seq}))


def test_a_seq_inside_the_detail_does_not_confuse_the_split() -> None:
    item = _item({"seq": 0, "note": '"seq":0, 中文'})
    before, after = _canonical_around_seq(item)
    assert before + "7" + after == _canonical(_content({**item, "seq": 7}))
    assert after.startswith(',"subject_id":')
