"""Ids from URLs reach services typed: a malformed one names no record."""

from __future__ import annotations

import uuid

import pytest

from clinic.core.db import NO_RECORD, new_id, record_id


def test_a_well_formed_id_is_kept() -> None:
    key = uuid.uuid4()
    assert record_id(str(key)) == key and record_id(key) is key


@pytest.mark.parametrize("text", ["", "abc", "1' OR '1'='1", "../etc/passwd", "0" * 33])
def test_a_malformed_id_names_no_record(text: str) -> None:
    assert record_id(text) == NO_RECORD


def test_no_new_record_can_have_the_nil_id() -> None:
    assert all(new_id() != NO_RECORD and new_id().version == 4 for _ in range(100))
