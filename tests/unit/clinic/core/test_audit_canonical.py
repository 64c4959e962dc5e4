"""An entry's canonical bytes (what its RFC 6962 leaf covers) are one fixed text per entry:
independent of key order, lossless, and changed by any change of any field or its place.
(The hash chain's split of the text around the seq, which these tests covered before, is gone
with the chain: the sequencer hashes the whole canonical text in Python.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from clinic.core import merkle
from clinic.core.audit import _content, canonical, leaf_of

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _item(detail: dict[str, Any], subject_id: str | None = "42", seq: int = 1) -> dict[str, Any]:
    return {
        "seq": seq,
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
def test_canonical_text_is_lossless_and_order_free(detail: dict[str, Any], subject_id: str | None, seq: int) -> None:
    item = _item(detail, subject_id, seq)
    content = _content(item)
    text = canonical(content)
    assert json.loads(text) == content
    reordered = dict(reversed(list(content.items())))
    assert canonical(reordered) == text
    assert leaf_of(content) == merkle.leaf_hash(text)
    assert leaf_of(_content({**item, "seq": seq + 1})) != leaf_of(content)  # its place is covered
    assert leaf_of(_content({**item, "detail": {**detail, "extra": 1}})) != leaf_of(content)


def test_text_is_utf8_json_without_spaces_and_seq_inside_detail_is_just_data() -> None:
    item = _item({"seq": 0, "note": '"seq":0, 中文'}, seq=7)
    text = canonical(_content(item)).decode()
    assert (
        text.startswith('{"action":"visit.requested","actor_id":"a1"')
        and "中文" in text
        and ", " not in text.split('"note"')[0]
    )
    assert json.loads(text)["seq"] == 7 and json.loads(text)["detail"]["seq"] == 0
